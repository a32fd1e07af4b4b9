// HBONE connections to other nodes, shared by the streams of one (source identity, destination
// identities, destination address): ztunnel's pool (istio-ambient-spec.md §2.2). A connection
// carries at most 100 streams; callers for a key wait on the connect in progress instead of each
// opening its own; idle connections are closed after a while; a destination workload's change
// evicts its connections, because a pod IP may now belong to someone else.
import net from 'node:net';
import type http2 from 'node:http2';
import type tls from 'node:tls';
import type { Logger } from '../../mesh/log.js';
import { HboneSession, CONNECT_TIMEOUT_MS, MAX_STREAMS_PER_CONNECTION } from '../../mesh/hbone/client.js';
import { HboneConnectionError } from '../../mesh/hbone/errors.js';
import { parseIdentity, type Identity } from '../../mesh/identity/spiffe.js';
import { HBONE_PORT } from '../../mesh/ports.js';

/** ztunnel's POOL_UNUSED_RELEASE_TIMEOUT. */
export const IDLE_TIMEOUT_MS = 5 * 60_000;
/** ztunnel's outbound socket keepalive (180 s). */
const TCP_KEEPALIVE_MS = 180_000;

export interface PoolKey {
  /** SPIFFE URI of the source workload. */
  source: string;
  /** SPIFFE URIs the peer may prove. */
  expected: readonly string[];
  /** The peer's IP; the port is HBONE's. */
  address: string;
  port?: number;
}

interface Entry {
  readonly key: string;
  readonly address: string;
  readonly sessions: Set<HboneSession>;
  connecting: Promise<HboneSession> | undefined;
}

export interface PooledSessionInfo {
  key: string;
  peer: string;
  address: string;
  streams: number;
}

export interface PoolOptions {
  /** The TLS context of a source identity (cached by the caller). */
  context(source: string): Promise<tls.SecureContext>;
  log: Logger;
  idleTimeoutMs?: number;
  connectTimeoutMs?: number;
  pingIntervalMs?: number;
}

export class HbonePool {
  private readonly entries = new Map<string, Entry>();
  private readonly idle = new Map<HboneSession, NodeJS.Timeout>();
  /** Streams promised to callers that have not opened them yet (they resume one microtask later). */
  private readonly reserved = new Map<HboneSession, number>();
  private closed = false;

  constructor(private readonly opts: PoolOptions) {}

  /** Opens a CONNECT stream to `authority` through a pooled connection for `key`. */
  async open(key: PoolKey, authority: string, headers: Record<string, string>): Promise<http2.ClientHttp2Stream> {
    const session = await this.session(key);
    this.unidle(session);
    // open() counts the stream synchronously; from here the reservation is no longer needed.
    const pending = session.open(authority, headers, this.opts.connectTimeoutMs);
    this.release(session);
    try {
      const stream = await pending;
      stream.once('close', () => this.maybeIdle(session));
      return stream;
    } catch (err) {
      this.maybeIdle(session);
      throw err;
    }
  }

  private async session(key: PoolKey): Promise<HboneSession> {
    const id = `${key.source}|${key.expected.join(',')}|${key.address}:${key.port ?? HBONE_PORT}`;
    let entry = this.entries.get(id);
    if (!entry) {
      entry = { key: id, address: key.address, sessions: new Set(), connecting: undefined };
      this.entries.set(id, entry);
    }
    for (;;) {
      if (this.closed) throw new HboneConnectionError('the HBONE pool is closed');
      for (const s of entry.sessions) if (this.reserve(s)) return s;
      const e = entry;
      const connecting =
        e.connecting ??
        (e.connecting = this.connect(e, key).finally(() => {
          e.connecting = undefined;
        }));
      const s = await connecting;
      if (this.reserve(s)) return s;
    }
  }

  /** Takes one stream of the connection's room for a caller, if there is any left. */
  private reserve(s: HboneSession): boolean {
    const reserved = this.reserved.get(s) ?? 0;
    if (!s.available || s.activeStreams + reserved >= MAX_STREAMS_PER_CONNECTION) return false;
    this.reserved.set(s, reserved + 1);
    return true;
  }

  private release(s: HboneSession): void {
    const n = (this.reserved.get(s) ?? 1) - 1;
    if (n > 0) this.reserved.set(s, n);
    else this.reserved.delete(s);
  }

  private async connect(entry: Entry, key: PoolKey): Promise<HboneSession> {
    const context = await this.opts.context(key.source);
    const port = key.port ?? HBONE_PORT;
    const socket = net.connect({ host: key.address, port, noDelay: true, keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_MS });
    const expected: Identity[] = key.expected.map(parseIdentity);
    const session = await HboneSession.connect({ socket, context, expected, timeoutMs: this.opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS, pingIntervalMs: this.opts.pingIntervalMs });
    if (this.closed || this.entries.get(entry.key) !== entry) {
      session.close();
      throw new HboneConnectionError(`HBONE connection to ${key.address}:${port} was evicted while connecting`);
    }
    entry.sessions.add(session);
    session.onClose(() => {
      entry.sessions.delete(session);
      this.reserved.delete(session);
      this.unidle(session);
      if (entry.sessions.size === 0 && !entry.connecting && this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
    });
    this.opts.log.debug({ peer: key.address, identity: key.expected[0], source: key.source }, 'HBONE connection established');
    return session;
  }

  private unidle(session: HboneSession): void {
    const t = this.idle.get(session);
    if (t) clearTimeout(t);
    this.idle.delete(session);
  }

  private maybeIdle(session: HboneSession): void {
    if (session.activeStreams > 0 || session.closed || this.idle.has(session)) return;
    const t = setTimeout(() => {
      this.idle.delete(session);
      if (session.activeStreams === 0) session.close();
    }, this.opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS);
    t.unref();
    this.idle.set(session, t);
  }

  /**
   * Takes every connection to `address` out of the pool: no new streams on them, open streams
   * finish. Called when the workload at that address changed or went away.
   */
  evict(address: string): number {
    let n = 0;
    for (const [id, entry] of this.entries) {
      if (entry.address !== address) continue;
      this.entries.delete(id);
      for (const s of entry.sessions) {
        s.close();
        n++;
      }
    }
    return n;
  }

  sessions(): PooledSessionInfo[] {
    const out: PooledSessionInfo[] = [];
    for (const entry of this.entries.values()) {
      for (const s of entry.sessions) out.push({ key: entry.key, peer: `spiffe://${s.peer.trustDomain}/ns/${s.peer.namespace}/sa/${s.peer.serviceAccount}`, address: entry.address, streams: s.activeStreams });
    }
    return out;
  }

  get size(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.sessions.size;
    return n;
  }

  close(): void {
    this.closed = true;
    for (const t of this.idle.values()) clearTimeout(t);
    this.idle.clear();
    for (const e of this.entries.values()) for (const s of e.sessions) s.destroy();
    this.entries.clear();
  }
}
