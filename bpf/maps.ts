// Byte layouts of the redirection maps, mirroring bpf/redirect.h. The agent compares these sizes
// with what the kernel reports for the loaded maps before it writes a single entry.

export const POD_F_ENABLED = 0x1;
export const PROXY_F_FAIL_OPEN = 0x1;

export const POD_STATE_SIZE = 8;
export const PROXY_CONFIG_SIZE = 32;

export const MAP_NAMES = ['pods_by_ifindex', 'pods_by_ip', 'proxy_config', 'stats'] as const;
export type MapName = (typeof MAP_NAMES)[number];
export const PROGRAM_NAMES = ['from_pod', 'to_pod', 'proxy_in'] as const;
export type ProgramName = (typeof PROGRAM_NAMES)[number];

/** Expected key and value sizes, checked against the loaded maps. */
export const MAP_LAYOUT: Record<MapName, { keySize: number; valueSize: number }> = {
  pods_by_ifindex: { keySize: 4, valueSize: POD_STATE_SIZE },
  pods_by_ip: { keySize: 4, valueSize: 4 },
  proxy_config: { keySize: 4, valueSize: PROXY_CONFIG_SIZE },
  stats: { keySize: 4, valueSize: 8 },
};

/** The stats counters, in the index order of enum ambit_stat. */
export const STAT_NAMES = [
  'out_redirect',
  'in_redirect',
  'assign_established',
  'assign_listener',
  'drop_no_proxy',
  'drop_unsupported',
  'pass_direct',
  'proxy_no_socket',
] as const;
export type StatName = (typeof STAT_NAMES)[number];

/** IPv4 dotted quad to the 4 bytes of its network-order u32. */
export function ipv4Bytes(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new TypeError(`not an IPv4 address: ${ip}`);
  }
  return Buffer.from(parts);
}

export function ipv4String(bytes: Buffer, offset = 0): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

export function u32Key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

export interface PodState {
  ip: string;
  flags: number;
}

export function encodePodState(s: PodState): Buffer {
  const b = Buffer.alloc(POD_STATE_SIZE);
  ipv4Bytes(s.ip).copy(b, 0);
  b.writeUInt32LE(s.flags >>> 0, 4);
  return b;
}

export function decodePodState(b: Buffer): PodState {
  return { ip: ipv4String(b, 0), flags: b.readUInt32LE(4) };
}

export function encodePodFlags(flags: number): Buffer {
  return u32Key(flags);
}

export interface ProxyConfig {
  proxyIP: string;
  hostIfindex: number;
  proxyMac: string;
  outPort: number;
  inPort: number;
  hbonePort: number;
  failOpen: boolean;
  tproxyMark: number;
  /** ztunnel's netns id seen from the node's netns; negative selects stateless mode. */
  proxyNsid: number;
}

export function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new TypeError(`not a MAC address: ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function encodeProxyConfig(c: ProxyConfig): Buffer {
  const b = Buffer.alloc(PROXY_CONFIG_SIZE);
  ipv4Bytes(c.proxyIP).copy(b, 0);
  b.writeUInt32LE(c.hostIfindex >>> 0, 4);
  macBytes(c.proxyMac).copy(b, 8);
  b.writeUInt16LE(c.outPort, 14);
  b.writeUInt16LE(c.inPort, 16);
  b.writeUInt16LE(c.hbonePort, 18);
  b.writeUInt32LE(c.failOpen ? PROXY_F_FAIL_OPEN : 0, 20);
  b.writeUInt32LE(c.tproxyMark >>> 0, 24);
  b.writeInt32LE(c.proxyNsid, 28);
  return b;
}

export function decodeProxyConfig(b: Buffer): ProxyConfig {
  const mac = [...b.subarray(8, 14)].map((x) => x.toString(16).padStart(2, '0')).join(':');
  return {
    proxyIP: ipv4String(b, 0),
    hostIfindex: b.readUInt32LE(4),
    proxyMac: mac,
    outPort: b.readUInt16LE(14),
    inPort: b.readUInt16LE(16),
    hbonePort: b.readUInt16LE(18),
    failOpen: (b.readUInt32LE(20) & PROXY_F_FAIL_OPEN) !== 0,
    tproxyMark: b.readUInt32LE(24),
    proxyNsid: b.readInt32LE(28),
  };
}

/** Sums one per-CPU u64 counter value (each CPU's slot is 8 bytes). */
export function sumPerCpu(value: Buffer): bigint {
  let total = 0n;
  for (let off = 0; off + 8 <= value.length; off += 8) total += value.readBigUInt64LE(off);
  return total;
}
