import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { CommandError } from '../../mesh/errors.js';

export const BPFFS = '/sys/fs/bpf';

/** True when a bpf filesystem is mounted at `path` (pins need one). */
export function bpffsMounted(path = BPFFS): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => {
      const [, mountPoint, type] = line.split(' ');
      return mountPoint === path && type === 'bpf';
    });
}

/** Mounts bpffs at `path` when nothing is mounted there, as Cilium's and Istio's agents do. */
export function ensureBpffs(path = BPFFS): 'present' | 'mounted' {
  if (bpffsMounted(path)) return 'present';
  try {
    execFileSync('mount', ['-t', 'bpf', 'bpf', path], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as { status: number | null; stderr?: Buffer };
    throw new CommandError(`mount -t bpf bpf ${path}`, e.status, e.stderr?.toString() ?? '');
  }
  return 'mounted';
}
