// Running the system tools the agent and the lab drive (ip, nft, nsenter, sysctl). Failures become
// CommandErrors carrying the tool's own stderr, which is usually the clearest explanation there is.
import { execFile, execFileSync } from 'node:child_process';
import { CommandError } from './errors.js';

export interface RunOptions {
  input?: string;
  /** Run inside this network namespace (a path such as /run/netns/X), through nsenter. */
  netns?: string;
  timeoutMs?: number;
}

function argv(cmd: string, args: string[], netns?: string): [string, string[]] {
  return netns ? ['nsenter', [`--net=${netns}`, '--', cmd, ...args]] : [cmd, args];
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const [file, fullArgs] = argv(cmd, args, opts.netns);
  return new Promise((resolve, reject) => {
    const child = execFile(file, fullArgs, { encoding: 'utf8', timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const code = typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null;
        reject(new CommandError([cmd, ...args].join(' '), code, stderr || err.message));
      } else {
        resolve(stdout);
      }
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export function runSync(cmd: string, args: string[], opts: RunOptions = {}): string {
  const [file, fullArgs] = argv(cmd, args, opts.netns);
  try {
    return execFileSync(file, fullArgs, { encoding: 'utf8', input: opts.input, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 30_000 });
  } catch (err) {
    const e = err as { status: number | null; stderr?: string; message: string };
    throw new CommandError([cmd, ...args].join(' '), e.status, e.stderr || e.message);
  }
}

/** `ip -j ...` parsed; `netns` selects the namespace by path. */
export async function ipJson<T>(args: string[], netns?: string): Promise<T[]> {
  const out = await run('ip', ['-j', ...args], { netns });
  return out.trim() ? (JSON.parse(out) as T[]) : [];
}

export interface IpLink {
  ifindex: number;
  ifname: string;
  address?: string;
  operstate?: string;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string };
}

export interface IpAddr {
  ifindex: number;
  ifname: string;
  addr_info: { family: string; local: string; prefixlen: number }[];
}

export interface IpRoute {
  dst: string;
  dev?: string;
  gateway?: string;
  type?: string;
  table?: string;
}
