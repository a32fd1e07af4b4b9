// Which ztunnel-bound policies a workload lists in Workload.authorization_policies.
//
// As istiod (ambient/workloads.go buildWorkloadPolicies): selector-based AuthorizationPolicies of
// the pod's namespace and of the root namespace (whose selectors select across namespaces), sorted,
// then the PeerAuthentication-derived names. Namespace- and mesh-wide policies are not listed:
// ztunnel finds those by scope.
//
// Where Ambit is stricter than istiod, always towards enforcing more:
// - an empty selector (`selector: {}`) selects every pod in scope, as Kubernetes selectors and
//   Istio's sidecar mode do (istiod sends it with WORKLOAD_SELECTOR scope but no workload lists
//   it, so it does nothing at all);
// - a malformed selector selects every pod in scope too. Selecting nothing would fail open for the
//   pods it was meant for (a DENY that denies nothing, an ALLOW that restricts nothing); selecting
//   all can only add restrictions: more pods under an ALLOW list or a DENY.

import type { AuthorizationPolicy, Pod } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { labelsOf, type Labels } from './labels.js';
import { podPeerAuthentication } from './peer-authentication.js';
import { pairsMatch } from './policy-selector.js';
import { policyShape } from './policy-shape.js';

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

const indexes = new WeakMap<ModelContext, SelectionIndex>();

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

function selectionIndex(ctx: ModelContext): SelectionIndex {
  let index = indexes.get(ctx);
  if (!index) {
    index = buildIndex(ctx);
    indexes.set(ctx, index);
  }
  return index;
}

function buildIndex(ctx: ModelContext): SelectionIndex {
  const byNamespace = new Map<string, NamespacePolicies>();
  let root: NamespacePolicies | undefined;
  for (const [namespace, policies] of ctx.policiesByNamespace) {
    const indexed = indexNamespace(policies);
    if (!indexed) continue;
    byNamespace.set(namespace, indexed);
    if (namespace === ctx.opts.rootNamespace) root = indexed;
  }
  return { byNamespace, root };
}

function indexNamespace(policies: readonly AuthorizationPolicy[]): NamespacePolicies | undefined {
  const out: NamespacePolicies = { all: [], byPair: new Map() };
  let any = false;
  for (const policy of policies) {
    const shape = policyShape(policy);
    if (!shape.ztunnel || shape.selector.kind === 'none') continue;
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
