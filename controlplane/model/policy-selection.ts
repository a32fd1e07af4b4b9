// Which ztunnel-bound policies a workload lists in Workload.authorization_policies.
//
// As istiod (ambient/workloads.go buildWorkloadPolicies): selector-based AuthorizationPolicies of
// the pod's namespace and of the root namespace (whose selectors select across namespaces), sorted,
// then the PeerAuthentication-derived names. Namespace- and mesh-wide policies are not listed:
// ztunnel finds those by scope.
//
// Where Ambit is stricter than istiod, always towards enforcing more:
// - selector-based CUSTOM policies are listed (ztunnel gets them as a DENY of everything, see
//   authorization.ts); istiod sends them nowhere;
// - targetRefs policies naming a Service that has no usable waypoint are listed by the pods the
//   service selects (its selector, or for a selector-less service its EndpointSlices' Pod
//   targetRefs): ztunnel enforces them there instead (policy-targets.ts); istiod enforces them
//   nowhere;
// - an empty selector (`selector: {}`) selects every pod in scope, as Kubernetes selectors and
//   Istio's sidecar mode do (istiod sends it with WORKLOAD_SELECTOR scope but no workload lists
//   it, so it does nothing at all);
// - a malformed selector selects every pod in scope too. Selecting nothing would fail open for the
//   pods it was meant for (a DENY that denies nothing, an ALLOW that restricts nothing); selecting
//   all can only add restrictions: more pods under an ALLOW list or a DENY.

import type { AuthorizationPolicy, Pod } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { perView } from './memo.js';
import { labelsOf, namespaceOf, type Labels } from './labels.js';
import { podPeerAuthentication } from './peer-authentication.js';
import { pairsMatch } from './policy-selector.js';
import { policyShape, reservedName } from './policy-shape.js';
import { resolveTargets } from './policy-targets.js';
import { podSliceMemberships, selectingServices } from './selection.js';

interface IndexedPolicy {
  key: string;
  pairs: readonly (readonly [string, string])[];
}

/** The selector policies of one namespace, keyed by one pair of their selector so a pod only checks candidates. */
interface NamespacePolicies {
  /** Selectors with no pairs: every pod. */
  all: IndexedPolicy[];
  /** By `<label>\0<value>` of the selector's first pair. */
  byPair: Map<string, IndexedPolicy[]>;
}

interface SelectionIndex {
  byNamespace: Map<string, NamespacePolicies>;
  root: NamespacePolicies | undefined;
}

/**
 * `<namespace>/<name>` of the selector-based AuthorizationPolicies selecting the pod (its
 * namespace's, and the root namespace's, which select across namespaces), sorted, followed by the
 * converted PeerAuthentication policies that apply to it (sorted).
 */
export function workloadPolicies(pod: Pod, ctx: ModelContext): string[] {
  const index = selectionIndex(ctx);
  const namespace = pod.metadata.namespace ?? 'default';
  const labels = labelsOf(pod);
  const out: string[] = [];
  collect(index.byNamespace.get(namespace), labels, out);
  if (namespace !== ctx.opts.rootNamespace) collect(index.root, labels, out);
  const fallback = fallbackIndex(ctx);
  if (fallback.size > 0) {
    const seen = new Set(out);
    const add = (svcKey: string): void => {
      for (const key of fallback.get(svcKey) ?? []) {
        if (seen.has(key)) continue;
        seen.add(key);
        out.push(key);
      }
    };
    for (const s of selectingServices(pod, labels, ctx)) add(`${namespaceOf(s.svc)}/${s.svc.metadata.name}`);
    // A selector-less service's slices may name pods of other namespaces.
    for (const m of podSliceMemberships(pod, ctx)) add(`${namespaceOf(m.svc)}/${m.svc.metadata.name}`);
  }
  out.sort();
  for (const name of podPeerAuthentication(pod, ctx).policies) out.push(name);
  return out;
}

function collect(policies: NamespacePolicies | undefined, labels: Labels, out: string[]): void {
  if (!policies) return;
  for (const p of policies.all) out.push(p.key);
  if (policies.byPair.size === 0) return;
  for (const [k, v] of labels) {
    const candidates = policies.byPair.get(`${k}\0${v}`);
    if (!candidates) continue;
    for (const p of candidates) if (pairsMatch(p.pairs, labels)) out.push(p.key);
  }
}

const selectionIndex = perView((ctx: ModelContext): SelectionIndex => buildIndex(ctx));

/**
 * By targeted Service `<namespace>/<name>`: the targetRefs policies ztunnel enforces on that
 * service's pods because it has no usable waypoint (authorization.ts sends them exactly when
 * resolveTargets finds such services, the action is not AUDIT and the name is not reserved).
 * Reads the policies, and through resolveTargets the Services, Gateways and namespaces; a Service
 * target is always in the policy's namespace.
 */
const fallbackIndex = perView((ctx: ModelContext): ReadonlyMap<string, string[]> => {
  const out = new Map<string, string[]>();
  for (const policy of ctx.view.authorizationPolicies) {
    const shape = policyShape(policy);
    if (!shape.targeted || shape.action === 'AUDIT' || reservedName(shape, ctx.opts.rootNamespace)) continue;
    let services;
    try {
      services = resolveTargets(policy, ctx).fallbackServices;
    } catch {
      // The translation fails too (build's guard reports it) and sends nothing to list.
      continue;
    }
    for (const s of services) {
      const list = out.get(s.key);
      if (list) list.push(shape.key);
      else out.set(s.key, [shape.key]);
    }
  }
  return out;
});

function buildIndex(ctx: ModelContext): SelectionIndex {
  const byNamespace = new Map<string, NamespacePolicies>();
  let root: NamespacePolicies | undefined;
  for (const [namespace, policies] of ctx.policiesByNamespace) {
    const indexed = indexNamespace(policies, ctx.opts.rootNamespace);
    if (!indexed) continue;
    byNamespace.set(namespace, indexed);
    if (namespace === ctx.opts.rootNamespace) root = indexed;
  }
  return { byNamespace, root };
}

function indexNamespace(policies: readonly AuthorizationPolicy[], rootNamespace: string): NamespacePolicies | undefined {
  const out: NamespacePolicies = { all: [], byPair: new Map() };
  let any = false;
  for (const policy of policies) {
    const shape = policyShape(policy);
    if (!shape.ztunnel || shape.selector.kind === 'none' || reservedName(shape, rootNamespace)) continue;
    any = true;
    const pairs = shape.selector.kind === 'labels' ? shape.selector.pairs : [];
    const entry: IndexedPolicy = { key: shape.key, pairs };
    const first = pairs[0];
    if (!first) {
      out.all.push(entry);
      continue;
    }
    const k = `${first[0]}\0${first[1]}`;
    const list = out.byPair.get(k);
    if (list) list.push(entry);
    else out.byPair.set(k, [entry]);
  }
  return any ? out : undefined;
}
