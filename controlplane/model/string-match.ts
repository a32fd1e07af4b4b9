// AuthorizationPolicy string values as ztunnel matches them (istiod ambient/authorization.go
// stringToMatch): `*` is presence, `*x` a suffix, `x*` a prefix, anything else exact. A `*`
// anywhere else, or more than one, is not a pattern Istio has: rejected rather than matched
// literally, because a policy that silently never matches fails open for a DENY.

import type { StringMatch } from '../../proto/gen/istio/security/authorization.js';

const SPIFFE = 'spiffe://';

/** The StringMatch for a value, or why it is not one. */
export function starMatch(value: string): StringMatch | string {
  if (value === '') return 'is empty';
  if (value === '*') return { presence: {} };
  const stars = value.split('*').length - 1;
  if (stars === 0) return { exact: value };
  if (stars === 1 && value.startsWith('*')) return { suffix: value.slice(1) };
  if (stars === 1 && value.endsWith('*')) return { prefix: value.slice(0, -1) };
  return 'has a "*" that is not a single leading or trailing wildcard';
}

/**
 * Principals are written without `spiffe://` (ztunnel strips it from the peer identity before
 * matching). istiod passes a written prefix through, so such a value never matches anything in
 * Istio; Ambit removes it (and warns), matching what the value plainly names.
 */
export function stripSpiffe(value: string): { value: string; stripped: boolean } {
  return value.startsWith(SPIFFE) ? { value: value.slice(SPIFFE.length), stripped: true } : { value, stripped: false };
}

/** A service account as `<namespace>/<name>`, or a bare `<name>` in the policy's namespace. */
export function serviceAccountMatch(value: string, policyNamespace: string): { namespace: string; serviceAccount: string } | string {
  if (value === '') return 'is empty';
  if (value.includes('*')) return 'has a "*": service accounts match exactly';
  const parts = value.split('/');
  if (parts.length === 1) return { namespace: policyNamespace, serviceAccount: value };
  if (parts.length === 2 && parts[0] !== '' && parts[1] !== '') return { namespace: parts[0]!, serviceAccount: parts[1]! };
  return 'is not "<namespace>/<service account>" or "<service account>"';
}
