// Removes a lab completely: its processes, pinned eBPF state, namespaces, hosts files and state.
// Works from whatever the state file recorded and, beyond it, from the lab's naming prefix, so a lab
// whose `up` was interrupted anywhere is still removed without a trace.
import { existsSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Datapath } from '../agent/redirection/datapath.js';
import { run } from '../mesh/exec.js';
import { BPF_LABS_ROOT, labDir, paths, readState } from './state.js';
import { killPid, stopProcess } from './processes.js';
import { netnsName } from './plan.js';

export interface DownResult {
  processes: number;
  namespaces: number;
  links: number;
}

async function labNamespaces(name: string, recorded: string[]): Promise<string[]> {
  const prefix = `${netnsName(name)}_`;
  const out = await run('ip', ['netns', 'list']);
  const listed = out
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(prefix));
  return [...new Set([...recorded, ...listed])];
}

function removeIfEmpty(dir: string): void {
  try {
    if (existsSync(dir) && readdirSync(dir).length === 0) rmdirSync(dir);
  } catch {
    // Someone else's pins appeared meanwhile; leave the directory.
  }
}

export interface DownOptions {
  /** Keep the logs a failed `up` set aside (the rollback itself passes this). */
  keepFailedLogs?: boolean;
}

export async function labDown(name: string, opts: DownOptions = {}): Promise<DownResult> {
  const state = readState(name);
  const result: DownResult = { processes: 0, namespaces: 0, links: 0 };

  for (const proc of state?.processes ?? []) {
    await stopProcess(proc);
    result.processes++;
  }
  const namespaces = await labNamespaces(name, state?.netns ?? []);
  // Anything still running inside the lab's namespaces was started in the lab (`lab exec`).
  for (const ns of namespaces) {
    const pids = await run('ip', ['netns', 'pids', ns]).catch(() => '');
    for (const pid of pids.split('\n').filter(Boolean)) await killPid(Number(pid));
  }

  const bpfLab = join(BPF_LABS_ROOT, name);
  const roots = new Set(state?.bpfRoots ?? []);
  if (existsSync(bpfLab)) for (const node of readdirSync(bpfLab)) roots.add(join(bpfLab, node));
  for (const root of roots) result.links += Datapath.destroy(root);
  rmSync(bpfLab, { recursive: true, force: true });
  removeIfEmpty(BPF_LABS_ROOT);
  removeIfEmpty(dirname(BPF_LABS_ROOT));

  for (const ns of namespaces) {
    await run('ip', ['netns', 'del', ns]).catch(() => '');
    rmSync(paths.etcNetns(ns), { recursive: true, force: true });
    result.namespaces++;
  }
  for (const ns of state?.etcNetns ?? []) rmSync(paths.etcNetns(ns), { recursive: true, force: true });
  rmSync(labDir(name), { recursive: true, force: true });
  if (!opts.keepFailedLogs) rmSync(paths.failedLogs(name), { recursive: true, force: true });
  return result;
}

/** True when anything of the lab exists: state, a namespace or pins. */
export async function labExists(name: string): Promise<boolean> {
  if (readState(name)) return true;
  if (existsSync(join(BPF_LABS_ROOT, name))) return true;
  return (await labNamespaces(name, [])).length > 0;
}
