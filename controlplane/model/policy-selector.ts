// The `spec.selector` of AuthorizationPolicies and PeerAuthentications (Istio's WorkloadSelector:
// matchLabels only), read once per object. Objects of a view are immutable and keep their identity
// across views while unchanged, so the parse is cached on the object itself.

import { isRecord, show, type Labels } from './labels.js';

export type PolicySelector =
  /** No selector: the policy is namespace-wide (mesh-wide in the root namespace). */
  | { kind: 'none' }
  /** Every pair must be among the pod's labels; no pairs selects every pod in scope. */
  | { kind: 'labels'; pairs: readonly (readonly [string, string])[] }
  /** Unreadable: what it was meant to select is unknown; callers decide how to fail closed. */
  | { kind: 'invalid'; message: string };

const NONE: PolicySelector = { kind: 'none' };
const cache = new WeakMap<object, PolicySelector>();

/** The selector of an object's spec; `message` names the field path (`spec.selector...`). */
export function policySelector(obj: { spec?: unknown }): PolicySelector {
  let parsed = cache.get(obj);
  if (!parsed) {
    parsed = parse(isRecord(obj.spec) ? obj.spec.selector : undefined);
    cache.set(obj, parsed);
  }
  return parsed;
}

function parse(selector: unknown): PolicySelector {
  if (selector === undefined || selector === null) return NONE;
  if (!isRecord(selector)) return { kind: 'invalid', message: `spec.selector: ${show(selector)} is not a map` };
  for (const key of Object.keys(selector)) {
    // Istio's WorkloadSelector has nothing else; matchExpressions in particular would be ignored
    // by Istio, which silently widens or narrows what the user meant.
    if (key !== 'matchLabels') return { kind: 'invalid', message: `spec.selector.${key}: not supported (Istio's workload selector has only matchLabels)` };
  }
  const labels = selector.matchLabels;
  if (labels === undefined || labels === null) return { kind: 'labels', pairs: [] };
  if (!isRecord(labels)) return { kind: 'invalid', message: `spec.selector.matchLabels: ${show(labels)} is not a map` };
  const pairs: (readonly [string, string])[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v !== 'string') return { kind: 'invalid', message: `spec.selector.matchLabels.${k}: ${show(v)} is not a string` };
    pairs.push([k, v]);
  }
  // Sorted so that the index keys a selector by a stable pair.
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { kind: 'labels', pairs };
}

export function pairsMatch(pairs: readonly (readonly [string, string])[], labels: Labels): boolean {
  for (const [k, v] of pairs) if (labels.get(k) !== v) return false;
  return true;
}
