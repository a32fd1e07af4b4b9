// The pods' workloads on one lab node: the built-in echo server on every TCP container port of
// every pod the node runs. One process serves all of them, each listening socket created inside its
// own pod's network namespace, so a connection to the pod reaches exactly that pod's socket and the
// server sees the addresses the pod would see. (A pod's own process would cost ~40 MB each.)
import net from 'node:net';
import { once } from 'node:events';
import { listenSocket } from '../native/index.js';
import type { Logger } from '../mesh/log.js';
import { attachEcho } from './echo.js';
import type { LabPlan } from './plan.js';
import { netnsPath } from './topology.js';

export interface WorkloadListener {
  pod: string;
  ip: string;
  port: number;
}

export async function startWorkloads(plan: LabPlan, node: string, log: Logger): Promise<{ listeners: WorkloadListener[]; close: () => void }> {
  const servers: net.Server[] = [];
  const listeners: WorkloadListener[] = [];
  for (const pod of plan.pods.filter((p) => p.node === node)) {
    const ports = pod.pod.spec.containers.flatMap((c) => c.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP');
    for (const port of new Set(ports.map((p) => p.containerPort))) {
      const fd = listenSocket({ netns: netnsPath(pod.netns), port });
      const server = net.createServer({ noDelay: true });
      attachEcho(server, { pod: pod.name, namespace: pod.namespace, node });
      server.on('error', (err) => log.error({ pod: pod.key, port, err: err.message }, 'workload listener error'));
      server.listen({ fd });
      await once(server, 'listening');
      servers.push(server);
      listeners.push({ pod: pod.key, ip: pod.ip, port });
    }
  }
  log.info({ listeners: listeners.length }, 'workloads listening');
  return { listeners, close: () => servers.forEach((s) => s.close()) };
}
