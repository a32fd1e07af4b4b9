// CIDR matching on the raw 4/16-byte addresses the workload API carries, with no text on the hot
// path: a block is reduced once to its masked network bytes, a connection address to a family and
// an offset into its bytes.

/** A prefix as compared: `full` whole bytes equal, then `lastMask` bits of the next byte. */
export interface Cidr {
  readonly v4: boolean;
  /** The network with host bits cleared (ipnet's `contains` ignores them too). */
  readonly bytes: Uint8Array;
  readonly full: number;
  /** 0 when the prefix ends on a byte boundary. */
  readonly lastMask: number;
}

/** A connection address located in its bytes; `offset` 12 for an IPv4-mapped IPv6 address. */
export interface AddressView {
  v4: boolean;
  offset: number;
}

/** ::ffff:0:0/96, the IPv4-mapped range. */
function isMapped(a: Uint8Array): boolean {
  if (a.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (a[i] !== 0) return false;
  return a[10] === 0xff && a[11] === 0xff;
}

/**
 * Where the address sits, or false when it is neither 4 nor 16 bytes. Mapped addresses count as
 * IPv4, as ztunnel canonicalizes socket addresses before matching (a dual-stack listener reports
 * IPv4 peers as ::ffff:a.b.c.d).
 */
export function locate(a: Uint8Array, into: AddressView): boolean {
  if (a.length === 4) {
    into.v4 = true;
    into.offset = 0;
    return true;
  }
  if (a.length !== 16) return false;
  const mapped = isMapped(a);
  into.v4 = mapped;
  into.offset = mapped ? 12 : 0;
  return true;
}

/**
 * The Cidr for an istio.security.Address, or why it is malformed. A mapped IPv6 block of /96 or
 * longer is the IPv4 block it spells (ztunnel keeps it IPv6, where it can never contain a
 * canonicalized IPv4 peer: a DENY on it would deny nothing).
 */
export function compileCidr(address: unknown, length: unknown): Cidr | string {
  if (!(address instanceof Uint8Array)) return 'the address is not bytes';
  if (address.length !== 4 && address.length !== 16) return `the address is ${address.length} bytes, not 4 or 16`;
  const bits = address.length * 8;
  if (typeof length !== 'number' || !Number.isInteger(length) || length < 0 || length > bits) {
    return `the prefix length ${String(length)} is not 0-${bits}`;
  }
  let src = address;
  let prefix = length;
  if (isMapped(address) && length >= 96) {
    src = address.subarray(12);
    prefix = length - 96;
  }
  const full = prefix >> 3;
  const rest = prefix & 7;
  const lastMask = rest === 0 ? 0 : (0xff << (8 - rest)) & 0xff;
  const bytes = new Uint8Array(src.length);
  for (let i = 0; i < full; i++) bytes[i] = src[i]!;
  if (lastMask !== 0) bytes[full] = src[full]! & lastMask;
  return { v4: src.length === 4, bytes, full, lastMask };
}

export function cidrContains(c: Cidr, ip: Uint8Array, at: AddressView): boolean {
  if (c.v4 !== at.v4) return false;
  const off = at.offset;
  const bytes = c.bytes;
  for (let i = 0; i < c.full; i++) if (ip[off + i] !== bytes[i]) return false;
  return c.lastMask === 0 || (ip[off + c.full]! & c.lastMask) === bytes[c.full];
}
