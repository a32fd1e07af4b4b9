// ipBlocks and IP `when` values to istio.security.Address: the address bytes and a prefix length
// (a bare address is a /32 or /128). Strict, unlike istiod (which skips what it cannot parse):
// a dropped block would widen a notIpBlocks or empty a DENY.

import type { Address } from '../../proto/gen/istio/security/authorization.js';
import { ipBytes } from '../../mesh/ip-text.js';

const PREFIX_LENGTH = /^[0-9]{1,3}$/;

/** The Address for `10.0.0.0/8`, `10.1.2.3`, `2001:db8::/32` ...; a string says why it is not one. */
export function ipBlock(text: string): Address | string {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const address = ipBytes(ip);
  if (!address) return 'is not an IP address or CIDR';
  const bits = address.length * 8;
  if (slash < 0) return { address, length: bits };
  const length = text.slice(slash + 1);
  if (!PREFIX_LENGTH.test(length) || Number(length) > bits) return `is not an IP address or CIDR (the prefix length must be 0-${bits})`;
  return { address, length: Number(length) };
}
