// One proxy instance: the three transparent listeners, the inbound and outbound sides, the pool
// and the open connections, over one ProxyState. The main thread runs one; with --workers N each
// worker thread runs its own (SO_REUSEPORT spreads accepted connections over them).
import net from 'node:net';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import type { Registry } from 'prom-client';
import type { Logger } from '../../../mesh/log.js';
import { listenSocket } from '../../../native/index.js';
import { HBONE_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT } from '../../../mesh/ports.js';
import { ipText } from '../../../mesh/ip-text.js';
import { ProxyState, workloadIdentity, type StateUpdate } from '../state.js';
import { CredentialStore, type CredentialSource } from '../credentials.js';
import { HbonePool } from '../pool.js';
import { TrafficMetrics } from '../telemetry/metrics.js';
import { dumpConnections, type DumpedConnections } from '../admin.js';
import { identityUri } from '../../../mesh/identity/spiffe.js';
import { ConnectionTracker } from './tracker.js';
import { Inbound } from './inbound.js';
import { Outbound } from './outbound.js';

export interface ProxyPorts {
  outbound: number;
  inbound: number;
  hbone: number;
}

export const DEFAULT_PORTS: ProxyPorts = { outbound: OUTBOUND_CAPTURE_PORT, inbound: INBOUND_CAPTURE_PORT, hbone: HBONE_PORT };

export interface ProxyOptions {
  node: string;
  trustDomain: string;
  credentials: CredentialSource;
  /** Roots trusted besides the root of each held chain. */
  roots?: readonly string[];
  registry: Registry;
  log: Logger;
  accessLog: Logger;
  ports?: Partial<ProxyPorts>;
  pingIntervalMs?: number;
  handshakeTimeoutMs?: number;
}

export class Proxy {
  readonly state: ProxyState;
  readonly tracker: ConnectionTracker;
  readonly pool: HbonePool;
  readonly credentials: CredentialStore;
  private readonly inbound: Inbound;
  private readonly outbound: Outbound;
  private readonly servers: net.Server[] = [];
  private own = new Set<string>();
  private ownTimer: NodeJS.Timeout | undefined;
  private recheckPending = false;

  constructor(private readonly opts: ProxyOptions) {
    const log = opts.log;
    this.state = new ProxyState(opts.node);
    this.credentials = new CredentialStore(opts.credentials, opts.roots);
    this.tracker = new ConnectionTracker(new TrafficMetrics(opts.registry), opts.accessLog, log);
    this.pool = new HbonePool({ context: (uri) => this.credentials.context(uri), log, pingIntervalMs: opts.pingIntervalMs });
    this.inbound = new Inbound({
      state: this.state,
      credentials: this.credentials,
      tracker: this.tracker,
      trustDomain: opts.trustDomain,
      log,
      pingIntervalMs: opts.pingIntervalMs,
      handshakeTimeoutMs: opts.handshakeTimeoutMs,
    });
    this.outbound = new Outbound({ state: this.state, pool: this.pool, inbound: this.inbound, tracker: this.tracker, ownAddresses: () => this.own, log });
    this.state.listen({
      workloadChanged: (before, after) => {
        const moved = !after || identityUri(workloadIdentity(before)) !== identityUri(workloadIdentity(after)) || before.addresses.map(ipText).join() !== after.addresses.map(ipText).join();
        if (!moved) return;
        for (const a of before.addresses) {
          const n = this.pool.evict(ipText(a));
          if (n) log.info({ address: ipText(a), workload: before.uid, connections: n }, 'pooled HBONE connections evicted: the workload at this address changed');
        }
      },
      policiesChanged: () => this.scheduleRecheck(),
    });
  }

  async start(): Promise<void> {
    this.refreshOwnAddresses();
    this.ownTimer = setInterval(() => this.refreshOwnAddresses(), 10_000);
    this.ownTimer.unref();
    const ports = { ...DEFAULT_PORTS, ...this.opts.ports };
    const handlers: [number, (s: net.Socket) => void][] = [
      [ports.outbound, (s) => this.outbound.accept(s)],
      [ports.inbound, (s) => this.inbound.acceptPlaintext(s)],
      [ports.hbone, (s) => this.inbound.hbone.accept(s)],
    ];
    for (const [port, handle] of handlers) {
      // IP_TRANSPARENT: accept what bpf_sk_assign hands us for any address; SO_REUSEPORT: workers,
      // and a new ztunnel beside an old one during an upgrade.
      const fd = listenSocket({ port, transparent: true, reusePort: true });
      const server = net.createServer({ allowHalfOpen: true, noDelay: true }, handle);
      server.on('error', (err) => this.opts.log.error({ err: err.message, port }, 'listener error'));
      server.listen({ fd });
      await once(server, 'listening');
      this.servers.push(server);
    }
  }

  apply(updates: readonly StateUpdate[]): void {
    this.state.apply(updates);
  }

  /** Coalesces a burst of policy updates into one pass over the open connections. */
  private scheduleRecheck(): void {
    if (this.recheckPending) return;
    this.recheckPending = true;
    setImmediate(() => {
      this.recheckPending = false;
      this.tracker.recheck(this.state);
    });
  }

  private refreshOwnAddresses(): void {
    const own = new Set<string>();
    for (const addrs of Object.values(networkInterfaces())) for (const a of addrs ?? []) own.add(a.address);
    this.own = own;
  }

  connections(): DumpedConnections {
    return dumpConnections(this.tracker.list());
  }

  get listening(): boolean {
    return this.servers.length === 3;
  }

  async close(): Promise<void> {
    clearInterval(this.ownTimer);
    const closing = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    this.inbound.close();
    this.pool.close();
    this.tracker.close();
    this.servers.length = 0;
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 1000).unref())]);
  }
}
