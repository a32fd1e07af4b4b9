// The proxy's open connections: each gets its metrics and access-log lines, a way to read its byte
// counts (for /config_dump and the periodic metrics flush), and, for inbound ones, what policy
// decided, so a policy change can close those now denied (Istio's connection_manager.rs).
import type { Logger } from '../../../mesh/log.js';
import type { AuthzConnection } from '../../../mesh/authz/index.js';
import type { ProxyState } from '../state.js';
import type { ConnectionBytes, ConnectionInfo, ResponseFlag } from './connection.js';
import type { TrafficMetrics, ConnectionMetrics } from '../telemetry/metrics.js';
import { logComplete, logFailed, logOpened } from '../telemetry/access-log.js';

/** Long connections report their bytes this often, not only when they end. */
export const METRICS_FLUSH_MS = 5_000;

export interface Authorized {
  conn: AuthzConnection;
  /** The destination workload's uid: its current policy list is what a recheck uses. */
  workloadUid: string;
}

export interface OpenConnection {
  readonly info: ConnectionInfo;
  bytes(): ConnectionBytes;
  readonly authorized?: Authorized;
  /** Ends both sides now (a reset), with the reason for the access log. */
  kill(reason: string): void;
}

interface Entry extends OpenConnection {
  metrics: ConnectionMetrics;
  killedFor?: string;
}

export interface OpenOptions {
  bytes(): ConnectionBytes;
  authorized?: Authorized;
  kill(): void;
}

export class ConnectionTracker {
  private readonly open = new Map<number, Entry>();
  private nextId = 1;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly metrics: TrafficMetrics,
    private readonly access: Logger,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => this.flush(), METRICS_FLUSH_MS);
    this.timer.unref();
  }

  id(): number {
    return this.nextId++;
  }

  /** A connection that is now established (upstream connected, 200 sent). */
  opened(info: ConnectionInfo, opts: OpenOptions): { done(error?: Error, flag?: ResponseFlag): void } {
    const entry: Entry = {
      info,
      bytes: opts.bytes,
      authorized: opts.authorized,
      metrics: this.metrics.open(info),
      kill: (reason: string) => {
        entry.killedFor = reason;
        opts.kill();
      },
    };
    this.open.set(info.id, entry);
    logOpened(this.access, info);
    return {
      done: (error?: Error, flag?: ResponseFlag) => {
        if (!this.open.delete(info.id)) return;
        const bytes = entry.bytes();
        entry.metrics.close(bytes, entry.killedFor ? 'DENY' : flag);
        const why = entry.killedFor ?? error?.message;
        logComplete(this.access, info, bytes, why);
      },
    };
  }

  /**
   * Refused or failed once the connection could be labelled (policy denial, upstream connect):
   * Istio counts it opened and closed with the flag, and logs it as a completed connection with
   * its error.
   */
  failed(info: ConnectionInfo, flag: ResponseFlag, error: string): void {
    this.metrics.failed(info, flag);
    logOpened(this.access, info);
    logComplete(this.access, info, { sent: 0, received: 0 }, error);
  }

  /** Refused before it could be labelled (no such workload here, a self-call): a log line only, as Istio. */
  early(info: ConnectionInfo, error: string): void {
    logFailed(this.access, info, error);
  }

  list(): OpenConnection[] {
    return [...this.open.values()];
  }

  get size(): number {
    return this.open.size;
  }

  /** Closes the inbound connections the current policies refuse. */
  recheck(state: ProxyState): number {
    let closed = 0;
    for (const e of this.open.values()) {
      if (!e.authorized) continue;
      const w = state.workload(e.authorized.workloadUid);
      if (!w) continue;
      const decision = state.policies.check(e.authorized.conn, w);
      if (decision.allowed) continue;
      this.log.info({ src: `${e.info.src.addr}:${e.info.src.port}`, dst: `${e.info.dst.addr}:${e.info.dst.port}`, reason: decision.reason }, 'connection closed due to policy change');
      e.kill(`connection closed due to policy change: ${decision.reason}`);
      closed++;
    }
    return closed;
  }

  private flush(): void {
    for (const e of this.open.values()) e.metrics.flush(e.bytes());
  }

  close(): void {
    clearInterval(this.timer);
    for (const e of this.open.values()) e.kill('ztunnel shutting down');
  }
}
