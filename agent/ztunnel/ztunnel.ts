// The node's ztunnel process: the proxy (in this thread, or in N worker threads), fed by the xDS
// stream and the identity manager, with Istio's side ports: 15021 readiness, 15020 metrics,
// 15000 admin (localhost).
import http from 'node:http';
import { once } from 'node:events';
import type { Logger } from '../../mesh/log.js';
import type { LogLevels } from '../../mesh/log-levels.js';
import { identityUri, parseIdentity, type Identity } from '../../mesh/identity/spiffe.js';
import { READINESS_PORT } from '../../mesh/ports.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE } from '../../mesh/xds/types.js';
import type { WorkloadCredential } from '../../mesh/hbone/tls.js';
import type { IdentityManager } from '../identity/manager.js';
import type { ZtunnelDiscovery } from './discovery.js';
import { AdminServer, dumpIdentity, type ConfigDump } from './admin.js';
import type { StateUpdate } from './state.js';
import type { CredentialSource } from './credentials.js';
import type { ProxyPorts } from './proxy/proxy.js';
import { startStatsServer, STATS_PORT } from './telemetry/stats-server.js';
import { createProxyHost, type ProxyHost } from './proxy-host.js';

/** The xDS types the proxy's state is built from. */
const STATE_KINDS: Record<string, StateUpdate['kind']> = { [ADDRESS_TYPE]: 'address', [AUTHORIZATION_TYPE]: 'authorization' };

export interface ZtunnelOptions {
  node: string;
  trustDomain: string;
  discovery?: ZtunnelDiscovery;
  identities?: IdentityManager;
  /** Identities the node must hold before it is ready (its enrolled pods'), read at each probe. */
  nodeIdentities?: () => readonly Identity[];
  /** PEM roots trusted besides the root of each held chain (the --ca-root file). */
  roots?: readonly string[];
  workers?: number;
  ports?: Partial<ProxyPorts>;
  readinessPort?: number;
  statsPort?: number;
  adminPort?: number;
  log: Logger;
  accessLog: Logger;
  logLevels?: LogLevels;
}

export class Ztunnel {
  private host: ProxyHost | undefined;
  private readiness: http.Server | undefined;
  private stats: http.Server | undefined;
  private admin: AdminServer | undefined;
  private ready = false;

  constructor(private readonly opts: ZtunnelOptions) {}

  async start(): Promise<void> {
    const { opts } = this;
    this.host = await createProxyHost({
      workers: opts.workers ?? 1,
      node: opts.node,
      trustDomain: opts.trustDomain,
      roots: opts.roots ?? [],
      ports: opts.ports,
      credentials: credentialSource(opts.identities),
      heldCredentials: () => heldCredentials(opts.identities),
      log: opts.log,
      accessLog: opts.accessLog,
    });
    const discovery = opts.discovery;
    if (discovery) {
      // Resources already held (none at a first start) and every later change, as plain updates.
      this.host.apply(Object.keys(STATE_KINDS).flatMap((t) => this.updatesFor(t, [...discovery.client.resources(t).keys()], [])));
      discovery.client.onUpdate((u) => this.host?.apply(this.updatesFor(u.typeUrl, u.updated, u.removed)));
    }
    opts.identities?.onIssued((held) => this.host?.credentialIssued({ identity: held.identity, keyPem: held.keyPem, chain: held.chain }));

    this.readiness = http.createServer((req, res) => {
      if (req.method !== 'GET') return void res.writeHead(405).end();
      if (req.url !== '/healthz/ready') return void res.writeHead(404).end();
      const pending = this.pending();
      res.writeHead(pending.length ? 500 : 200, { 'content-type': 'text/plain' }).end(pending.length ? `not ready, pending: ${pending.join(', ')}\n` : 'ready\n');
    });
    this.readiness.listen(opts.readinessPort ?? READINESS_PORT, '0.0.0.0');
    await once(this.readiness, 'listening');
    this.stats = await startStatsServer({ port: opts.statsPort ?? STATS_PORT, render: () => this.host!.metrics() });
    this.admin = new AdminServer(() => this.dump(), opts.logLevels);
    await this.admin.listen(opts.adminPort);
    opts.log.info({ workers: opts.workers ?? 1 }, 'ztunnel listening');
  }

  private updatesFor(typeUrl: string, updated: readonly string[], removed: readonly string[]): StateUpdate[] {
    const kind = STATE_KINDS[typeUrl];
    if (!kind) return [];
    const held = this.opts.discovery!.client.resources<never>(typeUrl);
    return [...updated.map((name) => ({ kind, name, value: held.get(name)?.value ?? null })), ...removed.map((name) => ({ kind, name, value: null }))] as StateUpdate[];
  }

  /**
   * Istio's readiness tasks. Once ready, a ztunnel stays ready: a new pod's certificate being
   * fetched must not make the agent take every pod of the node out of the mesh.
   */
  private pending(): string[] {
    if (this.ready) return [];
    const pending: string[] = [];
    if (!this.host?.listening) pending.push('proxy');
    if (this.opts.discovery && !this.opts.discovery.client.isReady()) pending.push('state manager');
    const ids = this.opts.nodeIdentities?.() ?? [];
    const missing = this.opts.identities ? ids.filter((id) => !this.opts.identities!.get(id)) : ids;
    if (missing.length) pending.push(`certificates (${missing.map(identityUri).join(', ')})`);
    this.ready = pending.length === 0;
    return pending;
  }

  private async dump(): Promise<ConfigDump> {
    return {
      certificates: (this.opts.identities?.snapshot() ?? []).map(dumpIdentity),
      ...(this.opts.discovery ? this.opts.discovery.dump() : {}),
      connections: (await this.host?.connections()) ?? { inbound: [], outbound: [] },
    };
  }

  async close(): Promise<void> {
    this.admin?.close();
    this.readiness?.close();
    this.stats?.close();
    await this.host?.close();
  }
}

/** The identity manager as the proxy wants it; without a CA there are no certificates. */
function credentialSource(identities: IdentityManager | undefined): CredentialSource {
  const toCredential = (h: { identity: Identity; keyPem: string; chain: readonly string[] }): WorkloadCredential => ({ identity: h.identity, keyPem: h.keyPem, chain: h.chain });
  return {
    get: (id) => {
      const held = identities?.get(id);
      return held ? toCredential(held) : undefined;
    },
    fetch: async (id) => {
      if (!identities) throw new Error(`no certificate for ${identityUri(id)}: this ztunnel runs without a CA (--ca-address)`);
      return toCredential(await identities.fetch(id));
    },
  };
}

function heldCredentials(identities: IdentityManager | undefined): WorkloadCredential[] {
  const out: WorkloadCredential[] = [];
  for (const s of identities?.snapshot() ?? []) {
    const held = identities?.get(parseIdentity(s.identity));
    if (held) out.push({ identity: held.identity, keyPem: held.keyPem, chain: held.chain });
  }
  return out;
}
