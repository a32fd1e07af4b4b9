// A proxy worker thread (--workers N): its own listeners, pool, state copy and metrics registry.
// Certificates arrive as messages; the first use of one it lacks asks the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { createLogger } from '../../mesh/log.js';
import { identityUri, type Identity } from '../../mesh/identity/spiffe.js';
import type { WorkloadCredential } from '../../mesh/hbone/tls.js';
import { Proxy } from './proxy/proxy.js';
import type { MainMessage, WorkerInit, WorkerMessage } from './worker-protocol.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const send = (m: WorkerMessage): void => port.postMessage(m);
const log = createLogger({ component: 'ztunnel' }).child({ node: init.node, worker: init.index });
const held = new Map<string, WorkloadCredential>();
const waiting = new Map<number, { resolve(c: WorkloadCredential): void; reject(e: Error): void }>();
let nextId = 1;

const registry = new Registry();
const proxy = new Proxy({
  node: init.node,
  trustDomain: init.trustDomain,
  roots: init.roots,
  registry,
  log,
  accessLog: log.child({ target: 'access' }),
  ports: init.ports,
  credentials: {
    get: (id: Identity) => {
      const c = held.get(identityUri(id));
      if (!c) send({ type: 'get', identity: id });
      return c;
    },
    fetch: (id: Identity) =>
      new Promise<WorkloadCredential>((resolve, reject) => {
        const reqId = nextId++;
        waiting.set(reqId, { resolve, reject });
        send({ type: 'fetch', id: reqId, identity: id });
      }),
  },
});

port.on('message', (m: MainMessage) => {
  switch (m.type) {
    case 'apply':
      proxy.apply(m.updates);
      break;
    case 'credential':
      held.set(identityUri(m.cred.identity), m.cred);
      break;
    case 'fetched': {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      if (m.cred) {
        held.set(identityUri(m.cred.identity), m.cred);
        w?.resolve(m.cred);
      } else {
        w?.reject(new Error(m.error ?? 'certificate fetch failed'));
      }
      break;
    }
    case 'ask':
      if (m.what === 'connections') send({ type: 'answer', id: m.id, value: proxy.connections() });
      else void registry.getMetricsAsJSON().then((value) => send({ type: 'answer', id: m.id, value }));
      break;
    case 'close':
      void proxy.close().then(() => process.exit(0));
      break;
  }
});

await proxy.start();
send({ type: 'listening' });
