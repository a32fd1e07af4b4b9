// What kind of AuthorizationPolicy an object is: its action, whether it targets waypoints
// (targetRef/targetRefs) and its selector. Both the translation and the per-workload policy lists
// read this one classification, so a name a workload lists always exists as a resource.

import type { AuthorizationPolicy } from '../../mesh/k8s/types.js';
import { isRecord, show } from './labels.js';
import { policySelector, type PolicySelector } from './policy-selector.js';

export type PolicyAction = 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
export const POLICY_ACTIONS: readonly PolicyAction[] = ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'];

export interface PolicyShape {
  namespace: string;
  name: string;
  /** `<namespace>/<name>`: the Authorization resource name and the status key. */
  key: string;
  /** Undefined when spec.action is not one of Istio's actions (see `actionProblem`). */
  action: PolicyAction | undefined;
  actionProblem: string | undefined;
  /** targetRef or a non-empty targetRefs is present (well-formed or not): a waypoint policy. */
  targeted: boolean;
  selector: PolicySelector;
  /**
   * Selector-based (or namespace/mesh-wide) and sent to ztunnel: ALLOW, DENY, CUSTOM (as a DENY of
   * everything it selects: ztunnel cannot call an external authorizer) or an unknown action (which
   * fails closed). Not AUDIT, which never denies. A reserved name (reservedName) is not sent either.
   */
  ztunnel: boolean;
}

export const STATIC_STRICT_POLICY = 'istio_converted_static_strict';
export const CONVERTED_PEER_AUTHENTICATION_PREFIX = 'converted_peer_authentication_';

/**
 * Why the policy's name cannot be an Authorization resource: the names PeerAuthentications are
 * converted to (`<root>/istio_converted_static_strict`, `<ns>/converted_peer_authentication_<name>`).
 * A policy of that name would replace the converted one, which could silently remove STRICT.
 * (Kubernetes names cannot hold `_`; such a policy can only come from a file.)
 */
export function reservedName(shape: PolicyShape, rootNamespace: string): string | undefined {
  if (shape.namespace === rootNamespace && shape.name === STATIC_STRICT_POLICY) {
    return `the name ${STATIC_STRICT_POLICY} is reserved in the root namespace ${rootNamespace} for the policy converted from STRICT PeerAuthentications`;
  }
  if (shape.name.startsWith(CONVERTED_PEER_AUTHENTICATION_PREFIX)) {
    return `names starting with ${CONVERTED_PEER_AUTHENTICATION_PREFIX} are reserved for the policies converted from PeerAuthentications with port-level mTLS`;
  }
  return undefined;
}

const cache = new WeakMap<object, PolicyShape>();

export function policyShape(policy: AuthorizationPolicy): PolicyShape {
  let shape = cache.get(policy);
  if (!shape) {
    shape = classify(policy);
    cache.set(policy, shape);
  }
  return shape;
}

function classify(policy: AuthorizationPolicy): PolicyShape {
  const namespace = policy.metadata.namespace ?? 'default';
  const name = policy.metadata.name;
  const spec: Record<string, unknown> = isRecord(policy.spec) ? policy.spec : {};
  let action: PolicyAction | undefined;
  let actionProblem: string | undefined;
  const raw = spec.action;
  // A spec that is not a map hides the action too: it may have been a DENY.
  if (policy.spec !== undefined && policy.spec !== null && !isRecord(policy.spec)) actionProblem = `spec: ${show(policy.spec)} is not a map`;
  else if (raw === undefined || raw === null) action = 'ALLOW';
  else if (typeof raw === 'string' && (POLICY_ACTIONS as readonly string[]).includes(raw)) action = raw as PolicyAction;
  else actionProblem = `spec.action: ${show(raw)} is not one of ${POLICY_ACTIONS.join(', ')}`;
  // Present in any form counts: a malformed targetRef was still meant for a waypoint, and must not
  // turn into a ztunnel policy for the whole namespace.
  const targeted = (spec.targetRef !== undefined && spec.targetRef !== null) || (Array.isArray(spec.targetRefs) ? spec.targetRefs.length > 0 : spec.targetRefs !== undefined && spec.targetRefs !== null);
  const ztunnel = !targeted && action !== 'AUDIT';
  return { namespace, name, key: `${namespace}/${name}`, action, actionProblem, targeted, selector: policySelector(policy), ztunnel };
}
