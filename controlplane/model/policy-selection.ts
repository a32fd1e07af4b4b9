// Which ztunnel-bound policies a workload lists in Workload.authorization_policies.
import type { Pod } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';

/**
 * `<namespace>/<name>` of the selector-based AuthorizationPolicies selecting the pod (its
 * namespace's, and the root namespace's, which select across namespaces) and of the converted
 * PeerAuthentication policies that apply to it, sorted.
 */
export function workloadPolicies(pod: Pod, ctx: ModelContext): string[] {
  void pod; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return [];
}
