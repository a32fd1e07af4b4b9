// IP address text to the 4 or 16 bytes istio.workload carries. Strict: no zone IDs, no
// prefixes, no leading-zero octets; anything else is not an address.

import { isIPv4, isIPv6 } from 'node:net';

/** The address as 4 (IPv4) or 16 (IPv6) bytes; undefined when the text is not a plain IP address. */
export function ipBytes(text: unknown): Buffer | undefined {
  if (typeof text !== 'string') return undefined;
  if (isIPv4(text)) return Buffer.from(text.split('.').map(Number));
  if (!isIPv6(text) || text.includes('%')) return undefined;
  return ipv6Bytes(text);
}

function ipv6Bytes(text: string): Buffer {
  // A dotted IPv4 tail (::ffff:1.2.3.4) is two more groups.
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const [a, b, c, d] = text.slice(lastColon + 1).split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const gap = text.indexOf('::');
  const left = gap >= 0 ? groups(text.slice(0, gap)) : groups(text);
  const right = gap >= 0 ? groups(text.slice(gap + 2)) : [];
  const all = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}
