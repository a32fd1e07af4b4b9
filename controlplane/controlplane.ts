// `ambit controlplane`: the mesh's control plane. On 15012 (gRPC, TLS): the CA and delta xDS
// (workloads, services, L4 policies, waypoints) computed from the config source; on 15014: health
// and debug endpoints. The signing material comes from Istio's cacerts layout when given (an
// intermediate plugged in), else from the root store (a directory, or a Kubernetes Secret), created
// on first start; the trust bundle is written where agents and the lab read it.
import http from 'node:http';
import { once } from 'node:events';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConfigSource } from '../mesh/config/source.js';
import { ConfigError, errorMessage } from '../mesh/errors.js';
import type { Logger } from '../mesh/log.js';
import { isTrustDomain } from '../mesh/identity/spiffe.js';
import { IstioCertificateServiceService } from '../proto/gen/istio/v1/auth/ca.js';
import { CertificateAuthority, type AuthorityOptions } from './ca/authority.js';
import { caService } from './ca/service.js';
import type { Authenticator, RootStore } from './ca/types.js';
import { startGrpcServer, type GrpcEndpoint } from './grpc-server.js';
import { Discovery } from './discovery.js';
import { XdsServer } from './xds/server.js';
import { DebugEndpoints } from './debug.js';
import { DEFAULT_MODEL_OPTIONS, type ModelOptions } from './model/types.js';

export const GRPC_PORT = 15012;
export const HEALTH_PORT = 15014;

export interface ControlPlaneOptions {
  stateDir: string;
  trustDomain: string;
  clusterId: string;
  host: string;
  port: number;
  healthPort: number;
  /** Extra DNS names and the addresses the serving certificate must carry. */
  servingNames: string[];
  servingIPs: string[];
  /** The cluster's objects (every kind the model reads). */
  source: ConfigSource;
  /** Root namespace, domain suffix, network (trust domain and cluster ID come from the fields above). */
  model?: Partial<Pick<ModelOptions, 'rootNamespace' | 'domainSuffix' | 'network'>>;
  /** Debounce of config changes before a push (ms); see Discovery. */
  debounceMs?: number;
  /** Answer /debug/* to any client, not just loopback ones. */
  debugRemote?: boolean;
  authenticator: Authenticator;
  /** Where the self-signed root lives; ignored when `cacerts` is given. */
  rootStore: RootStore;
  /** Istio's plugged-in CA material, which takes precedence over the root store. */
  cacerts?: RootStore;
  authority?: AuthorityOptions;
  log: Logger;
}

function isLoopback(address: string | undefined): boolean {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

export class ControlPlane {
  readonly authority: CertificateAuthority;
  readonly xds: XdsServer;
  readonly discovery: Discovery;
  private readonly grpc: GrpcEndpoint;
  private readonly health: http.Server;
  private readonly source: ConfigSource;

  private constructor(authority: CertificateAuthority, xds: XdsServer, discovery: Discovery, grpc: GrpcEndpoint, health: http.Server, source: ConfigSource) {
    this.authority = authority;
    this.xds = xds;
    this.discovery = discovery;
    this.grpc = grpc;
    this.health = health;
    this.source = source;
  }

  get port(): number {
    return this.grpc.port;
  }

  get healthPort(): number {
    return (this.health.address() as { port: number }).port;
  }

  static async start(opts: ControlPlaneOptions): Promise<ControlPlane> {
    const { log } = opts;
    if (!isTrustDomain(opts.trustDomain)) throw new ConfigError(`trust domain '${opts.trustDomain}' is not a DNS name`);
    await opts.source.start();
    let material;
    if (opts.cacerts) {
      material = await opts.cacerts.load();
      if (!material) throw new ConfigError('the cacerts directory holds no signing material (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)');
      log.info('using the plugged-in CA (cacerts)');
    } else {
      material = await opts.rootStore.load();
      if (!material) {
        // Several replicas may start at once: whichever stores first, all use that one.
        material = await opts.rootStore.saveIfAbsent(await CertificateAuthority.generateRoot(opts.trustDomain));
        log.info({ trustDomain: opts.trustDomain }, 'self-signed root ready');
      }
    }
    const authority = await CertificateAuthority.load(material, opts.authority);
    mkdirSync(opts.stateDir, { recursive: true });
    // Atomically: a ztunnel starting now must never read half a bundle.
    const bundle = join(opts.stateDir, 'root-cert.pem');
    writeFileSync(`${bundle}.tmp`, authority.trustBundle, { mode: 0o644 });
    renameSync(`${bundle}.tmp`, bundle);

    const xds = new XdsServer({ authenticator: opts.authenticator, clusterId: opts.clusterId, log: log.child({ service: 'xds' }) });
    const model: ModelOptions = { ...DEFAULT_MODEL_OPTIONS, ...opts.model, trustDomain: opts.trustDomain, clusterId: opts.clusterId };
    const discovery = new Discovery({ source: opts.source, xds, model, log, ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}) });
    opts.source.onError((err) => log.warn({ err: err.message }, 'config source: input rejected; the rest keeps working'));
    // The first model is in the cache before the first client can connect: nobody gets an empty state.
    discovery.start();

    const grpc = await startGrpcServer({
      authority,
      host: opts.host,
      port: opts.port,
      dnsNames: opts.servingNames,
      ips: opts.servingIPs,
      log,
      services: [
        {
          definition: IstioCertificateServiceService,
          implementation: caService({
            authority,
            authenticator: opts.authenticator,
            pods: () => opts.source.current().pods,
            trustDomain: opts.trustDomain,
            clusterId: opts.clusterId,
            log: log.child({ service: 'ca' }),
          }),
        },
        { definition: xds.definition, implementation: xds.implementation() },
      ],
    });
    const debug = new DebugEndpoints({ discovery, xds });
    const health = http.createServer((req, res) => {
      try {
        let url: URL;
        try {
          url = new URL(req.url ?? '/', 'http://controlplane');
        } catch {
          res.writeHead(400, { 'content-type': 'text/plain' }).end('bad request URL\n');
          return;
        }
        if (req.method !== 'GET') {
          res.writeHead(405).end();
        } else if (url.pathname === '/ready' || url.pathname === '/healthz/ready') {
          if (Date.now() >= authority.usableUntil) res.writeHead(503, { 'content-type': 'text/plain' }).end("not ready: the CA's certificate chain has expired\n");
          else res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
        } else if (!opts.debugRemote && !isLoopback(req.socket.remoteAddress)) {
          // What the mesh holds is for operators on the control plane's host (kubectl port-forward, the lab CLI).
          res.writeHead(403, { 'content-type': 'text/plain' }).end('debug endpoints answer loopback clients only (see --debug-remote)\n');
        } else {
          const answer = debug.answer(url);
          res.writeHead(answer.status, { 'content-type': answer.contentType }).end(answer.body);
        }
      } catch (err) {
        log.error({ err: errorMessage(err), url: req.url?.slice(0, 200) }, 'health endpoint failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('internal error\n');
      }
    });
    health.listen(opts.healthPort, opts.host);
    await once(health, 'listening');
    log.info({ grpc: `${opts.host}:${grpc.port}`, health: opts.healthPort, trustDomain: opts.trustDomain, clusterId: opts.clusterId }, 'control plane ready');
    return new ControlPlane(authority, xds, discovery, grpc, health, opts.source);
  }

  async stop(): Promise<void> {
    this.health.close();
    this.discovery.stop();
    this.xds.stop();
    await this.grpc.close();
    await this.source.close();
  }
}
