// Why a test that needs root or a kernel feature cannot run here (false when it can).
import { release } from 'node:os';
import { isBuilt } from '../../native/index.js';

export function kernelAtLeast(major: number, minor: number): boolean {
  const [a = 0, b = 0] = release().split('.').map((x) => parseInt(x, 10));
  return a > major || (a === major && b >= minor);
}

/** Skip reason for tests that load eBPF and build namespaces, or false when they can run. */
export function privilegedSkipReason(): string | false {
  if (process.platform !== 'linux') return 'needs Linux';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, eBPF): run npm test as root';
  if (!kernelAtLeast(6, 6)) return `needs kernel >= 6.6 for tcx links (this is ${release()})`;
  if (!isBuilt()) return 'needs the native shim and eBPF object: run npm install';
  return false;
}
