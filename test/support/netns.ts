// Throwaway network namespaces for tests. Every namespace a test creates is named with the test
// process's pid so that parallel runs never collide, and deleted in the test's `after` hook.
import { execFileSync } from 'node:child_process';

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

export class TestNetns {
  readonly name: string;
  readonly path: string;

  constructor(tag: string) {
    this.name = `ambit_test_${tag}_${process.pid}`;
    this.path = `/run/netns/${this.name}`;
    sh('ip', ['netns', 'add', this.name]);
    this.ip('link', 'set', 'lo', 'up');
  }

  ip(...args: string[]): string {
    return sh('ip', ['-n', this.name, ...args]);
  }

  json<T = Record<string, unknown>>(...args: string[]): T[] {
    return JSON.parse(sh('ip', ['-n', this.name, '-j', ...args])) as T[];
  }

  exec(cmd: string, ...args: string[]): string {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }

  delete(): void {
    try {
      sh('ip', ['netns', 'del', this.name]);
    } catch {
      // Already gone.
    }
  }
}
