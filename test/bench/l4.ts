// `npm run bench -- l4`: the ztunnel's L4 cost, mesh off against mesh on, in one lab run.
//
// A two-node lab (test/fixtures/bench-l4.yaml) with the same pods in two namespaces: `mesh`
// (istio.io/dataplane-mode: ambient: mesh on) and `plain` (mesh off). In each, a client on node-1
// talks to a server on node-2 (cross: node-1's ztunnel outbound, HBONE, node-2's ztunnel inbound)
// and to a server on node-1 (same: node-1's ztunnel only). First, on fresh ztunnels, their RSS
// idle and with IDLE_CONNECTIONS open idle connections through the cross path. Then, per round, for
// each path and mode (off and on alternate, and the order rotates):
//   bulk   one connection, server to client, MB/s after a warm-up;
//   rr     1 KB request / 1 KB reply at a fixed rate (open loop) over a few connections: latency
//          percentiles, and the CPU each ztunnel used per 1000 rps;
//   conn   new connections per second (connect, one request, close), concurrency fixed;
// and once per round the ceiling: Node's own TLS 1.3 bulk rate on one connection in a lab
// namespace. CPU is read from /proc/<pid>/stat (utime + stime) of the lab's processes, found
// through the lab's state file; memory from /proc/<pid>/status. Method and results:
// docs/benchmarks.md.
// The machine is shared and has 2 cores: read medians and within-run ratios, not absolutes.
import { TestLab, waitFor } from '../support/lab.js';
import { makePki } from '../support/pki.js';
import { privilegedSkipReason } from '../support/env.js';
import { netnsPath } from '../../lab/topology.js';
import type { LabPodPlan } from '../../lab/plan.js';
import { CpuMeter, labPids, memory, type Memory } from './support/proc.js';
import { bulk, connectionRate, openIdle, requestResponse, type RrResult } from './support/load.js';
import { tlsCeiling, type CeilingResult } from './support/tls-ceiling.js';
import { max, median } from './support/stats.js';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const WARMUP_SECONDS = Number(process.env.WARMUP_SECONDS ?? 0.5);
const BULK_SECONDS = Number(process.env.BULK_SECONDS ?? 2);
const RR_SECONDS = Number(process.env.RR_SECONDS ?? 4);
const RR_RATE = Number(process.env.RR_RATE ?? 1000);
const RR_CONNECTIONS = Number(process.env.RR_CONNECTIONS ?? 10);
const RR_SIZE = Number(process.env.RR_SIZE ?? 1024);
const CONN_SECONDS = Number(process.env.CONN_SECONDS ?? 2);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 8);
const IDLE_CONNECTIONS = Number(process.env.IDLE_CONNECTIONS ?? 1000);
const PORT = 8080;

// Targets from the issue.
const TARGET_PER_CORE_OF_CEILING = 0.5;
const TARGET_VCPU_PER_1000_RPS = 0.1;
const TARGET_ADDED_P90_MS = 0.5;
const TARGET_RSS_MIB = 80;

type Mode = 'off' | 'on';
type Path = 'cross' | 'same';
const MODES: Mode[] = ['off', 'on'];
const PATHS: Path[] = ['cross', 'same'];
const NAMESPACE: Record<Mode, string> = { off: 'plain', on: 'mesh' };
const SERVER: Record<Path, string> = { cross: 'server-remote', same: 'server-local' };
const NODES = ['node-1', 'node-2'] as const;
/** The ztunnels a path crosses when the mesh is on. */
const ZTUNNELS: Record<Path, readonly string[]> = { cross: NODES, same: ['node-1'] };

interface Sample {
  bulkMBps: number;
  /** Cores per watched process during the bulk window: zt:node-1, zt:node-2, client, server. */
  bulkCores: Record<string, number>;
  rr: RrResult;
  rrCores: Record<string, number>;
  connRate: number;
  connCores: Record<string, number>;
}

const zt = (node: string): string => `zt:${node}`;
const sum = (cores: Record<string, number>, nodes: readonly string[]): number => nodes.reduce((a, n) => a + (cores[zt(n)] ?? 0), 0);

async function measure(lab: TestLab, path: Path, mode: Mode): Promise<Sample> {
  const client = lab.pod(`${NAMESPACE[mode]}/client`);
  const server = lab.pod(`${NAMESPACE[mode]}/${SERVER[path]}`);
  const netns = netnsPath(client.netns);
  // Pids are read afresh each time: a restarted component would otherwise be measured as idle.
  const ztunnels = labPids(lab.name, 'ztunnel');
  const workloads = labPids(lab.name, 'workloads');
  const meter = (): CpuMeter =>
    new CpuMeter({
      ...Object.fromEntries(NODES.map((n) => [zt(n), ztunnels.get(n)!])),
      client: 'self',
      server: workloads.get(server.node)!,
    });
  const b = await bulk(netns, server.ip, PORT, WARMUP_SECONDS * 1000, BULK_SECONDS, meter());
  const rr = await requestResponse(
    netns,
    server.ip,
    PORT,
    { rate: RR_RATE, seconds: RR_SECONDS, warmupSeconds: WARMUP_SECONDS, connections: RR_CONNECTIONS, size: RR_SIZE, expectPod: server.name },
    meter(),
  );
  const c = await connectionRate(netns, server.ip, PORT, CONN_SECONDS, CONCURRENCY, meter());
  return { bulkMBps: b.mbps, bulkCores: b.window.cores, rr, rrCores: rr.window.cores, connRate: c.rate, connCores: c.window.cores };
}

/** The agents' own record: mesh pods redirected, plain pods not. Otherwise "on" would measure "off". */
async function checkEnrollment(lab: TestLab): Promise<void> {
  await waitFor('mesh pods redirected, plain pods not', () =>
    lab.plan.pods.every((p: LabPodPlan) => {
      const enabled = lab.redirection(p.node)?.pods[p.key]?.state === 'enabled';
      return enabled === (p.namespace === NAMESPACE.on);
    }),
  );
}

function ztunnelMemory(lab: TestLab): Record<string, Memory> {
  const pids = labPids(lab.name, 'ztunnel');
  return Object.fromEntries(NODES.map((n) => [n, memory(pids.get(n)!)]));
}

// ---- output --------------------------------------------------------------------------------------

const f = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');

function table(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]! + 2) : c.padStart(widths[i]! + 2))).join(''));
}

const signed = (x: number, digits: number): string => `${x >= 0 ? '+' : ''}${f(x, digits)}`;

function verdict(ok: boolean): string {
  return ok ? 'met' : 'NOT met';
}

export async function main(): Promise<void> {
  const skip = privilegedSkipReason();
  if (skip) {
    console.log(`l4 benchmark skipped: ${skip}`);
    return;
  }
  const pki = makePki('bench-l4');
  const started = Date.now();
  const lab = await TestLab.up('bench-l4.yaml', 'bench-l4').catch((err: unknown) => {
    pki.close();
    throw err;
  });
  try {
    await checkEnrollment(lab);
    const td = lab.plan.trustDomain;
    const server = pki.credential(`spiffe://${td}/ns/bench/sa/tls-server`);
    const client = pki.credential(`spiffe://${td}/ns/bench/sa/tls-client`);
    const ceilingNetns = netnsPath(lab.pod(`${NAMESPACE.off}/client`).netns);

    console.log(
      `l4 benchmark: ${ROUNDS} rounds; bulk ${BULK_SECONDS} s; ${RR_SIZE} B request/response at ${RR_RATE} rps over ${RR_CONNECTIONS} connections for ${RR_SECONDS} s;` +
        ` new connections with ${CONCURRENCY} clients for ${CONN_SECONDS} s; ${WARMUP_SECONDS} s warm-up before each measured window`,
    );
    // First, on fresh ztunnels (before the rounds grow their heaps): RSS idle, then with
    // IDLE_CONNECTIONS open idle connections through the cross-node path (both ztunnels hold them).
    const idle = ztunnelMemory(lab);
    const cross = lab.pod(`${NAMESPACE.on}/${SERVER.cross}`);
    const sockets = await openIdle(netnsPath(lab.pod(`${NAMESPACE.on}/client`).netns), cross.ip, PORT, IDLE_CONNECTIONS);
    await new Promise((r) => setTimeout(r, 2000));
    const held = ztunnelMemory(lab);
    for (const s of sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 1000));

    const samples: Record<Path, Record<Mode, Sample[]>> = { cross: { off: [], on: [] }, same: { off: [], on: [] } };
    const ceilings: CeilingResult[] = [];
    const fabricCeilings: CeilingResult[] = [];
    // The same TLS pair across the path the cross-node tunnel takes (two plain pods on the two
    // nodes, not captured): what Node's TLS achieves when it also pays for veths and the bridge.
    const remote = lab.pod(`${NAMESPACE.off}/${SERVER.cross}`);
    for (let round = 1; round <= ROUNDS; round++) {
      ceilings.push(await tlsCeiling({ netns: ceilingNetns, server, client, roots: [pki.rootPem], warmupMs: WARMUP_SECONDS * 1000, seconds: BULK_SECONDS }));
      fabricCeilings.push(
        await tlsCeiling({ netns: ceilingNetns, sender: { netns: netnsPath(remote.netns), ip: remote.ip }, server, client, roots: [pki.rootPem], warmupMs: WARMUP_SECONDS * 1000, seconds: BULK_SECONDS }),
      );
      // Alternate which mode goes first, and which path, so neither always gets the warmer machine.
      const paths = round % 2 ? PATHS : [...PATHS].reverse();
      for (const path of paths) {
        const modes = (round + (path === 'same' ? 1 : 0)) % 2 ? MODES : [...MODES].reverse();
        for (const mode of modes) samples[path][mode].push(await measure(lab, path, mode));
      }
      const c = ceilings.at(-1)!;
      const line = PATHS.map((p) => {
        const s = (m: Mode) => samples[p][m].at(-1)!;
        return `${p}: bulk ${f(s('off').bulkMBps, 0)}/${f(s('on').bulkMBps, 0)} MB/s, p90 ${f(s('off').rr.p90, 3)}/${f(s('on').rr.p90, 3)} ms, ${f(s('off').connRate, 0)}/${f(s('on').connRate, 0)} conn/s`;
      });
      console.log(`  round ${round} (off/on): ${line.join(' | ')} | TLS ceiling ${f(c.mbps, 0)} MB/s`);
    }

    const after = ztunnelMemory(lab);
    report({ samples, ceilings, fabricCeilings, idle, held, after, seconds: (Date.now() - started) / 1000 });
  } finally {
    await lab.down();
    pki.close();
  }
}

interface Report {
  samples: Record<Path, Record<Mode, Sample[]>>;
  ceilings: CeilingResult[];
  fabricCeilings: CeilingResult[];
  idle: Record<string, Memory>;
  held: Record<string, Memory>;
  after: Record<string, Memory>;
  seconds: number;
}

function report({ samples, ceilings, fabricCeilings, idle, held, after, seconds }: Report): void {
  const med = (path: Path, mode: Mode, fn: (s: Sample) => number): number => median(samples[path][mode].map(fn));
  /** Median over rounds of a per-round on/off comparison (the rounds pair off and on in time). */
  const paired = (path: Path, fn: (on: Sample, off: Sample) => number): number =>
    median(samples[path].on.map((on, i) => fn(on, samples[path].off[i]!)));

  const ceiling = {
    mbps: median(ceilings.map((c) => c.mbps)),
    perCore: median(ceilings.map((c) => c.mbpsPerCore)),
    sender: median(ceilings.map((c) => c.senderCores)),
    receiver: median(ceilings.map((c) => c.receiverCores)),
  };
  /** ztunnel MB per CPU-second over the ztunnels the path crosses, per round. */
  const ztPerCore = (path: Path): number => med(path, 'on', (s) => s.bulkMBps / sum(s.bulkCores, ZTUNNELS[path]));
  const perThousand = (s: Sample, node: string): number => (s.rrCores[zt(node)] ?? NaN) / (s.rr.achievedRps / 1000);

  console.log('');
  console.log(`medians over ${ROUNDS} rounds; "on/off" and "added" are medians of the per-round comparisons`);
  const rows: string[][] = [['', 'cross off', 'cross on', 'on/off', 'same off', 'same on', 'on/off']];
  const row = (label: string, fn: (s: Sample) => number, digits: number, ratio: 'ratio' | 'diff' | 'none'): string[] => {
    const cells = [label];
    for (const p of PATHS) {
      cells.push(f(med(p, 'off', fn), digits), f(med(p, 'on', fn), digits));
      if (ratio === 'ratio') cells.push(f(paired(p, (on, off) => fn(on) / fn(off)), 2));
      else if (ratio === 'diff') cells.push(signed(paired(p, (on, off) => fn(on) - fn(off)), digits));
      else cells.push('');
    }
    return cells;
  };
  rows.push(row('bulk MB/s, one connection', (s) => s.bulkMBps, 0, 'ratio'));
  rows.push(row('  Gbit/s', (s) => (s.bulkMBps * 8) / 1000, 2, 'ratio'));
  rows.push(row('  ztunnel node-1 cores (client side)', (s) => s.bulkCores[zt('node-1')]!, 2, 'none'));
  rows.push(row('  ztunnel node-2 cores (server side)', (s) => s.bulkCores[zt('node-2')]!, 2, 'none'));
  rows.push(row('  client cores (this process)', (s) => s.bulkCores.client!, 2, 'none'));
  rows.push(row('  server cores (workloads process)', (s) => s.bulkCores.server!, 2, 'none'));
  rows.push(row(`${RR_SIZE} B rr @${RR_RATE} rps: p50 ms`, (s) => s.rr.p50, 3, 'diff'));
  rows.push(row('  p90 ms', (s) => s.rr.p90, 3, 'diff'));
  rows.push(row('  p99 ms', (s) => s.rr.p99, 3, 'diff'));
  rows.push(row('  achieved rps', (s) => s.rr.achievedRps, 0, 'none'));
  rows.push(row('  generator lateness p99 ms', (s) => s.rr.lagP99, 2, 'none'));
  rows.push(row('  lost replies', (s) => s.rr.lost, 0, 'none'));
  rows.push(row('  ztunnel node-1 vCPU per 1000 rps', (s) => perThousand(s, 'node-1'), 3, 'none'));
  rows.push(row('  ztunnel node-2 vCPU per 1000 rps', (s) => perThousand(s, 'node-2'), 3, 'none'));
  rows.push(row('  client cores (this process)', (s) => s.rrCores.client!, 2, 'none'));
  rows.push(row('new connections/s', (s) => s.connRate, 0, 'ratio'));
  rows.push(row('  ztunnel CPU ms per connection', (s) => (sum(s.connCores, NODES) / s.connRate) * 1000, 3, 'none'));
  rows.push(row('  client cores (this process)', (s) => s.connCores.client!, 2, 'none'));
  table(rows);

  const c0 = ceilings[0]!;
  console.log('');
  console.log(`TLS ceiling (${c0.protocol} ${c0.cipher}, mutual, one connection, sender and receiver in two processes, loopback of a lab namespace):`);
  console.log(
    `  ${f(ceiling.mbps, 0)} MB/s (${f((ceiling.mbps * 8) / 1000)} Gbit/s); sender ${f(ceiling.sender)} cores, receiver ${f(ceiling.receiver)} cores;` +
      ` ${f(ceiling.perCore, 0)} MB/s per core of CPU used (both ends)`,
  );
  const fabric = { mbps: median(fabricCeilings.map((c) => c.mbps)), perCore: median(fabricCeilings.map((c) => c.mbpsPerCore)) };
  console.log(`The same TLS pair across the fabric (plain pods on node-2 and node-1, not captured): ${f(fabric.mbps, 0)} MB/s; ${f(fabric.perCore, 0)} MB/s per core of CPU used (both ends)`);
  console.log(`ztunnel bulk MB/s per core of ztunnel CPU: cross ${f(ztPerCore('cross'), 0)} (2 ztunnels together), same ${f(ztPerCore('same'), 0)} (1 ztunnel)`);
  const ofFabric = median(samples.cross.on.map((s, i) => s.bulkMBps / sum(s.bulkCores, ZTUNNELS.cross) / fabricCeilings[i]!.mbpsPerCore));
  console.log(`  cross, per round against the TLS pair on the same path: ${f(ofFabric)} of its MB per CPU-second`);

  console.log('');
  console.log('ztunnel memory, MiB: RSS (of which anonymous; the rest is mostly the shared node binary)');
  const mem = (m: Memory): string => `${f(m.rssMiB, 1)} (${f(m.anonMiB, 1)})`;
  table([
    ['', 'node-1', 'node-2'],
    ['idle, after lab up', ...NODES.map((n) => mem(idle[n]!))],
    [`${IDLE_CONNECTIONS} open idle connections (cross-node)`, ...NODES.map((n) => mem(held[n]!))],
    ['  growth per connection, KiB', ...NODES.map((n) => f(((held[n]!.rssMiB - idle[n]!.rssMiB) * 1024) / IDLE_CONNECTIONS, 1))],
    ['after the rounds', ...NODES.map((n) => mem(after[n]!))],
    ['peak over the whole run (VmHWM)', ...NODES.map((n) => f(after[n]!.peakMiB, 1))],
  ]);

  // Per round, against the ceiling measured in the same round (the machine's load drifts).
  const ofCeiling = (path: Path): number =>
    median(samples[path].on.map((s, i) => s.bulkMBps / sum(s.bulkCores, ZTUNNELS[path]) / ceilings[i]!.mbpsPerCore));
  const ratioCross = ofCeiling('cross');
  const ratioSame = ofCeiling('same');
  const vcpu = Math.max(...NODES.map((n) => med('cross', 'on', (s) => perThousand(s, n))), med('same', 'on', (s) => perThousand(s, 'node-1')));
  const addedP90 = Math.max(...PATHS.map((p) => paired(p, (on, off) => on.rr.p90 - off.rr.p90)));
  const rss = Math.max(...NODES.map((n) => held[n]!.rssMiB));
  console.log('');
  console.log('targets:');
  console.log(`  ztunnel throughput per core >= ${TARGET_PER_CORE_OF_CEILING} x TLS ceiling per core (per round, then median): cross ${f(ratioCross)}, same ${f(ratioSame)}: ${verdict(Math.min(ratioCross, ratioSame) >= TARGET_PER_CORE_OF_CEILING)}`);
  console.log(`  <= ${TARGET_VCPU_PER_1000_RPS} vCPU per 1000 rps per ztunnel: worst ${f(vcpu, 3)}: ${verdict(vcpu <= TARGET_VCPU_PER_1000_RPS)}`);
  console.log(`  added p90 <= ${TARGET_ADDED_P90_MS} ms: worst ${signed(addedP90, 3)} ms: ${verdict(addedP90 <= TARGET_ADDED_P90_MS)}`);
  const anon = Math.max(...NODES.map((n) => held[n]!.anonMiB));
  console.log(`  RSS <= ${TARGET_RSS_MIB} MiB with ${IDLE_CONNECTIONS} open connections: largest ${f(rss, 1)} MiB (anonymous ${f(anon, 1)}): ${verdict(rss <= TARGET_RSS_MIB)}`);

  // The load generators must not be what limits the numbers.
  const lags = PATHS.flatMap((p) => MODES.flatMap((m) => samples[p][m].map((s) => s.rr.lagP99)));
  const clientBulkOff = max(PATHS.flatMap((p) => samples[p].off.map((s) => s.bulkCores.client!)));
  const clientBulkMax = max(PATHS.flatMap((p) => samples[p].on.map((s) => s.bulkCores.client!)));
  const lowOnBulk = PATHS.some((p) => med(p, 'on', (s) => sum(s.bulkCores, ZTUNNELS[p])) < 0.05);
  console.log('');
  console.log(
    `load generators: the client used at most ${f(clientBulkMax)} cores during mesh-on bulk (${f(clientBulkOff)} during mesh-off bulk);` +
      ` rr generator lateness p99 median ${f(median(lags))} ms, worst round ${f(max(lags))} ms;` +
      ` the same endpoints moved ${f(med('cross', 'off', (s) => s.bulkMBps) / med('cross', 'on', (s) => s.bulkMBps))}x more bulk with the mesh off (cross)`,
  );
  if (clientBulkOff > 0.9) console.log('note: mesh-off bulk reached a full core in the client (one Node event loop reading): "off" is what this client can read, a floor of what the kernel path carries');
  if (lowOnBulk) console.log('WARNING: the ztunnels used almost no CPU during mesh-on bulk: was the traffic captured at all?');
  console.log(`(run took ${f(seconds, 0)} s)`);
}
