// Istio AuthorizationPolicy to istio.security.Authorization (ztunnel) and to L7 policies (waypoints),
// with where each is enforced (istio-ambient-spec.md §4.3, §5.4, §6).
import type { Authorization } from '../../proto/gen/istio/security/authorization.js';
import type { L7Policy } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { AuthorizationPolicy, Gateway } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import type { PolicyStatus, Problem } from './types.js';

export interface PolicyTranslation {
  /** What ztunnel gets, named `<namespace>/<name>`; absent for targetRefs policies and CUSTOM/AUDIT. */
  authorization: Authorization | undefined;
  status: PolicyStatus;
  problems: Problem[];
}

export function translatePolicy(policy: AuthorizationPolicy, ctx: ModelContext): PolicyTranslation {
  void policy; void ctx;
  throw new Error('translatePolicy: not implemented');
}

/** The L7 policies a waypoint enforces: those targeting it, its GatewayClass, or the services it serves. */
export function waypointPolicies(gateway: Gateway, servedServices: readonly string[], ctx: ModelContext): { policies: L7Policy[]; problems: Problem[] } {
  void gateway; void servedServices; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { policies: [], problems: [] };
}
