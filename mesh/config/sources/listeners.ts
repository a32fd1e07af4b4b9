import type { Logger } from '../../log.js';
import { errorMessage } from '../../errors.js';
import type { ClusterView } from '../view.js';

/**
 * The listener side of a ConfigSource. Listeners run in order; one that throws is logged and
 * neither stops the others nor reaches the source's own loop.
 */
export class SourceListeners {
  private readonly changes: ((view: ClusterView) => void)[] = [];
  private readonly errors: ((err: Error) => void)[] = [];
  private readonly log: Logger | undefined;

  constructor(log?: Logger) {
    this.log = log;
  }

  onChange(listener: (view: ClusterView) => void): void {
    this.changes.push(listener);
  }

  onError(listener: (err: Error) => void): void {
    this.errors.push(listener);
  }

  changed(view: ClusterView): void {
    for (const listener of this.changes) {
      try {
        listener(view);
      } catch (err) {
        this.log?.error({ err: errorMessage(err) }, 'a config change listener failed');
      }
    }
  }

  failed(err: Error): void {
    for (const listener of this.errors) {
      try {
        listener(err);
      } catch (listenerErr) {
        this.log?.error({ err: errorMessage(listenerErr) }, 'a config error listener failed');
      }
    }
  }
}
