// Socket addresses (text, as Node reports them) as the bytes the workload API and the policy
// engine use. Once per connection, never per chunk.
import net from 'node:net';

const EMPTY = new Uint8Array(0);

/** 4 bytes for IPv4 (also for ::ffff:a.b.c.d), 16 for IPv6; empty for anything else (policy then fails closed). */
export function ipBytes(ip: string): Uint8Array {
  if (ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7))) ip = ip.slice(7);
  if (net.isIPv4(ip)) {
    const out = new Uint8Array(4);
    const parts = ip.split('.');
    for (let i = 0; i < 4; i++) out[i] = Number(parts[i]);
    return out;
  }
  if (!net.isIPv6(ip)) return EMPTY;
  const [head = '', tail = ''] = ip.includes('::') ? ip.split('::') : [ip, ''];
  const groups = (s: string) => (s ? s.split(':') : []);
  let h = groups(head);
  let t = groups(tail);
  // An embedded IPv4 tail (e.g. 64:ff9b::1.2.3.4) is two groups.
  const last = (t.length ? t : h).at(-1);
  if (last && net.isIPv4(last)) {
    const b = last.split('.').map(Number);
    const extra = [((b[0]! << 8) | b[1]!).toString(16), ((b[2]! << 8) | b[3]!).toString(16)];
    if (t.length) t = [...t.slice(0, -1), ...extra];
    else h = [...h.slice(0, -1), ...extra];
  }
  const all = ip.includes('::') ? [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/** Node reports IPv4 peers of a dual-stack socket as ::ffff:a.b.c.d; the mesh knows them as a.b.c.d. */
export function plainIp(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
}
