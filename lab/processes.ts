// Starting and stopping the lab's long-lived processes. Each runs inside its own network namespace
// through `nsenter --net` (not `ip netns exec`, which remounts /sys and would hide the pins under
// /sys/fs/bpf), detached from the caller so that `lab up` can return.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PROJECT_ROOT } from '../native/index.js';
import type { Component, ProcessRecord } from './state.js';

export const CLI_MAIN = join(PROJECT_ROOT, 'dist/cli/main.js');

export interface StartOptions {
  component: Component;
  node: string;
  netns: string;
  args: string[];
  log: string;
  env?: Record<string, string>;
  address?: string;
}

export function startProcess(opts: StartOptions): ProcessRecord {
  mkdirSync(dirname(opts.log), { recursive: true });
  const fd = openSync(opts.log, 'a', 0o644);
  const argv = ['nsenter', `--net=${opts.netns}`, '--', process.execPath, CLI_MAIN, ...opts.args];
  try {
    const child = spawn(argv[0]!, argv.slice(1), {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, NODE_NAME: opts.node, ...opts.env },
    });
    child.unref();
    if (!child.pid) throw new Error(`could not start ${opts.component} for ${opts.node}`);
    return { component: opts.component, node: opts.node, pid: child.pid, log: opts.log, argv, ...(opts.address ? { address: opts.address } : {}) };
  } finally {
    closeSync(fd);
  }
}

/** True when `pid` is alive and still runs the command we started (pids get reused). */
let selfCmdline: string | undefined;
/** This process's command line as the kernel shows it (what a forked child shows until it execs). */
function ownCmdline(): string {
  selfCmdline ??= readFileSync('/proc/self/cmdline', 'utf8').split('\0').filter(Boolean).join('\0');
  return selfCmdline;
}

export function isOurs(rec: Pick<ProcessRecord, 'pid' | 'argv'>): boolean {
  try {
    const cmdline = readFileSync(`/proc/${rec.pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join('\0');
    // nsenter execs node, so the running command line is argv minus the nsenter prefix.
    const tail = rec.argv.slice(rec.argv.indexOf('--') + 1);
    const [state, ppid] = (readFileSync(`/proc/${rec.pid}/stat`, 'utf8').split(') ')[1] ?? '').split(' ');
    if (state === 'Z') return false;
    if (cmdline === tail.join('\0') || cmdline === rec.argv.join('\0')) return true;
    // Just spawned, not yet exec'd: the child still shows this process's own command line.
    return Number(ppid) === process.pid && cmdline === ownCmdline();
  } catch {
    return false;
  }
}

/**
 * True until the process has fully exited, sockets closed. Two traps: /proc/PID/cmdline empties
 * when a dying process releases its memory, before its files close; and a multi-threaded process
 * (Node is) shows its leader as a zombie while another thread may still be exiting and holding
 * the shared file table. Gone, or a zombie with no thread left but the leader, is exited.
 */
export function alive(pid: number): boolean {
  if (!existsSync(`/proc/${pid}`)) return false;
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    if (state !== 'Z') return true;
    return readdirSync(`/proc/${pid}/task`).length > 1;
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; each signal only while the pid still runs our command. */
export async function stopProcess(rec: Pick<ProcessRecord, 'pid' | 'argv'>, graceMs = 3000): Promise<void> {
  if (!isOurs(rec)) return;
  process.kill(rec.pid, 'SIGTERM');
  if (await exited(rec.pid, graceMs)) return;
  // An exiting process loses its cmdline before it is gone; one that is merely slow keeps it.
  if (isOurs(rec)) {
    try {
      process.kill(rec.pid, 'SIGKILL');
    } catch {
      // Exited between the check and the signal.
    }
  }
  await exited(rec.pid, 5000);
}

async function exited(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** Kills a pid found inside one of the lab's own namespaces (`ip netns pids`). */
export async function killPid(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await exited(pid, 2000);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The last lines of a log, for error messages about a component that died. */
export function logTail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
