// PeerAuthentication to the Authorization resources ztunnel enforces mTLS modes with (istio-ambient-spec.md §5.5).
import type { Authorization } from '../../proto/gen/istio/security/authorization.js';
import type { PeerAuthentication, Pod } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import type { Translation } from './translation.js';

/**
 * Every Authorization that PeerAuthentications become: the static STRICT policy
 * `<root namespace>/istio_converted_static_strict` and the converted port-level policies, each
 * named `<namespace>/<name>`.
 */
export function peerAuthenticationAuthorizations(ctx: ModelContext): Translation<Authorization[]> {
  void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { value: [], problems: [] };
}

/** The effective mTLS mode of a pod and the names of the converted policies that enforce it. */
export function podPeerAuthentication(pod: Pod, ctx: ModelContext): { mode: 'STRICT' | 'PERMISSIVE' | 'DISABLE'; policies: string[] } {
  void pod; void ctx; void ({} as PeerAuthentication);
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { mode: 'PERMISSIVE', policies: [] };
}
