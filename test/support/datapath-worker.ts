// A stand-in for the node agent's datapath side, for tests that must attach to devices of a test
// namespace: Datapath.attachPod takes an ifindex in the caller's own network namespace, and the
// test process lives in the root namespace, where nothing may be created. The test runs this file
// inside the namespace with `nsenter --net=/run/netns/X` (not `ip netns exec`, which remounts /sys
// and hides the pins), as the lab runs the agent.
//
//   node datapath-worker.js ROOT 'OPS'   (OPS: a JSON list of [op, ...args])
//
// It opens the Datapath at ROOT, runs the operations, prints one JSON line ({ open, results }) and
// exits without close(): the process ends as a killed agent would, leaving only what is pinned.
import { Datapath } from '../../agent/redirection/datapath.js';
import type { PodState, ProgramName } from '../../bpf/maps.js';
import { progInfo } from '../../native/index.js';

export type WorkerOp =
  | ['attachPod', number]
  | ['detachPod', number]
  | ['setPod', number, string, number]
  | ['pods']
  | ['links']
  | ['programs']
  | ['switchPrograms'];

export interface WorkerLink {
  name: string;
  id: number;
  ifindex: number;
  progId: number;
}

export interface WorkerOutput {
  open: { adoptedLinks: number; removedStaleLinks: number; recreatedMaps: boolean };
  results: unknown[];
}

function runOp(dp: Datapath, op: WorkerOp): unknown {
  switch (op[0]) {
    case 'attachPod':
      return dp.attachPod(op[1]);
    case 'detachPod':
      dp.detachPod(op[1]);
      return null;
    case 'setPod':
      dp.setPod(op[1], { ip: op[2], flags: op[3] });
      return null;
    case 'pods':
      return [...dp.pods().entries()] satisfies [number, PodState][];
    case 'links':
      return dp.pinnedLinks().map((l): WorkerLink => ({ name: l.name, id: l.info.id, ifindex: l.info.ifindex, progId: l.info.progId }));
    case 'switchPrograms':
      return dp.switchPrograms();
    case 'programs': {
      const out: Partial<Record<ProgramName, number>> = {};
      for (const name of ['from_pod', 'to_pod', 'proxy_in'] as const) out[name] = progInfo(dp.program(name)).id;
      return out;
    }
  }
}

const [root, opsJson] = process.argv.slice(2);
if (!root || !opsJson) {
  console.error('usage: datapath-worker.js ROOT OPS_JSON');
  process.exit(2);
}
const { datapath, result } = Datapath.open(root);
const results = (JSON.parse(opsJson) as WorkerOp[]).map((op) => runOp(datapath, op));
const output: WorkerOutput = { open: result, results };
console.log(JSON.stringify(output));
