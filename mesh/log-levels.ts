// Live log levels for named loggers, with the semantics of Istio ztunnel's /logging (zt:src/admin.rs,
// zt:src/telemetry.rs): a bare level changes the default, `target:level` (or `target=level`) one
// target; each change is layered on the current setting; reset goes back to the startup setting.
//
// A pino child follows its parent's level only until its own level is set; registering sets it, so
// a registered logger holds its target's level whatever its parent does, and every logger whose
// level should move on its own is registered here, children included, under its target. Children
// nobody registers keep following their parent.
import type { LevelWithSilent, Logger } from 'pino';
import { AmbitError } from './errors.js';

/** Istio's level names (tracing's), plus pino's own for the same thresholds. */
const LEVELS: Record<string, LevelWithSilent> = {
  off: 'silent',
  silent: 'silent',
  fatal: 'fatal',
  error: 'error',
  warn: 'warn',
  info: 'info',
  debug: 'debug',
  trace: 'trace',
};

export class LogLevelError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_LOG_LEVEL', message);
  }
}

interface Setting {
  fallback: LevelWithSilent;
  targets: Map<string, LevelWithSilent>;
}

function levelOf(text: string, clause: string): LevelWithSilent {
  const level = LEVELS[text.trim().toLowerCase()];
  if (!level) throw new LogLevelError(`unknown log level '${text}' in '${clause}' (levels: off, error, warn, info, debug, trace)`);
  return level;
}

/** `info`, `access:debug,xds:warn`, `access=debug,info`: the default last named wins, like tracing's directives. */
function parse(spec: string, known: ((target: string) => boolean) | undefined, base: Setting): Setting {
  const next: Setting = { fallback: base.fallback, targets: new Map(base.targets) };
  for (const raw of spec.split(',')) {
    const clause = raw.trim();
    if (!clause) continue;
    const sep = Math.max(clause.lastIndexOf(':'), clause.lastIndexOf('='));
    if (sep < 0) {
      next.fallback = levelOf(clause, clause);
      continue;
    }
    const target = clause.slice(0, sep).trim();
    const level = levelOf(clause.slice(sep + 1), clause);
    if (!target) throw new LogLevelError(`no target before the level in '${clause}'`);
    if (known && !known(target)) throw new LogLevelError(`unknown log target '${target}' in '${clause}'`);
    next.targets.set(target, level);
  }
  return next;
}

/** Shown as pino names but with Istio's `off` for silent. */
const shown = (l: LevelWithSilent) => (l === 'silent' ? 'off' : l);

export class LogLevels {
  private readonly loggers = new Map<string, Logger[]>();
  private readonly initial: Setting;
  private current: Setting;

  /** `initial` is the startup setting (what reset returns to), in the same syntax as apply(). */
  constructor(initial = 'info') {
    this.initial = parse(initial, undefined, { fallback: 'info', targets: new Map() });
    this.current = this.initial;
  }

  /** Adds a logger under `target` and gives it that target's level now. */
  register(target: string, logger: Logger): void {
    if (!target || /[:=,\s]/.test(target)) throw new LogLevelError(`invalid log target name '${target}'`);
    const list = this.loggers.get(target) ?? [];
    list.push(logger);
    this.loggers.set(target, list);
    logger.level = this.levelOf(target);
  }

  targets(): string[] {
    return [...this.loggers.keys()].sort();
  }

  /** The pino level a target's loggers have. */
  levelOf(target: string): LevelWithSilent {
    return this.current.targets.get(target) ?? this.current.fallback;
  }

  /** The current setting as tracing prints a filter (Istio's "current log level is ..."): `access=debug,info`. */
  list(): string {
    const parts = [...this.current.targets].sort(([a], [b]) => a.localeCompare(b)).map(([t, l]) => `${t}=${shown(l)}`);
    parts.push(shown(this.current.fallback));
    return parts.join(',');
  }

  /**
   * Layers `spec` on the current setting (on the startup one with `reset`). The whole spec is
   * checked before anything changes: a bad clause leaves every level as it was.
   */
  apply(spec: string, opts: { reset?: boolean } = {}): void {
    const base = opts.reset ? this.initial : this.current;
    this.current = parse(spec, (t) => this.loggers.has(t), base);
    this.sync();
  }

  /** Back to the startup setting. */
  reset(): void {
    this.current = this.initial;
    this.sync();
  }

  private sync(): void {
    for (const [target, list] of this.loggers) {
      const level = this.levelOf(target);
      for (const logger of list) logger.level = level;
    }
  }
}
