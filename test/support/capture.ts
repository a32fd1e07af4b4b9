// A packet capture on a lab's fabric (the bridge between the nodes), and what the ztunnel tests read
// from it: TCP segments, the TLS handshake at the start of each TCP stream, and whether some bytes
// ever crossed the wire in the clear. tcpdump runs inside the fabric namespace and writes a pcap;
// the pcap is parsed here, so no decoder beyond tcpdump itself is needed.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LabPlan } from '../../lab/plan.js';
import { netnsPath } from '../../lab/topology.js';

export const TCPDUMP = '/usr/bin/tcpdump';

/** One captured frame: its raw bytes and, when it is IPv4 TCP, the decoded segment. */
export interface CapturedFrame {
  raw: Buffer;
  tcp?: TcpSegment;
}

export interface TcpSegment {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  flags: { syn: boolean; ack: boolean; fin: boolean; rst: boolean; psh: boolean };
  payload: Buffer;
}

/**
 * tcpdump on the fabric bridge of a lab, writing every frame (no filter, full snap length) to a
 * pcap with per-packet flushing. Started with `start`, which resolves once tcpdump is listening;
 * `stop` ends it (by its own PID) and returns the parsed frames.
 */
export class FabricCapture {
  private readonly child: ChildProcess;
  private readonly dir: string;
  private readonly file: string;
  private stderr = '';
  private exited: Promise<void>;
  private stopped = false;

  private constructor(child: ChildProcess, dir: string, file: string) {
    this.child = child;
    this.dir = dir;
    this.file = file;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (c: string) => (this.stderr += c));
  }

  static async start(plan: LabPlan, timeoutMs = 5000): Promise<FabricCapture> {
    const dir = mkdtempSync(join(tmpdir(), `ambit-capture-${plan.name}-`));
    const file = join(dir, 'fabric.pcap');
    // nsenter execs tcpdump in place, so the child's PID is tcpdump's own.
    const child = spawn('nsenter', [`--net=${netnsPath(plan.fabric.netns)}`, '--', TCPDUMP, '-i', plan.fabric.bridge, '-n', '--immediate-mode', '-U', '-s', '0', '-w', file], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const capture = new FabricCapture(child, dir, file);
    const deadline = Date.now() + timeoutMs;
    while (!/listening on/.test(capture.stderr)) {
      if (child.exitCode !== null || child.signalCode !== null) {
        capture.cleanup();
        throw new Error(`tcpdump in ${plan.fabric.netns} exited (${child.exitCode ?? child.signalCode}): ${capture.stderr.trim()}`);
      }
      if (Date.now() > deadline) {
        await capture.stop().catch(() => undefined);
        throw new Error(`tcpdump in ${plan.fabric.netns} did not start listening within ${timeoutMs} ms: ${capture.stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return capture;
  }

  /** Stops tcpdump (SIGTERM to its PID; it flushes and exits) and returns every frame captured. */
  async stop(): Promise<CapturedFrame[]> {
    if (!this.stopped) {
      this.stopped = true;
      if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined) {
        // Packets already on the bridge may still be on their way to the pcap (-U flushes per
        // packet and --immediate-mode hands each one over at once, but tcpdump still has to read them).
        await new Promise((r) => setTimeout(r, 300));
        process.kill(this.child.pid, 'SIGTERM');
      }
      const killer = setTimeout(() => {
        if (this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null) process.kill(this.child.pid, 'SIGKILL');
      }, 5000);
      await this.exited;
      clearTimeout(killer);
    }
    try {
      return parsePcap(readFileSync(this.file));
    } finally {
      this.cleanup();
    }
  }

  /** What tcpdump said (its summary names dropped packets). */
  get messages(): string {
    return this.stderr;
  }

  private cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_LINUX_SLL2 = 276;

/** Parses a classic pcap file (either byte order, micro- or nanosecond timestamps). */
export function parsePcap(buf: Buffer): CapturedFrame[] {
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  let le: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
  else throw new Error(`not a pcap file (magic 0x${magic.toString(16)})`);
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const linktype = u32(20) & 0x0fffffff;
  const frames: CapturedFrame[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const incl = u32(off + 8);
    const start = off + 16;
    if (start + incl > buf.length) break; // a record cut short by the stop
    const raw = buf.subarray(start, start + incl);
    const tcp = decodeFrame(linktype, raw);
    frames.push(tcp ? { raw, tcp } : { raw });
    off = start + incl;
  }
  return frames;
}

function decodeFrame(linktype: number, frame: Buffer): TcpSegment | undefined {
  let ethertype: number;
  let off: number;
  switch (linktype) {
    case LINKTYPE_ETHERNET: {
      if (frame.length < 14) return undefined;
      ethertype = frame.readUInt16BE(12);
      off = 14;
      while ((ethertype === 0x8100 || ethertype === 0x88a8) && frame.length >= off + 4) {
        ethertype = frame.readUInt16BE(off + 2);
        off += 4;
      }
      break;
    }
    case LINKTYPE_LINUX_SLL:
      if (frame.length < 16) return undefined;
      ethertype = frame.readUInt16BE(14);
      off = 16;
      break;
    case LINKTYPE_LINUX_SLL2:
      if (frame.length < 20) return undefined;
      ethertype = frame.readUInt16BE(0);
      off = 20;
      break;
    case LINKTYPE_RAW:
      ethertype = 0x0800;
      off = 0;
      break;
    default:
      return undefined;
  }
  if (ethertype !== 0x0800) return undefined;
  return decodeIpv4Tcp(frame.subarray(off));
}

function decodeIpv4Tcp(ip: Buffer): TcpSegment | undefined {
  if (ip.length < 20 || ip[0]! >> 4 !== 4) return undefined;
  const ihl = (ip[0]! & 0x0f) * 4;
  const total = Math.min(ip.readUInt16BE(2), ip.length);
  if (ip[9] !== 6 || total < ihl + 20) return undefined;
  const fragOffset = ip.readUInt16BE(6) & 0x1fff;
  if (fragOffset !== 0) return undefined;
  const tcp = ip.subarray(ihl, total);
  const dataOff = (tcp[12]! >> 4) * 4;
  if (dataOff < 20 || dataOff > tcp.length) return undefined;
  const f = tcp[13]!;
  return {
    src: `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`,
    dst: `${ip[16]}.${ip[17]}.${ip[18]}.${ip[19]}`,
    srcPort: tcp.readUInt16BE(0),
    dstPort: tcp.readUInt16BE(2),
    seq: tcp.readUInt32BE(4),
    flags: { fin: (f & 0x01) !== 0, syn: (f & 0x02) !== 0, rst: (f & 0x04) !== 0, psh: (f & 0x08) !== 0, ack: (f & 0x10) !== 0 },
    payload: tcp.subarray(dataOff),
  };
}

export function tcpSegments(frames: CapturedFrame[]): TcpSegment[] {
  return frames.flatMap((f) => (f.tcp ? [f.tcp] : []));
}

/** A connection opening: a SYN without ACK. */
export function isSyn(s: TcpSegment): boolean {
  return s.flags.syn && !s.flags.ack;
}

/** One direction of one TCP connection, its bytes in sequence order. */
export interface TcpStream {
  src: string;
  srcPort: number;
  dst: string;
  dstPort: number;
  /** Whether the capture saw this direction's SYN, so `data` starts at the stream's first byte. */
  fromStart: boolean;
  data: Buffer;
}

/**
 * Reassembles each direction of each TCP connection from its segments: ordered by sequence number
 * (relative to the SYN, or to the first segment seen), retransmitted and overlapping bytes kept
 * once, stopping at the first gap.
 */
export function tcpStreams(frames: CapturedFrame[]): TcpStream[] {
  const byKey = new Map<string, TcpSegment[]>();
  for (const s of tcpSegments(frames)) {
    const key = `${s.src}:${s.srcPort}>${s.dst}:${s.dstPort}`;
    const list = byKey.get(key) ?? [];
    list.push(s);
    byKey.set(key, list);
  }
  const streams: TcpStream[] = [];
  for (const segments of byKey.values()) {
    const first = segments[0]!;
    const syn = segments.find((s) => s.flags.syn);
    const base = syn ? (syn.seq + 1) >>> 0 : first.seq;
    const rel = (seq: number): number => {
      const d = (seq - base) >>> 0;
      return d > 0x80000000 ? d - 0x100000000 : d; // before base (e.g. the SYN itself): negative
    };
    const data = segments
      .filter((s) => s.payload.length > 0)
      .map((s) => ({ at: rel(s.seq), payload: s.payload }))
      .sort((a, b) => a.at - b.at);
    const parts: Buffer[] = [];
    let next = data.length && !syn ? Math.min(0, data[0]!.at) : 0;
    for (const d of data) {
      const end = d.at + d.payload.length;
      if (end <= next) continue;
      if (d.at > next) break; // a gap: what follows cannot be placed
      parts.push(d.payload.subarray(next - d.at));
      next = end;
    }
    streams.push({ src: first.src, srcPort: first.srcPort, dst: first.dst, dstPort: first.dstPort, fromStart: syn !== undefined, data: Buffer.concat(parts) });
  }
  return streams;
}

/** A TLS handshake message found at the start of a stream. */
export interface TlsHandshakeMessage {
  /** 1 ClientHello, 2 ServerHello, ... */
  type: number;
  body: Buffer;
}

export const TLS_CLIENT_HELLO = 1;
export const TLS_SERVER_HELLO = 2;
export const TLS13 = 0x0304;
const EXT_SUPPORTED_VERSIONS = 0x002b;

/**
 * The plaintext handshake messages at the start of a TLS stream: the records of content type 22
 * (handshake) before the first record of another type (in TLS 1.3, everything after the
 * ServerHello is encrypted). Empty when the stream does not start with a TLS record.
 */
export function tlsHandshakeMessages(stream: Buffer): TlsHandshakeMessage[] {
  let handshake = Buffer.alloc(0);
  let off = 0;
  while (off + 5 <= stream.length && stream[off] === 22 && stream[off + 1] === 0x03) {
    const len = stream.readUInt16BE(off + 3);
    if (off + 5 + len > stream.length) break;
    handshake = Buffer.concat([handshake, stream.subarray(off + 5, off + 5 + len)]);
    off += 5 + len;
  }
  const out: TlsHandshakeMessage[] = [];
  let h = 0;
  while (h + 4 <= handshake.length) {
    const len = handshake.readUIntBE(h + 1, 3);
    if (h + 4 + len > handshake.length) break;
    out.push({ type: handshake[h]!, body: handshake.subarray(h + 4, h + 4 + len) });
    h += 4 + len;
  }
  return out;
}

/** The extensions of a ClientHello or ServerHello body, by type. */
export function helloExtensions(type: number, body: Buffer): Map<number, Buffer> {
  const exts = new Map<number, Buffer>();
  let off = 2 + 32; // legacy_version, random
  const sessionIdLen = body[off]!;
  off += 1 + sessionIdLen;
  if (type === TLS_CLIENT_HELLO) {
    off += 2 + body.readUInt16BE(off); // cipher_suites
    off += 1 + body[off]!; // legacy_compression_methods
  } else {
    off += 2 + 1; // cipher_suite, legacy_compression_method
  }
  if (off + 2 > body.length) return exts;
  const end = Math.min(body.length, off + 2 + body.readUInt16BE(off));
  off += 2;
  while (off + 4 <= end) {
    const t = body.readUInt16BE(off);
    const len = body.readUInt16BE(off + 2);
    exts.set(t, body.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return exts;
}

/** The versions a ClientHello offers in supported_versions (empty without the extension). */
export function clientHelloVersions(body: Buffer): number[] {
  const ext = helloExtensions(TLS_CLIENT_HELLO, body).get(EXT_SUPPORTED_VERSIONS);
  if (!ext || ext.length < 1) return [];
  const out: number[] = [];
  const listEnd = 1 + Math.min(ext[0]!, ext.length - 1);
  for (let i = 1; i + 2 <= listEnd; i += 2) out.push(ext.readUInt16BE(i));
  return out;
}

/** The version a ServerHello selects in supported_versions (undefined without the extension: TLS <= 1.2). */
export function serverHelloVersion(body: Buffer): number | undefined {
  const ext = helloExtensions(TLS_SERVER_HELLO, body).get(EXT_SUPPORTED_VERSIONS);
  return ext && ext.length >= 2 ? ext.readUInt16BE(0) : undefined;
}

/** The frames whose bytes contain `needle` anywhere (headers included). */
export function framesContaining(frames: CapturedFrame[], needle: string | Buffer): CapturedFrame[] {
  const bytes = typeof needle === 'string' ? Buffer.from(needle) : needle;
  return frames.filter((f) => f.raw.includes(bytes));
}

/** A short description of the TCP traffic in a capture, for assertion messages. */
export function describeTcp(frames: CapturedFrame[], limit = 20): string {
  const seen = new Map<string, number>();
  for (const s of tcpSegments(frames)) {
    const key = `${s.src}:${s.srcPort} > ${s.dst}:${s.dstPort}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  const lines = [...seen].slice(0, limit).map(([k, n]) => `  ${k} (${n} segments)`);
  if (seen.size > limit) lines.push(`  ... ${seen.size - limit} more flows`);
  return lines.length ? lines.join('\n') : '  (no TCP)';
}
