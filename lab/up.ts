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
import { labDown, labExists } from './down.js';
import { planLab, type LabPlan } from './plan.js';
import { alive, logTail, sleep, startProcess } from './processes.js';
import { LABS_DIR, LAB_WIDE, labDir, paths, readJson, saveState, writeJsonAtomic, type LabState, type ProcessRecord } from './state.js';
import { httpGetFrom } from './connect.js';
import { GRPC_PORT, HEALTH_PORT } from '../controlplane/controlplane.js';
import { nodeIdentities } from '../agent/identity/node-identities.js';
import { identityUri } from '../mesh/identity/spiffe.js';
import { ADMIN_PORT, type ConfigDump } from '../agent/ztunnel/admin.js';
import { buildNetwork, createNamespaces, netnsPath, writeHostsFiles, ztunnelReady } from './topology.js';
import type { PlacementFile, RedirectionRecord } from '../mesh/config/sources/file.js';

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
  claim(plan.name);
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
  // Ctrl-C or a SIGTERM while building must not leave half a lab: stop at the next step and roll back.
  const interrupted = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => interrupted.abort(new LabUpError(`interrupted by ${signal}`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const step = () => interrupted.signal.throwIfAborted();
  try {
    say(`creating ${plan.nodes.length} nodes and ${plan.pods.length} pods`);
    await createNamespaces(plan, state, save);
    step();
    await buildNetwork(plan);
    step();
    writeHostsFiles(plan, state, save);
    mkdirSync(paths.logs(plan.name), { recursive: true });
    writeJsonAtomic(paths.plan(plan.name), plan);
    writeJsonAtomic(paths.podStatus(plan.name), placementFile(plan));
    say('starting the control plane');
    step();
    state.processes.push(startControlPlaneProcess(plan));
    save();
    await waitControlPlane(plan, state, opts.timeoutMs ?? 60_000, step);
    say('starting ztunnels, workloads and agents');
    for (const node of plan.nodes) startNode(plan, node.name, state);
    save();
    await waitReady(plan, state, opts.timeoutMs ?? 60_000, step);
    state.phase = 'ready';
    save();
    return plan;
  } catch (err) {
    state.phase = 'failed';
    state.error = errorMessage(err);
    save();
    say('failed; rolling back');
    let kept: string | null = null;
    try {
      kept = keepLogs(plan.name);
    } catch {
      // Losing the logs must not stop the rollback.
    }
    await labDown(plan.name, { keepFailedLogs: true }).catch(() => {});
    throw new LabUpError(`lab ${plan.name} failed to come up and was rolled back: ${errorMessage(err)}${kept ? `\n(logs kept in ${kept})` : ''}`, { cause: err });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Takes the lab's name for this run: the state directory is created exclusively, so of two
 * concurrent `up`s of one name exactly one proceeds, and the other rolls nothing back. */
function claim(name: string): void {
  mkdirSync(LABS_DIR, { recursive: true });
  try {
    mkdirSync(labDir(name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new LabExistsError(name);
    throw err;
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

/** What a kubelet, the CNI and the service IP allocator would report: where each pod runs, its address, each service's cluster IP. */
export function placementFile(plan: LabPlan): PlacementFile {
  return {
    pods: Object.fromEntries(plan.pods.map((p) => [p.key, { nodeName: p.node, podIP: p.ip }])),
    services: Object.fromEntries(plan.services.flatMap((s) => (s.vip === null ? [] : [[s.key, { clusterIP: s.vip }]]))),
  };
}

export function startControlPlaneProcess(plan: LabPlan): ProcessRecord {
  return startProcess({
    component: 'controlplane',
    node: LAB_WIDE,
    netns: netnsPath(plan.controlPlane.netns),
    args: [
      'controlplane',
      '--config', plan.source,
      '--pod-status', paths.podStatus(plan.name),
      '--redirection-status', ...plan.nodes.map((n) => paths.redirection(plan.name, n.name)),
      '--state-dir', paths.controlPlane(plan.name),
      '--trust-domain', plan.trustDomain,
      '--serving-ip', plan.controlPlane.ip,
      '--node-credentials', ...plan.nodes.map((n) => n.name),
    ],
    log: paths.log(plan.name, 'controlplane', LAB_WIDE),
    address: plan.controlPlane.ip,
  });
}

export function startZtunnelProcess(plan: LabPlan, node: string): ProcessRecord {
  const n = plan.nodes.find((x) => x.name === node)!;
  return startProcess({
    component: 'ztunnel',
    node,
    netns: netnsPath(n.ztunnelNetns),
    args: [
      'ztunnel',
      '--node', node,
      '--ca-address', `${plan.controlPlane.ip}:${GRPC_PORT}`,
      '--ca-root', paths.rootCert(plan.name),
      '--token-file', paths.nodeToken(plan.name, node),
      '--trust-domain', plan.trustDomain,
      '--config', plan.source,
      '--pod-status', paths.podStatus(plan.name),
      '--workers', String(plan.lab.spec.ztunnelWorkers),
    ],
    log: paths.log(plan.name, 'ztunnel', node),
    address: n.ztunnelIP,
  });
}

async function waitControlPlane(plan: LabPlan, state: LabState, timeoutMs: number, step: () => void): Promise<void> {
  const cp = state.processes.find((p) => p.component === 'controlplane')!;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    step();
    if (!alive(cp.pid)) throw new LabUpError(`the control plane (pid ${cp.pid}) exited:\n${logTail(cp.log)}`);
    const r = await httpGetFrom(netnsPath(plan.controlPlane.netns), plan.controlPlane.ip, HEALTH_PORT, '/ready', 1000).catch(() => null);
    if (r?.status === 200) return;
    await sleep(100);
  }
  throw new TimeoutError(`the control plane was not ready after ${timeoutMs / 1000} s:\n${logTail(cp.log)}`);
}

export function startWorkloadsProcess(plan: LabPlan, node: string): ProcessRecord {
  const n = plan.nodes.find((x) => x.name === node)!;
  return startProcess({ component: 'workloads', node, netns: netnsPath(n.netns), args: ['lab', 'workloads', '--lab', plan.name, '--node', node], log: paths.log(plan.name, 'workloads', node) });
}

function startNode(plan: LabPlan, node: string, state: LabState): void {
  state.bpfRoots.push(paths.bpfRoot(plan.name, node));
  state.processes.push(
    startZtunnelProcess(plan, node),
    startWorkloadsProcess(plan, node),
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

/** What the node's ztunnel lacks: certificates for its enrolled identities, the initial xDS state. */
async function ztunnelMissing(plan: LabPlan, node: string): Promise<string[]> {
  const n = plan.nodes.find((x) => x.name === node)!;
  const view = { namespaces: new Map(plan.namespaces.map((ns) => [ns.metadata.name, ns])), pods: plan.pods.filter((p) => p.node === node).map((p) => p.pod) };
  const want = nodeIdentities(view, plan.trustDomain).map(identityUri);
  const r = await httpGetFrom(netnsPath(n.ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump', 1000).catch(() => null);
  const dump = r?.status === 200 ? (JSON.parse(r.body) as ConfigDump) : undefined;
  const held = new Set((dump?.certificates ?? []).filter((c) => c.state === 'Available').map((c) => c.identity));
  const missing = want.filter((id) => !held.has(id)).map((id) => `ztunnel on ${node} holds no certificate for ${id}`);
  if (!dump?.xds?.ready) missing.push(`ztunnel on ${node} has no initial xDS state${dump?.xds?.lastError ? ` (${dump.xds.lastError})` : ''}`);
  return missing;
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
    // alive(), not isOurs(): a just-spawned child's command line is in flux while it execs.
    if (!alive(p.pid)) throw new LabUpError(`the ${p.component} of ${node} (pid ${p.pid}) exited:\n${logTail(p.log)}`);
  }
  if (!(await ztunnelReady(n))) pending.push(`ztunnel on ${node} not ready`);
  if (!readJson<{ ready?: boolean }>(paths.workloads(plan.name, node))?.ready) pending.push(`workloads on ${node} not listening`);
  pending.push(...(await ztunnelMissing(plan, node)));
  const record = readJson<RedirectionRecord>(paths.redirection(plan.name, node));
  for (const key of enrolledPods(plan, node)) {
    if (record?.pods[key]?.state !== 'enabled') pending.push(`pod ${key} not redirected (${record?.pods[key]?.state ?? 'no state yet'})`);
  }
  return pending;
}

async function waitReady(plan: LabPlan, state: LabState, timeoutMs: number, step: () => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending: string[] = [];
  while (Date.now() < deadline) {
    step();
    pending = (await Promise.all(plan.nodes.map((n) => nodePending(plan, n.name, state.processes)))).flat();
    if (pending.length === 0) return;
    await sleep(200);
  }
  throw new TimeoutError(`not ready after ${timeoutMs / 1000} s: ${pending.join('; ')}`);
}

/** Moves a failed lab's logs out of its state directory (which the rollback removes). */
function keepLogs(name: string): string | null {
  const from = paths.logs(name);
  if (!existsSync(from)) return null;
  const to = paths.failedLogs(name);
  rmSync(to, { recursive: true, force: true });
  renameSync(from, to);
  return to;
}
