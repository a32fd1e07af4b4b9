// Addresses as the workload API carries them (4 or 16 bytes), to and from text. Text to bytes is
// strict: no zone IDs, no prefixes, no leading-zero octets; anything else is not an address.
import { isIP, isIPv4, isIPv6 } from 'node:net';

/** 4 or 16 bytes as dotted or colon text; anything else stays base64 with its length, so a bad value is visible. */
export function ipText(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    return compressIpv6(groups.join(':'));
  }
  return `<${bytes.length} bytes: ${Buffer.from(bytes).toString('base64')}>`;
}

function compressIpv6(full: string): string {
  // The longest run of two or more zero groups becomes "::" (RFC 5952).
  const groups = full.split(':');
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return full;
  const text = `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
  return isIP(text) ? text : full;
}

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
