// The whole model from one view: every resource of every type, the policies' status and the
// problems. Pure: the same view and options give the same snapshot.

import type { ClusterView } from '../../mesh/config/view.js';
import { keyOf } from '../../mesh/config/view.js';
import type { AuthorizationPolicy } from '../../mesh/k8s/types.js';
import { errorMessage } from '../../mesh/errors.js';
import type { Workload, Service as WorkloadService } from '../../proto/gen/istio/workload/workload.js';
import { Action, Authorization, Scope } from '../../proto/gen/istio/security/authorization.js';
import type { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import { buildContext, type ModelContext } from './context.js';
import { translatePolicy } from './authorization.js';
import { peerAuthenticationAuthorizations } from './peer-authentication.js';
import { serviceResource } from './services.js';
import { endpointSliceWorkloads, podWorkload } from './workloads.js';
import { waypointResource } from './waypoints.js';
import type { Translation } from './translation.js';
import { DEFAULT_MODEL_OPTIONS, type ModelOptions, type ModelSnapshot, type ObjectRef, type PolicyStatus, type Problem } from './types.js';

export function buildModel(view: ClusterView, opts: ModelOptions = DEFAULT_MODEL_OPTIONS): ModelSnapshot {
  const ctx = buildContext(view, opts);
  const problems: Problem[] = [];
  const workloads = new Map<string, Workload>();
  const services = new Map<string, WorkloadService>();
  const authorizations = new Map<string, Authorization>();
  const waypoints = new Map<string, Waypoint>();
  const policyStatus = new Map<string, PolicyStatus>();

  for (const pod of view.pods) {
    const workload = guarded(problems, ref('Pod', pod), () => podWorkload(pod, ctx));
    if (workload) workloads.set(workload.uid, workload);
  }
  for (const slice of view.endpointSlices) {
    for (const workload of guarded(problems, ref('EndpointSlice', slice), () => endpointSliceWorkloads(slice, ctx)) ?? []) {
      workloads.set(workload.uid, workload);
    }
  }
  for (const svc of view.services) {
    const service = guarded(problems, ref('Service', svc), () => serviceResource(svc, ctx));
    if (service) services.set(serviceResourceName(service), service);
  }
  for (const policy of view.authorizationPolicies) {
    const translated = translatePolicyGuarded(policy, ctx);
    problems.push(...translated.problems);
    policyStatus.set(keyOf(policy), translated.status);
    if (translated.authorization) authorizations.set(authorizationName(translated.authorization), translated.authorization);
  }
  for (const authorization of guarded(problems, { kind: 'PeerAuthentication', name: '*' }, () => peerAuthenticationAuthorizations(ctx)) ?? []) {
    authorizations.set(authorizationName(authorization), authorization);
  }
  for (const gateway of view.gateways) {
    const waypoint = guarded(problems, ref('Gateway', gateway), () => waypointResource(gateway, ctx));
    if (waypoint) waypoints.set(`${waypoint.namespace}/${waypoint.name}`, waypoint);
  }
  return { workloads, services, authorizations, waypoints, policyStatus, problems };
}

export function serviceResourceName(service: WorkloadService): string {
  return `${service.namespace}/${service.hostname}`;
}

export function authorizationName(authorization: Authorization): string {
  return `${authorization.namespace}/${authorization.name}`;
}

export function ref(kind: string, obj: { metadata: { name: string; namespace?: string } }): ObjectRef {
  const out: ObjectRef = { kind, name: obj.metadata.name };
  if (obj.metadata.namespace !== undefined) out.namespace = obj.metadata.namespace;
  return out;
}

/** A translation function that throws is a bug; the object is left out and the bug reported, the rest goes on. */
export function guarded<T>(problems: Problem[], object: ObjectRef, translate: () => Translation<T>): T | undefined {
  try {
    const result = translate();
    problems.push(...result.problems);
    return result.value;
  } catch (err) {
    problems.push({ object, severity: 'error', message: `could not be translated (internal error: ${errorMessage(err)}); left out` });
    return undefined;
  }
}

/**
 * A policy whose translation failed outright must still fail closed for what it would select,
 * never vanish: an ALLOW becomes an ALLOW with no rules (nothing else allowed there), a DENY (or
 * anything else) a DENY with one clause-less rule, which matches every connection.
 */
export function translatePolicyGuarded(policy: AuthorizationPolicy, ctx: ModelContext): ReturnType<typeof translatePolicy> {
  try {
    return translatePolicy(policy, ctx);
  } catch (err) {
    const namespace = policy.metadata.namespace ?? 'default';
    const name = policy.metadata.name;
    const allow = policy.spec?.action === undefined || policy.spec.action === 'ALLOW';
    const message = `could not be translated (internal error: ${errorMessage(err)}); denying ${allow ? 'all traffic no other policy allows' : 'all traffic'} to what it selects`;
    const hasSelector = typeof policy.spec?.selector === 'object' && policy.spec.selector !== null;
    const targeted = policy.spec?.targetRef !== undefined || (Array.isArray(policy.spec?.targetRefs) && policy.spec.targetRefs.length > 0);
    const authorization = targeted
      ? undefined
      : Authorization.fromPartial({
          name,
          namespace,
          scope: hasSelector ? Scope.WORKLOAD_SELECTOR : namespace === ctx.opts.rootNamespace ? Scope.GLOBAL : Scope.NAMESPACE,
          action: allow ? Action.ALLOW : Action.DENY,
          rules: allow ? [] : [{ clauses: [] }],
        });
    return {
      authorization,
      status: {
        namespace,
        name,
        enforcedBy: authorization ? ['ztunnel'] : [],
        dropped: [],
        summary: message,
        conditions: [{ type: 'ZtunnelAccepted', status: 'False', reason: 'InternalError', message }],
      },
      problems: [{ object: ref('AuthorizationPolicy', policy), severity: 'error', message }],
    };
  }
}
