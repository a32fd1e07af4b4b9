// What a benchmark reads about lab processes from /proc: CPU time (utime + stime of every thread,
// /proc/PID/stat) and memory (VmRSS, VmHWM from /proc/PID/status), and the pids themselves from the
// lab's state file, so a component restarted by `ambit lab restart` is still found.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { readState, type Component } from '../../../lab/state.js';

let clockTicks: number | undefined;
/** sysconf(_SC_CLK_TCK): the unit of utime and stime in /proc/PID/stat. */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU seconds used so far by a whole process (all its threads), user + system. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which may itself contain spaces and parentheses: the first of
  // `rest` is field 3 (state), so utime (field 14) is rest[11] and stime (15) is rest[12].
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / ticksPerSecond();
}

/** The pid and every descendant it has now (a ztunnel that forks helpers is measured whole). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number): void => {
    out.push(p);
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const t of tasks) {
      let children = '';
      try {
        children = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const c of children.split(' ').filter(Boolean)) visit(Number(c));
    }
  };
  visit(pid);
  return out;
}

/** CPU seconds of each process of the tree under `pid`, by pid. */
function treeCpu(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const p of processTree(pid)) {
    try {
      out.set(p, cpuSeconds(p));
    } catch {
      // Exited while we looked.
    }
  }
  return out;
}

export interface Memory {
  /** Resident set size now (VmRSS), MiB. */
  rssMiB: number;
  /** The anonymous part of the RSS (RssAnon: heap, stacks), MiB. The rest is mostly the
   * executable's pages (RssFile), which every process running the same binary shares. */
  anonMiB: number;
  /** The largest RSS the process ever had (VmHWM), MiB. */
  peakMiB: number;
}

/** Memory of a process and its descendants (summed: separate processes do not share a heap). */
export function memory(pid: number): Memory {
  let rssMiB = 0;
  let anonMiB = 0;
  let peakMiB = 0;
  for (const p of processTree(pid)) {
    const status = readFileSync(`/proc/${p}/status`, 'utf8');
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    rssMiB += kb('VmRSS') / 1024;
    anonMiB += kb('RssAnon') / 1024;
    peakMiB += kb('VmHWM') / 1024;
  }
  return { rssMiB, anonMiB, peakMiB };
}

/** The pids of a lab component by node, as the lab's state file records them now. */
export function labPids(lab: string, component: Component): Map<string, number> {
  const state = readState(lab);
  if (!state) throw new Error(`no state for lab ${lab}`);
  return new Map(state.processes.filter((p) => p.component === component).map((p) => [p.node, p.pid]));
}

/** `self` names this process; anything else is a pid. */
export type Watched = Record<string, number | 'self'>;

/**
 * Cores used by each watched process between start() and stop(): CPU seconds over wall seconds.
 * 1.0 is one core kept busy for the whole window.
 */
export class CpuMeter {
  private readonly watched: Watched;
  private startCpu = new Map<string, Map<number, number>>();
  private startWall = 0;

  constructor(watched: Watched) {
    this.watched = watched;
  }

  private sample(): Map<string, Map<number, number>> {
    const out = new Map<string, Map<number, number>>();
    for (const [name, pid] of Object.entries(this.watched)) {
      if (pid === 'self') {
        const u = process.cpuUsage();
        out.set(name, new Map([[process.pid, (u.user + u.system) / 1e6]]));
      } else {
        out.set(name, treeCpu(pid));
      }
    }
    return out;
  }

  start(): void {
    this.startCpu = this.sample();
    this.startWall = performance.now();
  }

  /**
   * Cores per watched process (with its descendants) over the window, and the window's length in
   * seconds. A descendant born during the window counts whole; one that died in it is missed.
   */
  stop(): { cores: Record<string, number>; seconds: number } {
    const end = this.sample();
    const seconds = (performance.now() - this.startWall) / 1000;
    const cores: Record<string, number> = {};
    for (const [name, pids] of end) {
      const before = this.startCpu.get(name) ?? new Map<number, number>();
      let used = 0;
      for (const [pid, cpu] of pids) used += cpu - (before.get(pid) ?? 0);
      cores[name] = used / seconds;
    }
    return { cores, seconds };
  }
}
