// Where a lab keeps what it created. The state file is written as each resource is created, so a
// lab that failed half-way, or whose `up` process was killed, can still be removed completely.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_PLANE_STATUS_FILE } from '../mesh/config/sources/file.js';

export const LABS_DIR = process.env.AMBIT_LAB_DIR ?? '/var/lib/ambit/labs';
export const BPF_LABS_ROOT = '/sys/fs/bpf/ambit/lab';

export type Component = 'agent' | 'ztunnel' | 'workloads' | 'controlplane';
/** The `node` of lab-wide components (the control plane). */
export const LAB_WIDE = '-';

export interface ProcessRecord {
  component: Component;
  node: string;
  pid: number;
  log: string;
  /** The command line, to recognise the process before signalling a pid that may have been reused. */
  argv: string[];
  /** The address the component serves on, where it has one. */
  address?: string;
}

export interface LabState {
  name: string;
  source: string;
  phase: 'building' | 'ready' | 'failed';
  createdAt: string;
  /** Every network namespace created, in creation order. */
  netns: string[];
  /** /etc/netns/<name> directories written (per-namespace hosts files). */
  etcNetns: string[];
  bpfRoots: string[];
  processes: ProcessRecord[];
  error?: string;
}

export function labDir(name: string): string {
  return join(LABS_DIR, name);
}

export const paths = {
  state: (lab: string) => join(labDir(lab), 'state.json'),
  plan: (lab: string) => join(labDir(lab), 'plan.json'),
  podStatus: (lab: string) => join(labDir(lab), 'pods.json'),
  redirection: (lab: string, node: string) => join(labDir(lab), `redirection-${node}.json`),
  workloads: (lab: string, node: string) => join(labDir(lab), `workloads-${node}.json`),
  logs: (lab: string) => join(labDir(lab), 'logs'),
  /** Where a failed `up` leaves its logs (outside the state directory the rollback removes). */
  failedLogs: (lab: string) => join(LABS_DIR, `.failed-${lab}-logs`),
  log: (lab: string, component: Component, node: string) => join(labDir(lab), 'logs', component === 'controlplane' ? 'controlplane.log' : `${component}-${node}.log`),
  bpfRoot: (lab: string, node: string) => join(BPF_LABS_ROOT, lab, node),
  /** The control plane's state: root-cert.pem (the trust bundle) and credentials/<node>.token. */
  controlPlane: (lab: string) => join(labDir(lab), 'controlplane'),
  rootCert: (lab: string) => join(labDir(lab), 'controlplane', 'root-cert.pem'),
  /** Every AuthorizationPolicy's status as the control plane recorded it. */
  policyStatus: (lab: string) => join(labDir(lab), 'controlplane', CONTROL_PLANE_STATUS_FILE),
  nodeToken: (lab: string, node: string) => join(labDir(lab), 'controlplane', 'credentials', `${node}.token`),
  etcNetns: (netns: string) => join('/etc/netns', netns),
};

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

export function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return null;
  }
}

export function readState(name: string): LabState | null {
  return readJson<LabState>(paths.state(name));
}

export function saveState(state: LabState): void {
  mkdirSync(labDir(state.name), { recursive: true });
  writeJsonAtomic(paths.state(state.name), state);
}

/** Names of labs with a state directory. */
export function listLabs(): string[] {
  if (!existsSync(LABS_DIR)) return [];
  return readdirSync(LABS_DIR).filter((n) => existsSync(paths.state(n)));
}
