// The ceiling for the l4 benchmark: Node's own TLS 1.3 bulk rate on this machine, on one
// connection, one direction, with the TLS settings HBONE uses. Two processes, like the two ends of
// an HBONE tunnel: the sender is a child process (tls-sender.ts) and the receiver is this process;
// each has its own event loop and can have its own core, and each one's CPU is measured. Both ends
// are inside one lab network namespace and talk over its loopback: no traffic in the root
// namespace, and no veth or bridge cost, so this is the best case the mesh could approach.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { connectFrom } from '../../../lab/connect.js';
import { workloadTlsOptions, type WorkloadCredential } from '../../../mesh/hbone/tls.js';
import { CpuMeter } from './proc.js';
import { receiveFor } from './load.js';

const SENDER = fileURLToPath(new URL('./tls-sender.js', import.meta.url));

export interface CeilingResult {
  mbps: number;
  /** Cores used by the sender and by the receiver over the measured window. */
  senderCores: number;
  receiverCores: number;
  /** MB moved per CPU-second of both ends together: MB/s over (sender + receiver cores). */
  mbpsPerCore: number;
  /** The negotiated TLS version and cipher suite. */
  protocol: string;
  cipher: string;
}

export interface CeilingOptions {
  /** The path of the lab network namespace the receiver (this process's socket) lives in. */
  netns: string;
  /**
   * Where the sender runs and how the receiver reaches it: absent, the same namespace over its
   * loopback; else another pod's namespace, reached at `ip` across the lab's veths and fabric.
   */
  sender?: { netns: string; ip: string };
  server: WorkloadCredential;
  client: WorkloadCredential;
  roots: string[];
  warmupMs: number;
  seconds: number;
}

async function firstLine(child: ChildProcess): Promise<string> {
  let text = '';
  const stdout = child.stdout!;
  stdout.setEncoding('utf8');
  for await (const chunk of stdout) {
    text += chunk as string;
    const nl = text.indexOf('\n');
    if (nl !== -1) return text.slice(0, nl);
  }
  throw new Error(`the TLS sender exited before listening (code ${child.exitCode})`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

export async function tlsCeiling(opts: CeilingOptions): Promise<CeilingResult> {
  const child = spawn('nsenter', [`--net=${opts.sender?.netns ?? opts.netns}`, '--', process.execPath, SENDER], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    child.stdin!.end(JSON.stringify({ cred: opts.server, roots: opts.roots, host: opts.sender ? '0.0.0.0' : '127.0.0.1' }));
    const { port } = JSON.parse(await firstLine(child)) as { port: number };
    const raw = await connectFrom(opts.netns, opts.sender?.ip ?? '127.0.0.1', port, { timeoutMs: 5000 });
    // The server's certificate carries only a SPIFFE URI: the chain is checked against the root,
    // the name check (which wants a DNS name) is not what HBONE does either.
    const socket = tls.connect({ socket: raw, ...workloadTlsOptions(opts.client, opts.roots), checkServerIdentity: () => undefined });
    await once(socket, 'secureConnect');
    const cipher = socket.getCipher();
    const protocol = socket.getProtocol() ?? '?';
    const meter = new CpuMeter({ sender: child.pid!, receiver: 'self' });
    const { bytes, window } = await receiveFor(socket, opts.warmupMs, opts.seconds, meter);
    const mbps = bytes / 1e6 / window.seconds;
    const senderCores = window.cores.sender!;
    const receiverCores = window.cores.receiver!;
    return { mbps, senderCores, receiverCores, mbpsPerCore: mbps / (senderCores + receiverCores), protocol, cipher: cipher.standardName ?? cipher.name };
  } finally {
    await stopChild(child);
  }
}
