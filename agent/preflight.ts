// Preflight checks for a node: can Ambit's agent run here? Each check is a real probe where one is
// possible (the eBPF object is loaded and a tcx link attached in a throwaway namespace), and each
// failure carries the fix, in the manner of `linkerd check`.
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { spawnSync } from 'node:child_process';
import { BPF_OBJECT_PATH, LIBRARY_PATH, bpfLoad, closeFd, probeTcx } from '../native/index.js';
import { bpffsMounted } from './redirection/bpffs.js';
import { errorMessage } from '../mesh/errors.js';

export interface CheckResult {
  id: string;
  ok: boolean;
  message: string;
  hint?: string;
}

const MIN_KERNEL: [number, number] = [6, 6];

function kernelVersion(): [number, number] {
  const [a = 0, b = 0] = release().split('.').map((x) => parseInt(x, 10));
  return [a, b];
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Effective capabilities of this process, from /proc/self/status. */
function effectiveCaps(): bigint {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('CapEff:'));
  return line ? BigInt(`0x${line.split(/\s+/)[1]}`) : 0n;
}

const CAPS: [string, number][] = [
  ['CAP_NET_ADMIN', 12],
  ['CAP_SYS_ADMIN', 21],
  ['CAP_BPF', 39],
];

function tool(id: string, cmd: string, pkg: string, why: string): CheckResult {
  const ok = has(cmd);
  return { id, ok, message: ok ? `${cmd} (${why})` : `${cmd} not found (${why})`, hint: `apt-get install ${pkg}` };
}

export function runPreflight(): CheckResult[] {
  const results: CheckResult[] = [];
  const [maj, min] = kernelVersion();
  const kernelOk = maj > MIN_KERNEL[0] || (maj === MIN_KERNEL[0] && min >= MIN_KERNEL[1]);
  results.push({
    id: 'kernel',
    ok: kernelOk,
    message: `kernel ${release()} (>= ${MIN_KERNEL.join('.')} needed for tcx links)`,
    hint: 'upgrade the node kernel to 6.6 or newer',
  });
  results.push({
    id: 'btf',
    ok: existsSync('/sys/kernel/btf/vmlinux'),
    message: 'kernel BTF at /sys/kernel/btf/vmlinux',
    hint: 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y',
  });
  const bpffs = bpffsMounted();
  results.push({
    id: 'bpffs',
    ok: bpffs,
    message: bpffs ? 'bpffs mounted at /sys/fs/bpf' : 'bpffs not mounted at /sys/fs/bpf (the agent mounts it when it runs as root)',
    hint: 'mount -t bpf bpf /sys/fs/bpf',
  });
  const cgroup2 = readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[2] === 'cgroup2');
  results.push({ id: 'cgroup2', ok: cgroup2, message: 'cgroup v2 mounted', hint: 'mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)' });
  const caps = effectiveCaps();
  const missing = CAPS.filter(([, bit]) => (caps & (1n << BigInt(bit))) === 0n).map(([name]) => name);
  results.push({
    id: 'capabilities',
    ok: missing.length === 0,
    message: missing.length ? `missing ${missing.join(', ')}` : `capabilities ${CAPS.map(([n]) => n).join(', ')}`,
    hint: 'run as root, or grant the agent NET_ADMIN, SYS_ADMIN and BPF (privileged DaemonSet)',
  });
  results.push(tool('tool-clang', 'clang', 'clang', 'builds bpf/'));
  results.push({ id: 'tool-libbpf', ok: existsSync('/usr/include/bpf/libbpf.h'), message: 'libbpf headers (builds native/)', hint: 'apt-get install libbpf-dev' });
  results.push(tool('tool-cc', 'cc', 'gcc', 'builds native/'));
  results.push(tool('tool-ip', 'ip', 'iproute2', 'the agent and the lab'));
  results.push(tool('tool-nft', 'nft', 'nftables', "the lab's kube-proxy"));
  results.push(tool('tool-nsenter', 'nsenter', 'util-linux', 'lab processes'));
  const built = existsSync(LIBRARY_PATH) && existsSync(BPF_OBJECT_PATH);
  results.push({ id: 'build', ok: built, message: built ? 'native shim and eBPF object built' : 'native shim or eBPF object not built', hint: 'npm install (or npm run build)' });
  if (built && missing.length === 0) results.push(...probeDatapath());
  return results;
}

/** Loads the programs (no pins) and attaches one as a tcx link in a private namespace. */
function probeDatapath(): CheckResult[] {
  let loaded;
  try {
    loaded = bpfLoad(BPF_OBJECT_PATH, null);
  } catch (err) {
    return [{ id: 'ebpf-load', ok: false, message: `the kernel refused the redirection programs: ${errorMessage(err)}`, hint: 'check the kernel version and BTF above' }];
  }
  const out: CheckResult[] = [{ id: 'ebpf-load', ok: true, message: `redirection programs pass the verifier (${[...loaded.programs.keys()].join(', ')})` }];
  try {
    probeTcx(loaded.programs.get('from_pod')!);
    out.push({ id: 'tcx', ok: true, message: 'tcx links attach (probed in a throwaway network namespace)' });
  } catch (err) {
    out.push({ id: 'tcx', ok: false, message: `tcx attach failed: ${errorMessage(err)}`, hint: 'tcx needs kernel >= 6.6' });
  } finally {
    for (const fd of [...loaded.programs.values(), ...loaded.maps.values()]) closeFd(fd);
  }
  return out;
}
