// One reconcile of the node agent's RedirectionManager, run inside a test's "node" namespace with
// `nsenter --net` (the manager reads the routes and links of its own namespace, as the agent does).
//
//   node manager-worker.js ROOT ZTUNNEL_NETNS 'VIEW'   (VIEW: { namespaces: Namespace[], pods: Pod[] })
//
// Prints one JSON line: what reconcile returned and what the maps hold afterwards. Exits without
// closing anything, as a killed agent would: the pins carry the state to the next run.
import { pino } from 'pino';
import { Datapath } from '../../agent/redirection/datapath.js';
import { RedirectionManager } from '../../agent/redirection/manager.js';
import type { Namespace, Pod } from '../../mesh/k8s/types.js';

export interface ManagerWorkerOutput {
  result: { key: string; ifindex: number | null; enrolled: boolean; state: string | null; error?: string }[];
  pods: [number, { ip: string; flags: number }][];
  ips: [string, number][];
}

const [root, ztunnelNetns, viewJson] = process.argv.slice(2);
if (!root || !ztunnelNetns || !viewJson) {
  console.error('usage: manager-worker.js ROOT ZTUNNEL_NETNS VIEW_JSON');
  process.exit(2);
}
const view = JSON.parse(viewJson) as { namespaces: Namespace[]; pods: Pod[] };
const { datapath } = Datapath.open(root);
const manager = new RedirectionManager({ datapath, ztunnelNetns, failOpen: false, log: pino({ level: 'silent' }) });
const result = await manager.reconcile({ namespaces: new Map(view.namespaces.map((n) => [n.metadata.name, n])), pods: view.pods }, true);
const output: ManagerWorkerOutput = {
  result: result.map((r) => ({ key: r.key, ifindex: r.ifindex, enrolled: r.enrolled, state: r.state, ...(r.error ? { error: r.error } : {}) })),
  pods: [...datapath.pods().entries()],
  ips: [...datapath.podIPs().entries()],
};
console.log(JSON.stringify(output));
