// Hand-built frames for BPF_PROG_TEST_RUN. Checksums are left zero: the programs never read them.
import { ipv4Bytes, macBytes } from '../../bpf/maps.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;

export interface TcpFlags {
  syn?: boolean;
  ack?: boolean;
  fin?: boolean;
  rst?: boolean;
}

function eth(proto: number, dstMac = '02:00:00:00:00:aa', srcMac = '02:00:00:00:00:bb'): Buffer {
  const b = Buffer.alloc(14);
  macBytes(dstMac).copy(b, 0);
  macBytes(srcMac).copy(b, 6);
  b.writeUInt16BE(proto, 12);
  return b;
}

function ipv4(src: string, dst: string, protocol: number, payloadLen: number, opts: { options?: Buffer; fragOff?: number } = {}): Buffer {
  const optLen = opts.options?.length ?? 0;
  const b = Buffer.alloc(20 + optLen);
  b[0] = 0x40 | ((20 + optLen) / 4);
  b.writeUInt16BE(20 + optLen + payloadLen, 2);
  b.writeUInt16BE(opts.fragOff ?? 0x4000 /* DF */, 6);
  b[8] = 64;
  b[9] = protocol;
  ipv4Bytes(src).copy(b, 12);
  ipv4Bytes(dst).copy(b, 16);
  opts.options?.copy(b, 20);
  return b;
}

function tcp(sport: number, dport: number, flags: TcpFlags): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt32BE(1000, 4);
  b.writeUInt32BE(flags.ack ? 2000 : 0, 8);
  b[12] = 5 << 4;
  b[13] = (flags.fin ? 0x01 : 0) | (flags.syn ? 0x02 : 0) | (flags.rst ? 0x04 : 0) | (flags.ack ? 0x10 : 0);
  b.writeUInt16BE(65535, 14);
  return b;
}

export interface Tcp4Packet {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  flags?: TcpFlags;
  ipOptions?: Buffer;
  fragOff?: number;
  dstMac?: string;
}

export function tcp4(p: Tcp4Packet): Buffer {
  const t = tcp(p.sport ?? 40000, p.dport ?? 80, p.flags ?? { syn: true });
  return Buffer.concat([eth(ETH_P_IP, p.dstMac), ipv4(p.src, p.dst, 6, t.length, { options: p.ipOptions, fragOff: p.fragOff }), t]);
}

export function udp4(src: string, dst: string, sport = 5353, dport = 53): Buffer {
  const u = Buffer.alloc(8);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(8, 4);
  return Buffer.concat([eth(ETH_P_IP), ipv4(src, dst, 17, 8), u]);
}

export function icmp4(src: string, dst: string): Buffer {
  const i = Buffer.alloc(8);
  i[0] = 8; // echo request
  return Buffer.concat([eth(ETH_P_IP), ipv4(src, dst, 1, 8), i]);
}

export function arp(): Buffer {
  return Buffer.concat([eth(ETH_P_ARP, 'ff:ff:ff:ff:ff:ff'), Buffer.alloc(28)]);
}

/** An IPv6 packet whose first next-header is `nextHeader` (6 = TCP, 58 = ICMPv6, 0 = hop-by-hop). */
export function ipv6(nextHeader: number, followingHeader = 58): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(28, 4);
  h[6] = nextHeader;
  h[7] = 64;
  h[8] = 0xfe;
  h[9] = 0x80;
  h[24] = 0xfe;
  h[25] = 0x80;
  const payload = Buffer.alloc(28);
  if (nextHeader === 0) payload[0] = followingHeader;
  return Buffer.concat([eth(ETH_P_IPV6), h, payload]);
}

/** struct __sk_buff with only the fields BPF_PROG_TEST_RUN accepts that the programs read. */
export function skbContext(opts: { ifindex: number; ingressIfindex?: number }): Buffer {
  const ctx = Buffer.alloc(192); // sizeof(struct __sk_buff) on 6.x
  ctx.writeUInt32LE(opts.ingressIfindex ?? 0, 4 * 9); // ingress_ifindex
  ctx.writeUInt32LE(opts.ifindex, 4 * 10); // ifindex
  return ctx;
}

export function dstMac(frame: Buffer): string {
  return [...frame.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** An IPv4 TCP SYN behind VLAN tags (id 0): 0x8100 on the wire, IPv4 once the kernel strips them. */
export function vlanTagged(p: Tcp4Packet, tags = 2): Buffer {
  const plain = tcp4(p);
  const parts: Buffer[] = [plain.subarray(0, 12)];
  for (let i = 0; i < tags; i++) {
    const tag = Buffer.alloc(4);
    tag.writeUInt16BE(0x8100, 0); // TPID of this tag; the next 2 bytes (TCI) stay 0
    parts.push(tag);
  }
  parts.push(plain.subarray(12));
  return Buffer.concat(parts);
}
