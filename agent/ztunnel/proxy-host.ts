// Where the proxy runs: in this thread (one core), or in N worker threads, each with its own
// listeners (SO_REUSEPORT), pool and state copy, fed the same updates by messages. The main thread
// keeps xDS, certificates and the side ports; nothing on a worker's data path waits on it except
// the first fetch of a certificate it has never seen.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import type { Logger } from '../../mesh/log.js';
import { identityUri, type Identity } from '../../mesh/identity/spiffe.js';
import type { WorkloadCredential } from '../../mesh/hbone/tls.js';
import type { DumpedConnections } from './admin.js';
import type { StateUpdate } from './state.js';
import type { CredentialSource } from './credentials.js';
import { Proxy, type ProxyPorts } from './proxy/proxy.js';
import { aggregateMetrics, type WorkerMetrics } from './telemetry/metrics.js';
import type { MainMessage, WorkerInit, WorkerMessage } from './worker-protocol.js';

export interface ProxyHostOptions {
  workers: number;
  node: string;
  trustDomain: string;
  roots: readonly string[];
  ports?: Partial<ProxyPorts>;
  credentials: CredentialSource;
  /** Every certificate held now, for a worker that starts after they were issued. */
  heldCredentials(): WorkloadCredential[];
  log: Logger;
  accessLog: Logger;
}

export interface ProxyHost {
  readonly listening: boolean;
  apply(updates: StateUpdate[]): void;
  /** A certificate was issued or renewed (workers hold copies). */
  credentialIssued(cred: WorkloadCredential): void;
  connections(): Promise<DumpedConnections>;
  metrics(): Promise<string>;
  close(): Promise<void>;
}

export async function createProxyHost(opts: ProxyHostOptions): Promise<ProxyHost> {
  if (opts.workers <= 1) {
    const registry = new Registry();
    const proxy = new Proxy({ node: opts.node, trustDomain: opts.trustDomain, credentials: opts.credentials, roots: opts.roots, registry, log: opts.log, accessLog: opts.accessLog, ports: opts.ports });
    await proxy.start();
    return {
      get listening() {
        return proxy.listening;
      },
      apply: (updates) => proxy.apply(updates),
      credentialIssued: () => undefined,
      connections: async () => proxy.connections(),
      metrics: () => registry.metrics(),
      close: () => proxy.close(),
    };
  }
  const workers = await Promise.all(Array.from({ length: opts.workers }, (_, i) => WorkerProxy.start(i, opts)));
  return {
    get listening() {
      return workers.every((w) => w.listening);
    },
    apply: (updates) => {
      for (const w of workers) w.post({ type: 'apply', updates });
    },
    credentialIssued: (cred) => {
      for (const w of workers) w.post({ type: 'credential', cred });
    },
    connections: async () => {
      const all = await Promise.all(workers.map((w) => w.ask<DumpedConnections>('connections')));
      return { inbound: all.flatMap((c) => c.inbound), outbound: all.flatMap((c) => c.outbound) };
    },
    metrics: async () => aggregateMetrics(await Promise.all(workers.map((w) => w.ask<WorkerMetrics>('metrics')))),
    close: async () => {
      await Promise.all(workers.map((w) => w.close()));
    },
  };
}

const WORKER_ENTRY = fileURLToPath(new URL('./worker.js', import.meta.url));
/** A question to a worker unanswered this long is given up (a wedged worker must not wedge /metrics). */
const ASK_TIMEOUT_MS = 5_000;

class WorkerProxy {
  listening = false;
  private nextId = 1;
  private readonly asks = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();

  private constructor(
    private readonly worker: Worker,
    private readonly index: number,
    private readonly opts: ProxyHostOptions,
  ) {}

  static async start(index: number, opts: ProxyHostOptions): Promise<WorkerProxy> {
    const init: WorkerInit = { index, node: opts.node, trustDomain: opts.trustDomain, roots: [...opts.roots], ports: opts.ports ?? {} };
    const worker = new Worker(WORKER_ENTRY, { workerData: init });
    const w = new WorkerProxy(worker, index, opts);
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'listening') {
          w.listening = true;
          resolve();
        } else {
          w.onMessage(m);
        }
      });
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`ztunnel worker ${index} exited with code ${code} before listening`)));
    });
    for (const cred of opts.heldCredentials()) w.post({ type: 'credential', cred });
    worker.on('error', (err) => opts.log.error({ worker: index, err: err.message }, 'ztunnel worker failed'));
    worker.on('exit', (code) => {
      w.listening = false;
      opts.log.error({ worker: index, code }, 'ztunnel worker exited');
    });
    return w;
  }

  post(m: MainMessage): void {
    this.worker.postMessage(m);
  }

  ask<T>(what: 'connections' | 'metrics'): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.asks.delete(id);
        reject(new Error(`ztunnel worker ${this.index} did not answer '${what}' within ${ASK_TIMEOUT_MS} ms`));
      }, ASK_TIMEOUT_MS);
      this.asks.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.post({ type: 'ask', id, what });
    });
  }

  private onMessage(m: WorkerMessage): void {
    if (m.type === 'answer') {
      const a = this.asks.get(m.id);
      if (!a) return;
      this.asks.delete(m.id);
      clearTimeout(a.timer);
      a.resolve(m.value);
    } else if (m.type === 'fetch') {
      const id: Identity = m.identity;
      this.opts.credentials.fetch(id).then(
        (cred) => this.post({ type: 'fetched', id: m.id, cred }),
        (err: Error) => this.post({ type: 'fetched', id: m.id, error: err.message }),
      );
    } else if (m.type === 'get') {
      // The worker has no copy yet (it started after the certificate was issued).
      const cred = this.opts.credentials.get(m.identity);
      if (cred) this.post({ type: 'credential', cred });
      else this.opts.log.debug({ worker: this.index, identity: identityUri(m.identity) }, 'worker asked for a certificate not held yet');
    }
  }

  async close(): Promise<void> {
    this.post({ type: 'close' });
    const timer = setTimeout(() => void this.worker.terminate(), 2_000);
    await new Promise((resolve) => this.worker.once('exit', resolve));
    clearTimeout(timer);
  }
}
