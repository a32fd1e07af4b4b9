// Socket addresses (text, as Node reports them) as the bytes the workload API and the policy
// engine use. Once per connection, never per chunk.
import net from 'node:net';
import { ipBytes as parseIp } from '../../../mesh/ip-text.js';

const EMPTY = new Uint8Array(0);

/** Node reports IPv4 peers of a dual-stack socket as ::ffff:a.b.c.d; the mesh knows them as a.b.c.d. */
export function plainIp(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
}

/** 4 bytes for IPv4 (also for ::ffff:a.b.c.d), 16 for IPv6; empty for anything else (policy then fails closed). */
export function ipBytes(ip: string): Uint8Array {
  return parseIp(plainIp(ip)) ?? EMPTY;
}
