// The `:authority` of an HBONE CONNECT: `<ip>:<port>`, IPv6 in brackets (istio-ambient-spec.md
// §2.3). Parsed strictly: an authority is addressed by IP, and anything else is a 400.
import net from 'node:net';

export interface HboneTarget {
  ip: string;
  port: number;
  family: 4 | 6;
}

export function parseAuthority(authority: string | undefined): HboneTarget | undefined {
  if (authority === undefined || authority.length > 64) return undefined;
  let host: string;
  let portText: string;
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']:');
    if (end < 0) return undefined;
    host = authority.slice(1, end);
    portText = authority.slice(end + 2);
    if (net.isIPv6(host) === false) return undefined;
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon < 0) return undefined;
    host = authority.slice(0, colon);
    portText = authority.slice(colon + 1);
    if (!net.isIPv4(host)) return undefined;
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port < 1 || port > 65535) return undefined;
  return { ip: host, port, family: net.isIPv4(host) ? 4 : 6 };
}

export function formatAuthority(ip: string, port: number): string {
  return net.isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`;
}
