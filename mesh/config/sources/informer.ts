// @kubernetes/client-node's ListWatch does the list/watch/relist-on-410 protocol but gives up on
// any other error, can leak a watch that was still being opened when it was stopped, and rethrows
// auth-plugin failures as unhandled rejections. This module keeps it running: it restarts failed
// informers with backoff and fences off every watch it ever opened, so stop() really stops.

import { setTimeout as sleep } from 'node:timers/promises';
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { backoffDelay, type BackoffOptions } from '../../backoff.js';
import { errorMessage } from '../../errors.js';
import { KubernetesApiError } from '../../k8s/errors.js';
import type { Logger } from '../../log.js';
import { statusOf } from './write-queue.js';

// A watch the server ends this soon with nothing delivered counts as a failure, so a proxy that
// closes every watch at once cannot turn the informer into a busy loop.
const QUICK_END_MS = 1000;

/**
 * The client's Watch plus three guarantees ListWatch needs: bookmarks and a server-side timeout on
 * every watch (as client-go does: a silently dead connection is replaced within minutes), a delay
 * before re-watching after watches that end at once, and close() aborting every watch, including
 * one whose request was still in flight when the informer stopped.
 */
class FencedWatch extends Watch {
  private readonly open = new Set<AbortController>();
  private readonly closing = new AbortController();
  private quickEnds = 0;

  constructor(
    config: KubeConfig,
    private readonly backoff: BackoffOptions,
    private readonly onActivity: () => void,
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.quickEnds > 0) {
      await sleep(backoffDelay(this.quickEnds, this.backoff), undefined, { signal: this.closing.signal }).catch(() => undefined);
    }
    if (this.closing.signal.aborted) return abortedController();
    const started = Date.now();
    let delivered = false;
    let controller: AbortController | undefined;
    const params = { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: 300 + Math.floor(Math.random() * 300) };
    try {
      controller = await super.watch(
        path,
        params,
        (phase: string, obj: unknown, raw?: unknown) => {
          delivered = true;
          this.quickEnds = 0;
          this.onActivity();
          callback(phase, obj, raw);
        },
        (err: unknown) => {
          if (controller) this.open.delete(controller);
          if (err === null && !delivered && Date.now() - started < QUICK_END_MS) this.quickEnds++;
          done(err);
        },
      );
    } catch (err) {
      // Credentials plugins fail here, outside the client's own error handling; turned into a done
      // callback, the failure goes through the informer's error path instead of an unhandled rejection.
      done(err);
      return abortedController();
    }
    if (this.closing.signal.aborted) controller.abort();
    else if (!controller.signal.aborted) this.open.add(controller);
    return controller;
  }

  close(): void {
    this.closing.abort();
    for (const controller of this.open) controller.abort();
    this.open.clear();
  }
}

function abortedController(): AbortController {
  const controller = new AbortController();
  controller.abort();
  return controller;
}

export type ObjectEvent = 'add' | 'update' | 'delete';

export interface InformerOptions<T extends KubernetesObject> {
  /** For messages: the resource's plural, e.g. `pods`, `authorizationpolicies`. */
  resource: string;
  kubeConfig: KubeConfig;
  /** The collection's path: `/api/v1/pods`, `/apis/<group>/<version>/<plural>`. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  fieldSelector?: string;
  backoff: BackoffOptions;
  log: Logger;
  onObject: (event: ObjectEvent, obj: T) => void;
  onError: (err: KubernetesApiError) => void;
  /**
   * The server answered 404: the resource is not served (any more), e.g. its CRD was removed.
   * Called instead of restarting; the owner decides what to do.
   */
  onNotServed?: () => void;
}

/** One ListWatch that never stays down: every failure is reported, then retried with backoff. */
export class RestartingInformer<T extends KubernetesObject> {
  readonly synced: Promise<void>;
  private markSynced: () => void = () => undefined;
  private readonly watch: FencedWatch;
  private readonly informer: ListWatch<T>;
  private attempt = 0;
  private listedOnce = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: InformerOptions<T>) {
    this.synced = new Promise((resolve) => {
      this.markSynced = resolve;
    });
    this.watch = new FencedWatch(opts.kubeConfig, opts.backoff, () => {
      this.attempt = 0;
    });
    const list = async (): Promise<KubernetesListObject<T>> => {
      const result = await opts.list();
      this.attempt = 0;
      this.listedOnce = true;
      return result;
    };
    this.informer = new ListWatch<T>(opts.path, this.watch, list, false, undefined, opts.fieldSelector);
    for (const event of ['add', 'update', 'delete'] as const) {
      this.informer.on(event, (obj: T) => {
        if (!this.stopped) opts.onObject(event, obj);
      });
    }
    this.informer.on('error', (err: unknown) => this.failed(err));
  }

  start(): void {
    void this.run();
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    try {
      // Resolves once the list is applied and the watch is open, or after the error callback ran.
      await this.informer.start();
    } catch (err) {
      this.failed(err);
    }
    if (this.listedOnce) this.markSynced();
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    const status = statusOf(err);
    if (status === 404 && this.opts.onNotServed) {
      this.opts.onNotServed();
      return;
    }
    const error = new KubernetesApiError(`${this.opts.resource} informer: ${errorMessage(err)}`, status, { cause: err });
    this.opts.onError(error);
    if (this.restartTimer) return;
    const delay = backoffDelay(++this.attempt, this.opts.backoff);
    this.opts.log.warn({ resource: this.opts.resource, err: error.message, status, retryInMs: delay }, 'informer failed; keeping the last view and restarting');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.run();
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.watch.close();
    await this.informer.stop();
  }
}
