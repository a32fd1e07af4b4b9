// The words of an AuthorizationPolicy's status: conditions as Istio writes them (types
// ZtunnelAccepted and WaypointAccepted; istiod pilot/pkg/model/service.go and
// ambient/policies.go), with messages that say what the data path does now.

import type { AuthorizationPolicy, StatusCondition } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { annotationsOf } from './labels.js';
import type { PolicyShape } from './policy-shape.js';
import type { TargetOutcome } from './policy-targets.js';

export const DRY_RUN_ANNOTATION = 'istio.io/dry-run';

/** Go's strconv.ParseBool, which Istio reads the annotation with; anything else is not a boolean. */
export function dryRunOf(policy: AuthorizationPolicy): { dryRun: boolean; warning?: string } {
  const value = annotationsOf(policy).get(DRY_RUN_ANNOTATION);
  if (value === undefined) return { dryRun: false };
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return { dryRun: true };
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return { dryRun: false };
  return { dryRun: false, warning: `metadata.annotations["${DRY_RUN_ANNOTATION}"]: "${value}" is not a boolean; the policy is enforced` };
}

export function condition(type: string, status: boolean, reason: string, message: string, policy: AuthorizationPolicy): StatusCondition {
  const out: StatusCondition = { type, status: status ? 'True' : 'False', reason, message };
  const generation = policy.metadata.generation;
  if (typeof generation === 'number' && Number.isInteger(generation)) out.observedGeneration = generation;
  return out;
}

/** Which workloads a ztunnel-bound policy applies to, in words. */
export function scopeText(shape: PolicyShape, ctx: ModelContext): string {
  const root = shape.namespace === ctx.opts.rootNamespace;
  const everywhere = root ? 'the mesh' : `namespace ${shape.namespace}`;
  switch (shape.selector.kind) {
    case 'none':
      return `every workload in ${everywhere}`;
    case 'invalid':
      return `every workload in ${everywhere} (the selector is invalid)`;
    case 'labels':
      if (shape.selector.pairs.length === 0) return `every workload in ${everywhere} (empty selector)`;
      return `workloads labelled ${shape.selector.pairs.map(([k, v]) => `${k}=${v}`).join(',')} in ${root ? 'every namespace' : `namespace ${shape.namespace}`}`;
  }
}

/** Up to three items and a count of the rest. */
export function some(items: readonly string[]): string {
  return items.length <= 3 ? items.join('; ') : `${items.slice(0, 3).join('; ')}; and ${items.length - 3} more`;
}

/**
 * Istio's flattening of per-target outcomes into one WaypointAccepted condition: True when any
 * target is bound; reason Accepted, PartiallyInvalid or the single outcome's own.
 */
export function flattenTargets(outcomes: readonly TargetOutcome[]): { bound: boolean; reason: string; message: string } {
  if (outcomes.length === 1) return { bound: outcomes[0]!.bound, reason: outcomes[0]!.reason, message: outcomes[0]!.message };
  const bound = outcomes.filter((o) => o.bound);
  const unbound = outcomes.filter((o) => !o.bound);
  const reason = bound.length === 0 ? 'Invalid' : unbound.length > 0 ? 'PartiallyInvalid' : 'Accepted';
  const message = [...bound, ...unbound].map((o) => o.message).join('; ');
  return { bound: bound.length > 0, reason, message };
}
