// Where a targetRefs AuthorizationPolicy is enforced: which waypoints, and for which of their
// services (istio-ambient-spec.md §5.3; istiod pilot/pkg/model/policyattachment.go
// ShouldAttachPolicy and ambient/policies.go WaypointPolicyStatusCollection).
//
// - kind Gateway (group gateway.networking.k8s.io), same namespace: that waypoint, all its traffic;
// - kind Service (core group), same namespace: the waypoint the service is bound to, that service;
// - kind GatewayClass istio-waypoint, policy in the root namespace: every waypoint.
// istiod enforces a target it cannot attach to a waypoint nowhere. Ambit fails closed instead
// (authorization.ts applies what this file finds), and the status says exactly why and what to do,
// since this is where ambient users most often trip:
// - a Service that exists but has no usable waypoint (no istio.io/use-waypoint, or a waypoint that
//   is missing or refuses it): the policy is enforced at ztunnel on the pods the service selects
//   (`fallbackServices`), as a selector policy would be;
// - a target that cannot be resolved at all (a Gateway that does not exist, a malformed
//   reference, a kind Ambit cannot enforce on, another namespace, a wrong GatewayClass): what it
//   meant is unknown, so every waypoint of the policy's namespace gets the policy as invalid and
//   denies every request (`failClosed: 'namespace'`);
// - a Service that does not exist: nothing to protect; the target is ignored (as istiod).
// A Gateway that exists but is not a waypoint is someone else's (an ingress): ignored, as Ambit
// enforces policies only on waypoints.

import type { AuthorizationPolicy, Gateway, Service } from '../../mesh/k8s/types.js';
import { WAYPOINT_GATEWAY_CLASS } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { isRecord, show } from './labels.js';
import { perObject } from './memo.js';
import { policyShape } from './policy-shape.js';
import { isExternalName, serviceSelector } from './selection.js';
import { serviceWaypoint } from './waypoint-binding.js';

export const GATEWAY_API_GROUP = 'gateway.networking.k8s.io';

/** One waypoint enforcing the policy: everything through it, or only some of its services. */
export interface WaypointTarget {
  /** `<namespace>/<gateway name>`. */
  waypoint: string;
  /** Service hostnames; empty when the whole waypoint is targeted. */
  services: string[];
}

export interface TargetOutcome {
  /** As Istio names an ancestor: `Kind.group:namespace/name`. */
  ancestor: string;
  bound: boolean;
  /** Istio's reasons: Accepted, TargetNotFound, AncestorNotBound, Invalid. */
  reason: string;
  message: string;
  /**
   * How an unbound target fails closed: `ztunnel`, enforced on the service's pods (see
   * fallbackServices); `namespace`, the policy is invalid at every waypoint of its namespace.
   * Undefined: nothing to protect (a missing Service, a non-waypoint Gateway), or bound.
   */
  failClosed?: 'ztunnel' | 'namespace';
}

/** A targeted Service that exists but has no usable waypoint. */
export interface FallbackService {
  /** `<namespace>/<name>`. */
  key: string;
  hostname: string;
  /** Which pods it selects, in words (`pods labelled app=x`). */
  pods: string;
}

export interface TargetResolution {
  targets: WaypointTarget[];
  outcomes: TargetOutcome[];
  /** Field problems (`spec.targetRefs[1].kind: ...`); each fails closed like `failClosed: 'namespace'`. */
  errors: string[];
  warnings: string[];
  /** What a waypoint matches itself against (waypointPolicies): targeted waypoint Gateways... */
  gateways: string[];
  /** ...GatewayClass istio-waypoint from the root namespace... */
  everyWaypoint: boolean;
  /** ...and the hostnames of targeted Services that exist. */
  serviceHostnames: string[];
  /** Targeted Services without a usable waypoint, where ztunnel enforces the policy instead. */
  fallbackServices: FallbackService[];
  /** Some target cannot be resolved (an error, or an outcome with failClosed `namespace`). */
  unresolved: boolean;
  /** The waypoint Gateways of the policy's namespace, sorted, when `unresolved`. */
  namespaceWaypoints: string[];
}

interface Ref {
  path: string;
  group: string;
  kind: string;
  name: string;
  namespace: string | undefined;
}

/** Reads the policy, the Gateways, the Services, and (through their waypoint binding) the namespaces. */
export const resolveTargets = perObject((policy: AuthorizationPolicy, ctx: ModelContext): TargetResolution => resolve(policy, ctx));

function resolve(policy: AuthorizationPolicy, ctx: ModelContext): TargetResolution {
  const shape = policyShape(policy);
  const out: TargetResolution = {
    targets: [],
    outcomes: [],
    errors: [],
    warnings: [],
    gateways: [],
    everyWaypoint: false,
    serviceHostnames: [],
    fallbackServices: [],
    unresolved: false,
    namespaceWaypoints: [],
  };
  const whole = new Set<string>();
  const partial = new Map<string, Set<string>>();
  for (const ref of readRefs(policy, out)) {
    const ancestor = `${ref.kind}.${ref.group === '' ? 'core' : ref.group}:${ref.namespace ?? shape.namespace}/${ref.name}`;
    const outcome = (bound: boolean, reason: string, message: string, failClosed?: 'ztunnel' | 'namespace'): void => {
      out.outcomes.push({ ancestor, bound, reason, message, ...(failClosed ? { failClosed } : {}) });
    };
    if (ref.namespace !== undefined && ref.namespace !== shape.namespace) {
      outcome(false, 'Invalid', `${ref.path}.namespace: ${show(ref.namespace)} differs from the policy's namespace; a policy can only target objects in its own namespace (create it in ${ref.namespace})`, 'namespace');
      continue;
    }
    const key = `${shape.namespace}/${ref.name}`;
    if (ref.kind === 'Gateway' && ref.group === GATEWAY_API_GROUP) {
      const gateway = ctx.gateways.get(key);
      if (!gateway) {
        outcome(false, 'TargetNotFound', `Gateway ${key} was not found`, 'namespace');
      } else if (!isWaypoint(gateway)) {
        outcome(false, 'TargetNotFound', `Gateway ${key} is not a waypoint (its gatewayClassName is ${show(isRecord(gateway.spec) ? gateway.spec.gatewayClassName : undefined)}; Ambit enforces targetRefs policies only on waypoints, class ${WAYPOINT_GATEWAY_CLASS})`);
      } else {
        whole.add(key);
        out.gateways.push(key);
        outcome(true, 'Accepted', `bound to ${key}`);
      }
    } else if (ref.kind === 'Service' && (ref.group === '' || ref.group === 'core')) {
      const svc = ctx.services.get(key);
      if (!svc) {
        outcome(false, 'TargetNotFound', `Service ${key} was not found`);
        continue;
      }
      if (isExternalName(svc)) {
        outcome(false, 'AncestorNotBound', `Service ${key} is an ExternalName service: it has no waypoint and no workloads to enforce the policy on`);
        continue;
      }
      out.serviceHostnames.push(serviceHostname(svc, ctx));
      const binding = serviceWaypoint(svc, ctx).value;
      if (!binding || !binding.gateway) {
        const why = !binding
          ? `Service ${key} is not bound to a waypoint: label the service (or namespace ${shape.namespace}) istio.io/use-waypoint=<waypoint name>, or target the waypoint Gateway itself`
          : `Service ${key} is bound to waypoint ${binding.key}, which ${binding.unusable ?? 'cannot serve it'} (traffic to the service is refused until that is fixed)`;
        if (!out.fallbackServices.some((f) => f.key === key)) out.fallbackServices.push({ key, hostname: serviceHostname(svc, ctx), pods: selectedPods(svc) });
        outcome(false, 'AncestorNotBound', why, 'ztunnel');
      } else {
        let services = partial.get(binding.key);
        if (!services) partial.set(binding.key, (services = new Set()));
        services.add(serviceHostname(svc, ctx));
        outcome(true, 'Accepted', `bound to ${binding.key} (for Service ${key})`);
      }
    } else if (ref.kind === 'GatewayClass' && ref.group === GATEWAY_API_GROUP) {
      if (ref.name !== WAYPOINT_GATEWAY_CLASS) {
        outcome(false, 'Invalid', `GatewayClass ${show(ref.name)} cannot be targeted; only GatewayClass ${WAYPOINT_GATEWAY_CLASS} (every waypoint) can`, 'namespace');
      } else if (shape.namespace !== ctx.opts.rootNamespace) {
        outcome(false, 'Invalid', `GatewayClass ${WAYPOINT_GATEWAY_CLASS} is only honoured for policies in the root namespace ${ctx.opts.rootNamespace}; move the policy there, or target a Gateway in ${shape.namespace}`, 'namespace');
      } else {
        out.everyWaypoint = true;
        const all = allWaypoints(ctx);
        for (const w of all) whole.add(w);
        outcome(true, 'Accepted', all.length > 0 ? `bound to every waypoint (${all.join(', ')})` : 'bound to every waypoint (none exists yet)');
      }
    } else if (ref.kind === 'ServiceEntry') {
      outcome(false, 'TargetNotFound', `ServiceEntry ${key}: Ambit does not read ServiceEntries, so it cannot tell which waypoint serves it`, 'namespace');
    } else {
      outcome(false, 'Invalid', `${ref.path}: kind ${show(ref.kind)} of group ${show(ref.group)} cannot be targeted by an AuthorizationPolicy; use Gateway or GatewayClass (group ${GATEWAY_API_GROUP}) or Service (core group)`, 'namespace');
    }
  }
  out.unresolved = out.errors.length > 0 || out.outcomes.some((o) => o.failClosed === 'namespace');
  if (out.unresolved) out.namespaceWaypoints = allWaypoints(ctx).filter((w) => w.startsWith(`${shape.namespace}/`));
  for (const waypoint of [...whole].sort()) out.targets.push({ waypoint, services: [] });
  for (const [waypoint, services] of [...partial].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    if (!whole.has(waypoint)) out.targets.push({ waypoint, services: [...services].sort() });
  }
  out.targets.sort((a, b) => (a.waypoint < b.waypoint ? -1 : a.waypoint > b.waypoint ? 1 : 0));
  return out;
}

export function serviceHostname(svc: Service, ctx: ModelContext): string {
  return `${svc.metadata.name}.${svc.metadata.namespace ?? 'default'}.svc.${ctx.opts.domainSuffix}`;
}

/** The pods a Service selects, in words (for status messages; reads the Service only, never the pods). */
function selectedPods(svc: Service): string {
  const selector = serviceSelector(svc);
  switch (selector.kind) {
    case 'selector':
      return `pods labelled ${selector.pairs.map(([k, v]) => `${k}=${v}`).join(',')}`;
    case 'none':
      return 'pods its EndpointSlices name';
    case 'invalid':
      return 'no pods (its selector is invalid)';
  }
}

export function isWaypoint(gateway: Gateway): boolean {
  return isRecord(gateway.spec) && gateway.spec.gatewayClassName === WAYPOINT_GATEWAY_CLASS;
}

function allWaypoints(ctx: ModelContext): string[] {
  const out: string[] = [];
  for (const [key, gateway] of ctx.gateways) if (isWaypoint(gateway)) out.push(key);
  return out.sort();
}

/**
 * targetRefs, plus the legacy targetRef. istiod uses targetRef only when targetRefs is empty and
 * Istio rejects both at once; Ambit takes both (enforcing in more places is the safe reading).
 */
function readRefs(policy: AuthorizationPolicy, out: TargetResolution): Ref[] {
  const spec: Record<string, unknown> = isRecord(policy.spec) ? policy.spec : {};
  const refs: Ref[] = [];
  const raw = spec.targetRefs;
  if (Array.isArray(raw)) {
    raw.forEach((r, i) => addRef(r, `spec.targetRefs[${i}]`, refs, out));
  } else if (isRecord(raw)) {
    // A single reference where a list belongs: still plainly names its target, and ignoring it
    // would leave the policy enforced nowhere.
    out.warnings.push('spec.targetRefs: a single reference, not a list; read as a list of one');
    addRef(raw, 'spec.targetRefs', refs, out);
  } else if (raw !== undefined && raw !== null) {
    out.errors.push(`spec.targetRefs: ${show(raw)} is not a list of references`);
  }
  if (spec.targetRef !== undefined && spec.targetRef !== null) {
    if (refs.length > 0) out.warnings.push('spec.targetRef and spec.targetRefs are both set (Istio rejects this); both are used');
    addRef(spec.targetRef, 'spec.targetRef', refs, out);
  }
  return refs;
}

function addRef(value: unknown, path: string, refs: Ref[], out: TargetResolution): void {
  if (!isRecord(value)) {
    out.errors.push(`${path}: ${show(value)} is not a reference (group, kind, name)`);
    return;
  }
  const { group, kind, name, namespace } = value;
  const bad: string[] = [];
  if (group !== undefined && group !== null && typeof group !== 'string') bad.push(`${path}.group: ${show(group)} is not a string`);
  if (typeof kind !== 'string' || kind === '') bad.push(`${path}.kind: ${kind === undefined ? 'missing' : `${show(kind)} is not a kind`}`);
  if (typeof name !== 'string' || name === '') bad.push(`${path}.name: ${name === undefined ? 'missing' : `${show(name)} is not a name`}`);
  if (namespace !== undefined && namespace !== null && typeof namespace !== 'string') bad.push(`${path}.namespace: ${show(namespace)} is not a string`);
  if (bad.length > 0) {
    out.errors.push(...bad);
    return;
  }
  refs.push({ path, group: typeof group === 'string' ? group : '', kind: kind as string, name: name as string, namespace: typeof namespace === 'string' && namespace !== '' ? namespace : undefined });
}
