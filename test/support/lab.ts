// A real lab for a test file: built once from a fixture (copied, so tests can edit it), shared by
// the file's tests, removed in `after`. Clients connect from inside pod namespaces.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { labUp } from '../../lab/up.js';
import { labDown } from '../../lab/down.js';
import type { LabPlan, LabPodPlan } from '../../lab/plan.js';
import { connectFrom } from '../../lab/connect.js';
import { netnsPath } from '../../lab/topology.js';
import { paths, readJson } from '../../lab/state.js';
import type { EchoReply } from '../../lab/echo.js';
import type { RedirectionRecord } from '../../mesh/config/sources/file.js';

export const FIXTURES = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', 'test', 'fixtures');

export class TestLab {
  readonly plan: LabPlan;
  readonly file: string;
  private readonly dir: string;

  private constructor(plan: LabPlan, file: string, dir: string) {
    this.plan = plan;
    this.file = file;
    this.dir = dir;
  }

  /** Copies `fixture` under a new lab name and brings it up. */
  static async up(fixture: string, name: string): Promise<TestLab> {
    const dir = mkdtempSync(join(tmpdir(), `ambit-${name}-`));
    const file = join(dir, 'lab.yaml');
    const text = readFileSync(join(FIXTURES, fixture), 'utf8').replace(/^(kind: Lab\nmetadata:\n\s+name: )\S+/m, `$1${name}`);
    writeFileSync(file, text);
    await labDown(name); // a previous, interrupted run of this file
    const plan = await labUp({ file });
    return new TestLab(plan, file, dir);
  }

  get name(): string {
    return this.plan.name;
  }

  pod(key: string): LabPodPlan {
    const p = this.plan.pods.find((x) => x.key === key);
    if (!p) throw new Error(`no pod ${key} in the lab`);
    return p;
  }

  /** Edits the lab file as a user would (the agents watch it). */
  editFile(edit: (text: string) => string): void {
    const text = readFileSync(this.file, 'utf8');
    const next = edit(text);
    if (next === text) throw new Error('the edit changed nothing');
    writeFileSync(this.file, next);
  }

  redirection(node: string): RedirectionRecord | null {
    return readJson<RedirectionRecord>(paths.redirection(this.name, node));
  }

  accessLog(node: string): Record<string, string>[] {
    return readFileSync(paths.log(this.name, 'ztunnel', node), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"target":"access"'))
      .map((l) => JSON.parse(l) as Record<string, string>);
  }

  log(component: 'agent' | 'ztunnel' | 'workloads', node: string): string {
    return readFileSync(paths.log(this.name, component, node), 'utf8');
  }

  async down(): Promise<void> {
    await labDown(this.name);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A raw TCP connection to a lab echo port from inside a pod: the echo's identity line, then echo. */
export class EchoConnection {
  readonly socket: net.Socket;
  readonly identity: EchoReply;
  readonly local: string;
  private buffered = '';

  private constructor(socket: net.Socket, identity: EchoReply, rest: string) {
    this.socket = socket;
    this.identity = identity;
    this.local = `${socket.localAddress}:${socket.localPort}`;
    this.buffered = rest;
  }

  static async open(from: LabPodPlan, host: string, port: number, timeoutMs = 3000): Promise<EchoConnection> {
    const socket = await connectFrom(netnsPath(from.netns), host, port, { timeoutMs });
    socket.setEncoding('utf8');
    socket.write('hello\n');
    let text = '';
    const deadline = setTimeout(() => socket.destroy(new Error(`no echo identity from ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    try {
      while (!text.includes('\n')) {
        const [chunk] = (await once(socket, 'data')) as [string];
        text += chunk;
      }
    } finally {
      clearTimeout(deadline);
    }
    const nl = text.indexOf('\n');
    return new EchoConnection(socket, JSON.parse(text.slice(0, nl)) as EchoReply, text.slice(nl + 1));
  }

  /** Sends a line and resolves when it has come back: the connection still works end to end. */
  async roundTrip(line: string, timeoutMs = 3000): Promise<void> {
    this.socket.write(`${line}\n`);
    const deadline = Date.now() + timeoutMs;
    while (!this.buffered.includes(`${line}\n`)) {
      if (this.socket.destroyed) throw new Error(`connection closed before '${line}' came back`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`'${line}' did not come back within ${timeoutMs} ms`);
      const chunk = await Promise.race([
        once(this.socket, 'data').then(([c]) => c as string),
        once(this.socket, 'close').then(() => ''),
        new Promise<string>((r) => setTimeout(() => r(''), left)),
      ]);
      this.buffered += chunk;
    }
    this.buffered = this.buffered.slice(this.buffered.indexOf(`${line}\n`) + line.length + 1);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The address part of `ip:port`. */
export function ipOf(endpoint: string): string {
  return endpoint.slice(0, endpoint.lastIndexOf(':'));
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
