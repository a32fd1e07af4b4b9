// Writes to the API server that must eventually happen but must never block or fail their caller:
// one pending write per object, the latest value asked for winning, retried with backoff. A write
// the server refuses as such (the object is gone, or the request is invalid) is not retried.

import { ApiException } from '@kubernetes/client-node';
import { backoffDelay, type BackoffOptions } from '../../backoff.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log.js';

export interface WriteQueueOptions<T> {
  /** What is written, for log lines: "redirection", "policy status". */
  what: string;
  log: Logger;
  backoff: BackoffOptions;
  /** Performs one write of `value` to the object `key`; throws the client's error on failure. */
  write: (key: string, value: T) => Promise<void>;
}

interface PendingWrite<T> {
  desired: T;
  running: boolean;
  attempt: number;
  retryTimer: NodeJS.Timeout | undefined;
  waiters: (() => void)[];
}

/** The HTTP status of a client error, when there was a response. */
export function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  if (typeof err === 'object' && err !== null && 'statusCode' in err && typeof err.statusCode === 'number') return err.statusCode;
  return undefined;
}

export class WriteQueue<T> {
  private readonly writes = new Map<string, PendingWrite<T>>();
  private closed = false;

  constructor(private readonly opts: WriteQueueOptions<T>) {}

  /** The value waiting to be written to `key`, if a write is pending. */
  pending(key: string): T | undefined {
    return this.writes.get(key)?.desired;
  }

  /**
   * Writes `value` to `key`. Resolves after the first attempt (a failed one is retried in the
   * background); while a write of the key is in flight the caller waits for it, during a retry
   * backoff it does not. Never rejects.
   */
  submit(key: string, value: T): Promise<void> {
    if (this.closed) return Promise.resolve();
    const pending = this.writes.get(key);
    if (pending) {
      pending.desired = value;
      return pending.running ? new Promise((resolve) => pending.waiters.push(resolve)) : Promise.resolve();
    }
    const write: PendingWrite<T> = { desired: value, running: false, attempt: 0, retryTimer: undefined, waiters: [] };
    this.writes.set(key, write);
    const settled = new Promise<void>((resolve) => write.waiters.push(resolve));
    void this.drain(key, write);
    return settled;
  }

  close(): void {
    this.closed = true;
    for (const write of this.writes.values()) {
      clearTimeout(write.retryTimer);
      release(write);
    }
    this.writes.clear();
  }

  private async drain(key: string, write: PendingWrite<T>): Promise<void> {
    const { what, log } = this.opts;
    write.running = true;
    while (!this.closed) {
      const value = write.desired;
      try {
        await this.opts.write(key, value);
        log.debug({ object: key, what }, `recorded ${what}`);
        write.attempt = 0;
        if (write.desired !== value) continue;
        this.finish(key, write);
        return;
      } catch (err) {
        const status = statusOf(err);
        if (status === 404) {
          log.debug({ object: key, what }, `object is gone; no ${what} to record`);
          this.finish(key, write);
          return;
        }
        if (status === 400 || status === 415 || status === 422) {
          // The server refuses this request as such: repeating it cannot succeed.
          log.error({ object: key, what, status, err: errorMessage(err) }, `${what} write rejected`);
          this.finish(key, write);
          return;
        }
        const delay = backoffDelay(++write.attempt, this.opts.backoff);
        log.warn({ object: key, what, status, err: errorMessage(err), retryInMs: delay }, `recording ${what} failed; will retry`);
        write.running = false;
        release(write);
        write.retryTimer = setTimeout(() => {
          write.retryTimer = undefined;
          void this.drain(key, write);
        }, delay);
        return;
      }
    }
    release(write);
  }

  private finish(key: string, write: PendingWrite<T>): void {
    write.running = false;
    if (this.writes.get(key) === write) this.writes.delete(key);
    release(write);
  }
}

function release<T>(write: PendingWrite<T>): void {
  const waiters = write.waiters.splice(0);
  for (const resolve of waiters) resolve();
}
