// Stopping and restarting one component of a running lab: what a kubelet does when a container
// crashes, done on request (tests of agent restarts and ztunnel outages, and `ambit lab restart`).
import { LabNotFoundError } from '../mesh/errors.js';
import { loadPlan } from './status.js';
import { alive, isOurs, sleep, stopProcess } from './processes.js';
import { LAB_WIDE, readState, saveState, type Component, type ProcessRecord } from './state.js';
import { startAgentProcess, startControlPlaneProcess, startWorkloadsProcess, startZtunnelProcess } from './up.js';
import type { LabPlan } from './plan.js';

function record(lab: string, component: Component, node: string): { rec: ProcessRecord | undefined; save: (r: ProcessRecord) => void } {
  const state = readState(lab);
  if (!state) throw new LabNotFoundError(`no lab named '${lab}'`);
  const i = state.processes.findIndex((p) => p.component === component && p.node === node);
  return {
    rec: i >= 0 ? state.processes[i] : undefined,
    save: (r) => {
      if (i >= 0) state.processes[i] = r;
      else state.processes.push(r);
      saveState(state);
    },
  };
}

/** Kills a component with `signal` (SIGKILL: a crash) and waits until it is gone. */
export async function killComponent(lab: string, component: Component, node: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const { rec } = record(lab, component, node);
  if (!rec || !isOurs(rec)) return;
  if (signal === 'SIGTERM') return stopProcess(rec);
  process.kill(rec.pid, signal);
  while (alive(rec.pid)) await sleep(20);
}

export interface RestartOptions {
  /** Agent only: fail open instead of the lab's configured mode. */
  failOpen?: boolean;
}

/** Stops the component if it runs and starts it again; returns the new process. */
export async function restartComponent(lab: string, component: Component, node: string, opts: RestartOptions = {}): Promise<ProcessRecord> {
  const plan = loadPlan(lab);
  if (component !== 'controlplane' && !plan.nodes.some((x) => x.name === node)) throw new LabNotFoundError(`lab ${lab} has no node ${node}`);
  const { rec, save } = record(lab, component, component === 'controlplane' ? LAB_WIDE : node);
  if (rec) await stopProcess(rec);
  const next = start(plan, component, node, opts);
  save(next);
  return next;
}

function start(plan: LabPlan, component: Component, node: string, opts: RestartOptions): ProcessRecord {
  switch (component) {
    case 'controlplane':
      return startControlPlaneProcess(plan);
    case 'agent':
      return startAgentProcess(plan, node, opts.failOpen ?? plan.failMode === 'open');
    case 'ztunnel':
      return startZtunnelProcess(plan, node);
    case 'workloads':
      return startWorkloadsProcess(plan, node);
  }
}
