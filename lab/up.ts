// `ambit lab up`: a real multi-node cluster out of network namespaces, from a file of Kubernetes
// YAML plus a Lab document. Returns only when every process is up and every enrolled pod is
// redirected; a failure at any step removes everything created so far.
import { resolve } from 'node:path';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { ensureBpffs } from '../agent/redirection/bpffs.js';
import { isEnrolled } from '../mesh/enrollment.js';
import { AmbitError, LabExistsError, NotRootError, TimeoutError, errorMessage } from '../mesh/errors.js';
import { loadManifests } from '../mesh/k8s/manifest.js';
import type { Namespace } from '../mesh/k8s/types.js';
import { httpGetFrom } from './connect.js';
import { labDown, labExists } from './down.js';
import { planLab, type LabPlan } from './plan.js';
import { isOurs, logTail, sleep, startProcess } from './processes.js';
import { LABS_DIR, paths, readJson, saveState, writeJsonAtomic, type LabState, type ProcessRecord } from './state.js';
import { buildNetwork, createNamespaces, netnsPath, writeHostsFiles } from './topology.js';
import type { RedirectionRecord } from '../agent/sources/file.js';

export interface UpOptions {
  file: string;
  replace?: boolean;
  timeoutMs?: number;
  /** Progress lines for the CLI. */
  progress?: (line: string) => void;
}

export class LabUpError extends AmbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AMBIT_LAB_UP_FAILED', message, options);
  }
}

export function planFromFile(file: string): LabPlan {
  const source = resolve(file);
  return planLab(loadManifests([source]), source);
}

export async function labUp(opts: UpOptions): Promise<LabPlan> {
  if (process.getuid?.() !== 0) throw new NotRootError('ambit lab up');
  // Everything that can be wrong with the file is found here, before anything is created.
  const plan = planFromFile(opts.file);
  const say = opts.progress ?? (() => {});
  if (await labExists(plan.name)) {
    if (!opts.replace) throw new LabExistsError(plan.name);
    say(`replacing lab ${plan.name}`);
    await labDown(plan.name);
  }
  ensureBpffs();

  const state: LabState = {
    name: plan.name,
    source: plan.source,
    phase: 'building',
    createdAt: new Date().toISOString(),
    netns: [],
    etcNetns: [],
    bpfRoots: [],
    processes: [],
  };
  const save = () => saveState(state);
  save();
  try {
    say(`creating ${plan.nodes.length} nodes and ${plan.pods.length} pods`);
    await createNamespaces(plan, state, save);
    await buildNetwork(plan);
    writeHostsFiles(plan, state, save);
    mkdirSync(paths.logs(plan.name), { recursive: true });
    writeJsonAtomic(paths.plan(plan.name), plan);
    writeJsonAtomic(paths.podStatus(plan.name), {
      pods: Object.fromEntries(plan.pods.map((p) => [p.key, { nodeName: p.node, podIP: p.ip }])),
    });
    say('starting ztunnels, workloads and agents');
    for (const node of plan.nodes) startNode(plan, node.name, state);
    save();
    await waitReady(plan, state, opts.timeoutMs ?? 60_000);
    state.phase = 'ready';
    save();
    return plan;
  } catch (err) {
    state.phase = 'failed';
    state.error = errorMessage(err);
    save();
    say('failed; rolling back');
    const kept = keepLogs(plan.name);
    await labDown(plan.name).catch(() => {});
    throw new LabUpError(`lab ${plan.name} failed to come up and was rolled back: ${errorMessage(err)}${kept ? `\n(logs kept in ${kept})` : ''}`, { cause: err });
  }
}

function agentArgs(plan: LabPlan, node: string, failOpen: boolean): string[] {
  const n = plan.nodes.find((x) => x.name === node)!;
  return [
    'agent',
    '--node', node,
    '--config', plan.source,
    '--pod-status', paths.podStatus(plan.name),
    '--status-file', paths.redirection(plan.name, node),
    '--bpf-root', paths.bpfRoot(plan.name, node),
    '--ztunnel-netns', netnsPath(n.ztunnelNetns),
    ...(failOpen ? ['--fail-open'] : []),
  ];
}

function startNode(plan: LabPlan, node: string, state: LabState): void {
  const n = plan.nodes.find((x) => x.name === node)!;
  state.bpfRoots.push(paths.bpfRoot(plan.name, node));
  state.processes.push(
    startProcess({ component: 'ztunnel', node, netns: netnsPath(n.ztunnelNetns), args: ['ztunnel', '--node', node], log: paths.log(plan.name, 'ztunnel', node), address: n.ztunnelIP }),
    startProcess({ component: 'workloads', node, netns: netnsPath(n.netns), args: ['lab', 'workloads', '--lab', plan.name, '--node', node], log: paths.log(plan.name, 'workloads', node) }),
    startAgentProcess(plan, node, plan.failMode === 'open'),
  );
}

export function startAgentProcess(plan: LabPlan, node: string, failOpen: boolean): ProcessRecord {
  const n = plan.nodes.find((x) => x.name === node)!;
  return startProcess({
    component: 'agent',
    node,
    netns: netnsPath(n.netns),
    args: agentArgs(plan, node, failOpen),
    log: paths.log(plan.name, 'agent', node),
    address: n.fabricIP,
  });
}

/** Enrolled pods of a node, by the file as it is now. */
export function enrolledPods(plan: LabPlan, node: string): string[] {
  const namespaces = new Map<string, Namespace>(plan.namespaces.map((ns) => [ns.metadata.name, ns]));
  return plan.pods.filter((p) => p.node === node && isEnrolled(p.pod, namespaces.get(p.namespace))).map((p) => p.key);
}

/** What is still missing before the node counts as ready; empty when it is. */
export async function nodePending(plan: LabPlan, node: string, procs: ProcessRecord[]): Promise<string[]> {
  const n = plan.nodes.find((x) => x.name === node)!;
  const pending: string[] = [];
  for (const p of procs.filter((x) => x.node === node)) {
    if (!isOurs(p)) throw new LabUpError(`the ${p.component} of ${node} (pid ${p.pid}) exited:\n${logTail(p.log)}`);
  }
  const ready = await httpGetFrom(netnsPath(n.netns), n.ztunnelIP, 15021, '/healthz/ready', 1000).catch(() => null);
  if (ready?.status !== 200) pending.push(`ztunnel on ${node} not ready`);
  if (!readJson<{ ready?: boolean }>(paths.workloads(plan.name, node))?.ready) pending.push(`workloads on ${node} not listening`);
  const record = readJson<RedirectionRecord>(paths.redirection(plan.name, node));
  for (const key of enrolledPods(plan, node)) {
    if (record?.pods[key]?.state !== 'enabled') pending.push(`pod ${key} not redirected (${record?.pods[key]?.state ?? 'no state yet'})`);
  }
  return pending;
}

async function waitReady(plan: LabPlan, state: LabState, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending: string[] = [];
  while (Date.now() < deadline) {
    pending = (await Promise.all(plan.nodes.map((n) => nodePending(plan, n.name, state.processes)))).flat();
    if (pending.length === 0) return;
    await sleep(200);
  }
  throw new TimeoutError(`not ready after ${Math.round(timeoutMs / 1000)} s: ${pending.join('; ')}`);
}

/** Moves a failed lab's logs out of its state directory (which the rollback removes). */
function keepLogs(name: string): string | null {
  const from = paths.logs(name);
  if (!existsSync(from)) return null;
  const to = resolve(LABS_DIR, `.failed-${name}-logs`);
  rmSync(to, { recursive: true, force: true });
  renameSync(from, to);
  return to;
}
