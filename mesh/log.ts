import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export interface LogOptions {
  /** Component name, e.g. "agent", "ztunnel". Becomes the `component` field of every line. */
  component: string;
  level?: LevelWithSilent;
  /** Pretty-print for humans; defaults to "stdout is a TTY". Lab processes log JSON to files. */
  pretty?: boolean;
}

/**
 * JSON lines by default (what log shippers and the lab's tests read); pino-pretty on a terminal.
 * Pretty printing runs in pino's transport worker thread, so it never costs the caller's loop.
 */
export function createLogger(opts: LogOptions): Logger {
  const level = opts.level ?? (process.env.AMBIT_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info';
  const pretty = opts.pretty ?? process.stdout.isTTY === true;
  const base = { component: opts.component };
  if (pretty) {
    return pino({
      level,
      base,
      transport: { target: 'pino-pretty', options: { colorize: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level, base, timestamp: pino.stdTimeFunctions.isoTime });
}
