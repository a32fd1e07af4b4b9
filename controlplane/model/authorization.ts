// Istio AuthorizationPolicy to istio.security.Authorization (ztunnel) and to L7 policies (waypoints),
// with where each is enforced (istio-ambient-spec.md §4.3, §5.4, §6).
//
// A policy goes to exactly one place: with targetRef(s) to the waypoints its targets resolve to
// (never to ztunnel); otherwise, as ALLOW or DENY, to ztunnel with a scope from its selector.
// AUDIT and CUSTOM without targetRefs are enforced nowhere, as in Istio. The translation never
// throws for bad input and fails closed: see ztunnel-policy.ts and waypoint-policy.ts.

import { Action, type Authorization } from '../../proto/gen/istio/security/authorization.js';
import type { L7Policy } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { AuthorizationPolicy, Gateway } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { perContext } from './memo.js';
import { readRules } from './policy-rules.js';
import { policyShape, type PolicyShape } from './policy-shape.js';
import { condition, dryRunOf, flattenTargets, scopeText, some } from './policy-status.js';
import { isWaypoint, resolveTargets, type TargetResolution } from './policy-targets.js';
import type { PolicyStatus, Problem } from './types.js';
import { l7Policy, type L7Translation } from './waypoint-policy.js';
import { MATCH_EVERYTHING, ztunnelAuthorization, ztunnelRules, type ZtunnelRules } from './ztunnel-policy.js';

export interface PolicyTranslation {
  /** What ztunnel gets, named `<namespace>/<name>`; absent for targetRefs policies and CUSTOM/AUDIT. */
  authorization: Authorization | undefined;
  status: PolicyStatus;
  problems: Problem[];
}

export function translatePolicy(policy: AuthorizationPolicy, ctx: ModelContext): PolicyTranslation {
  const shape = policyShape(policy);
  if (shape.targeted) return waypointTranslation(policy, shape, ctx);
  if (shape.action === 'AUDIT' || shape.action === 'CUSTOM') return unsupportedAction(policy, shape, shape.action, ctx);
  try {
    return ztunnelTranslation(policy, shape, ctx);
  } catch (err) {
    // A bug, not bad input. build.ts's guard turns a failed policy into an ALLOW with no rules,
    // which is right for an ALLOW but lets a broken DENY deny only what no ALLOW allows.
    if (shape.action === 'ALLOW') throw err;
    return internalErrorDeny(policy, shape, ctx, err);
  }
}

function internalErrorDeny(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext, err: unknown): PolicyTranslation {
  const scope = scopeText(shape, ctx);
  const message = `could not be translated (internal error: ${err instanceof Error ? err.message : String(err)}); ztunnel denies all traffic to ${scope}`;
  return {
    authorization: ztunnelAuthorization(shape, ctx, Action.DENY, [MATCH_EVERYTHING], false),
    status: {
      namespace: shape.namespace,
      name: shape.name,
      enforcedBy: ['ztunnel'],
      dropped: [],
      summary: `ztunnel denies all traffic to ${scope} (fail closed: internal error)`,
      conditions: [condition('ZtunnelAccepted', false, 'InternalError', message, policy)],
    },
    problems: [{ object: { kind: 'AuthorizationPolicy', namespace: shape.namespace, name: shape.name }, severity: 'error', message }],
  };
}

/** The L7 policies a waypoint enforces: those targeting it, its GatewayClass, or the services it serves. */
export function waypointPolicies(gateway: Gateway, servedServices: readonly string[], ctx: ModelContext): { policies: L7Policy[]; problems: Problem[] } {
  const index = waypointIndex(ctx);
  const key = `${gateway.metadata.namespace ?? 'default'}/${gateway.metadata.name}`;
  // By policy key: the whole waypoint, or some of its services.
  const found = new Map<string, { entry: WaypointEntry; whole: boolean; services: Set<string> }>();
  const add = (entry: WaypointEntry, whole: boolean, hostname?: string): void => {
    let f = found.get(entry.shape.key);
    if (!f) found.set(entry.shape.key, (f = { entry, whole: false, services: new Set() }));
    if (whole) f.whole = true;
    if (hostname !== undefined) f.services.add(hostname);
  };
  for (const entry of index.byGateway.get(key) ?? []) add(entry, true);
  if (isWaypoint(gateway)) for (const entry of index.everyWaypoint) add(entry, true);
  for (const hostname of servedServices) for (const entry of index.byService.get(hostname) ?? []) add(entry, false, hostname);
  const policies: L7Policy[] = [];
  for (const policyKey of [...found.keys()].sort()) {
    const f = found.get(policyKey)!;
    policies.push({ ...f.entry.l7.policy, services: f.whole ? [] : [...f.services].sort() });
  }
  return { policies, problems: [] };
}

// ---------------------------------------------------------------------------------------------
// Waypoint-bound (targetRefs)

interface WaypointEntry {
  shape: PolicyShape;
  targets: TargetResolution;
  l7: L7Translation;
  dryRun: boolean;
  dryRunWarning: string | undefined;
}

interface WaypointIndex {
  entries: Map<AuthorizationPolicy, WaypointEntry>;
  byGateway: Map<string, WaypointEntry[]>;
  everyWaypoint: WaypointEntry[];
  byService: Map<string, WaypointEntry[]>;
}

const waypointIndex = perContext((ctx: ModelContext): WaypointIndex => {
  const index: WaypointIndex = { entries: new Map(), byGateway: new Map(), everyWaypoint: [], byService: new Map() };
  for (const policy of ctx.view.authorizationPolicies) {
    const shape = policyShape(policy);
    if (!shape.targeted) continue;
    let entry: WaypointEntry;
    try {
      entry = waypointEntry(policy, shape, ctx);
    } catch {
      // translatePolicy reports it (through build's guard); one bad policy must not hide the others.
      continue;
    }
    index.entries.set(policy, entry);
    for (const g of entry.targets.gateways) push(index.byGateway, g, entry);
    if (entry.targets.everyWaypoint) index.everyWaypoint.push(entry);
    for (const h of entry.targets.serviceHostnames) push(index.byService, h, entry);
  }
  return index;
});

function waypointEntry(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext): WaypointEntry {
  const { dryRun, warning } = dryRunOf(policy);
  return { shape, targets: resolveTargets(policy, ctx), l7: l7Policy(policy, shape, dryRun), dryRun, dryRunWarning: warning };
}

function waypointTranslation(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext): PolicyTranslation {
  const entry = waypointIndex(ctx).entries.get(policy) ?? waypointEntry(policy, shape, ctx);
  const { targets, l7 } = entry;
  const object = { kind: 'AuthorizationPolicy', namespace: shape.namespace, name: shape.name };
  const problems: Problem[] = [];
  const enforcedBy = targets.targets.map((t) => `waypoint ${t.waypoint}`);
  const where = targets.targets.map((t) => (t.services.length > 0 ? `${t.waypoint} (${t.services.join(', ')})` : t.waypoint)).join(', ');

  const nowhere = enforcedBy.length === 0;
  // Enforced nowhere is a policy left out (error); some targets ignored is a caveat (warning).
  const targetSeverity = nowhere ? 'error' : 'warning';
  const targetEffect = nowhere ? 'the policy is enforced nowhere (policies with targetRefs are never enforced by ztunnel)' : `this target is ignored; the policy is enforced by ${enforcedBy.join(', ')}`;
  for (const e of targets.errors) problems.push({ object, severity: targetSeverity, message: `${e}; ${targetEffect}` });
  for (const w of targets.warnings) problems.push({ object, severity: 'warning', message: w });
  for (const o of targets.outcomes) if (!o.bound) problems.push({ object, severity: targetSeverity, message: `${o.message}; ${targetEffect}` });
  if (shape.selector.kind !== 'none') problems.push({ object, severity: 'warning', message: 'spec.selector: ignored, the policy has targetRefs (Istio rejects both together)' });
  if (entry.dryRunWarning) problems.push({ object, severity: 'warning', message: entry.dryRunWarning });
  for (const w of l7.warnings) problems.push({ object, severity: 'warning', message: w });

  const notes: string[] = [];
  const invalid = l7.policy.invalidReason !== '';
  if (invalid) {
    notes.push(`${some(l7.errors)}: the waypoint denies every request this policy applies to until it is fixed.`);
    for (const e of l7.errors) problems.push({ object, severity: 'error', message: `${e}; the waypoint denies every request this policy applies to` });
  } else if (l7.errors.length > 0) {
    notes.push(`${some(l7.errors)}: ${l7.omittedRules.join(', ')} left out (the policy then ${l7.policy.action === 'ALLOW' ? 'allows' : 'audits'} less).`);
    for (const e of l7.errors) problems.push({ object, severity: 'error', message: `${e}; the rule is left out` });
  }
  const inexpressible = l7.omittedRules.filter((r) => !l7.errors.some((e) => e.startsWith(`${r}.`) || e.startsWith(`${r}:`)));
  if (inexpressible.length > 0) {
    notes.push(`trustDomains written as a suffix pattern, or beside principals, cannot be enforced; ${inexpressible.join(', ')} left out (less is allowed).`);
    problems.push({ object, severity: 'warning', message: `trustDomains cannot be enforced as written; ${inexpressible.join(', ')} left out` });
  }
  if (entry.dryRun) notes.push('Dry run: the waypoint logs what this policy would decide and does not enforce it.');

  const conditions = [];
  if (targets.outcomes.length === 0) {
    const message = `${some(targets.errors)}: no usable target, so the policy is enforced nowhere (policies with targetRefs are never enforced by ztunnel).`;
    conditions.push(condition('WaypointAccepted', false, 'Invalid', message, policy));
  } else {
    const flat = flattenTargets(targets.outcomes);
    const errors = targets.errors.length > 0 ? `; ${some(targets.errors)}` : '';
    const conclusion = nowhere
      ? '; the policy is enforced nowhere (policies with targetRefs are never enforced by ztunnel)'
      : targets.outcomes.some((o) => !o.bound) || errors !== ''
        ? '; the other targets are ignored'
        : '';
    const head = `${flat.message}${errors}${conclusion}`;
    const message = notes.length === 0 ? head : `${head}. ${notes.join(' ')}`;
    const flatReason = flat.bound && flat.reason === 'Accepted' && targets.errors.length > 0 ? 'PartiallyInvalid' : flat.reason;
    const reason = flat.bound && (invalid || l7.errors.length > 0) ? 'InvalidValue' : flatReason;
    conditions.push(condition('WaypointAccepted', flat.bound && !invalid && l7.errors.length === 0, reason, message, policy));
  }

  const action = invalid ? 'DENY (fail closed: denies every request it applies to)' : l7.policy.action === 'CUSTOM' ? `CUSTOM (provider ${l7.policy.provider})` : l7.policy.action;
  const summary =
    enforcedBy.length === 0
      ? `not enforced anywhere: ${some([...targets.outcomes.map((o) => o.message), ...targets.errors])}`
      : `${entry.dryRun ? 'dry run (logged, not enforced): ' : ''}${action} at waypoint ${where}`;
  return {
    authorization: undefined,
    status: { namespace: shape.namespace, name: shape.name, enforcedBy, dropped: [], summary, conditions },
    problems,
  };
}

// ---------------------------------------------------------------------------------------------
// ztunnel-bound (selector, namespace, mesh)

function unsupportedAction(policy: AuthorizationPolicy, shape: PolicyShape, action: 'AUDIT' | 'CUSTOM', ctx: ModelContext): PolicyTranslation {
  const object = { kind: 'AuthorizationPolicy', namespace: shape.namespace, name: shape.name };
  const consequence =
    action === 'CUSTOM'
      ? 'This policy is enforced nowhere: no external authorization happens for its requests. In ambient mode, attach CUSTOM policies to a waypoint with targetRefs (kind Gateway or Service).'
      : 'This policy is enforced nowhere: nothing is audited. In ambient mode, attach AUDIT policies to a waypoint with targetRefs (kind Gateway or Service).';
  const message = `ztunnel does not support the ${action} action. ${consequence}`;
  return {
    authorization: undefined,
    status: {
      namespace: shape.namespace,
      name: shape.name,
      enforcedBy: [],
      dropped: [],
      summary: `not enforced anywhere: ztunnel has no ${action} action and the policy targets no waypoint (it would apply to ${scopeText(shape, ctx)})`,
      conditions: [condition('ZtunnelAccepted', false, 'UnsupportedValue', message, policy)],
    },
    problems: [{ object, severity: 'warning', message }],
  };
}

function ztunnelTranslation(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext): PolicyTranslation {
  const object = { kind: 'AuthorizationPolicy', namespace: shape.namespace, name: shape.name };
  const problems: Problem[] = [];
  const scope = scopeText(shape, ctx);
  const { dryRun, warning: dryRunWarning } = dryRunOf(policy);
  const read = readRules(policy);
  if (dryRunWarning) problems.push({ object, severity: 'warning', message: dryRunWarning });
  for (const w of read.warnings) problems.push({ object, severity: 'warning', message: w });
  const notes: string[] = read.warnings.map((w) => `${w}.`);
  let failed = false;
  if (shape.selector.kind === 'invalid') {
    failed = true;
    const effect = `applied to ${scope.replace(' (the selector is invalid)', '')} so that it fails closed`;
    problems.push({ object, severity: 'error', message: `${shape.selector.message}; ${effect}` });
    notes.push(`${shape.selector.message}: ${effect}.`);
  } else if (shape.selector.kind === 'labels' && shape.selector.pairs.length === 0) {
    const effect = `it selects ${scope.replace(' (empty selector)', '')} (istiod would apply it to no workload)`;
    problems.push({ object, severity: 'warning', message: `spec.selector: empty, so ${effect}` });
    notes.push(`The selector is empty: ${effect}.`);
  }
  const spec = policy.spec as unknown;
  if (typeof spec === 'object' && spec !== null && 'provider' in spec && (spec as { provider?: unknown }).provider != null) {
    problems.push({ object, severity: 'warning', message: 'spec.provider: only used with action CUSTOM; ignored' });
  }

  let rules: ZtunnelRules | undefined;
  let action: Action;
  let wireRules;
  if (shape.action === undefined) {
    failed = true;
    action = Action.DENY;
    wireRules = [MATCH_EVERYTHING];
    notes.push(`${shape.actionProblem}; ztunnel enforces this policy as a DENY of all traffic to ${scope} until it is fixed.`);
    problems.push({ object, severity: 'error', message: `${shape.actionProblem}; enforced as a DENY of all traffic to ${scope}` });
  } else {
    const allow = shape.action === 'ALLOW';
    action = allow ? Action.ALLOW : Action.DENY;
    rules = ztunnelRules(shape.action as 'ALLOW' | 'DENY', read.rules, read.errors.length > 0);
    wireRules = rules.rules;
    const ruleErrors = read.rules.flatMap((r) => r.errors);
    const errors = [...read.errors, ...ruleErrors];
    if (errors.length > 0) {
      failed = true;
      const effect = allow
        ? read.errors.length > 0
          ? 'no rule is known, so this ALLOW allows nothing'
          : `${rules.invalidRules.join(', ')} left out (an ALLOW only allows less without ${rules.invalidRules.length > 1 ? 'them' : 'it'})`
        : `this DENY denies all traffic to ${scope} until it is fixed`;
      notes.push(`${some(errors)}: ${effect}.`);
      for (const e of errors) problems.push({ object, severity: 'error', message: `${e}; ${allow ? (read.errors.length > 0 ? 'no rule is known, so the ALLOW allows nothing' : 'the rule is left out') : `the DENY denies all traffic to ${scope}`}` });
    }
    if (rules.http.length > 0) {
      notes.push(`ztunnel does not support HTTP attributes (found: ${rules.http.join(', ')}). In ambient mode you must use a waypoint proxy to enforce HTTP rules: attach the policy to one with targetRefs.`);
    }
    if (rules.inexpressible.length > 0) {
      notes.push(`ztunnel cannot enforce ${rules.inexpressible.join(', ')} written as a suffix pattern or beside principals; ${allow ? 'rules using them are handled' : 'they are removed'} like HTTP attributes.`);
    }
    if (allow && rules.droppedRules.length > 0) {
      notes.push(`Within an ALLOW policy, rules with attributes ztunnel cannot enforce are omitted (${rules.droppedRules.join(', ')}); this is more restrictive than requested.`);
    }
    if (!allow && !rules.denyAll && rules.denyEffects.length > 0) notes.push(denyEffectNote(rules, read.rules.length));
    if (allow && rules.rules.length === 0 && read.rules.length > 0) {
      notes.push(`No rule is left: this policy denies all traffic to ${scope} that no other ALLOW policy allows.`);
    }
    if (rules.dropped.length > 0) {
      problems.push({ object, severity: 'warning', message: `ztunnel cannot enforce ${rules.dropped.join(', ')}; ${allow ? `${rules.droppedRules.join(', ')} omitted from the ALLOW` : 'removed from the DENY'} (see the policy status)` });
    }
  }
  if (dryRun) {
    notes.push('Dry run: ztunnel logs what this policy would decide and does not enforce it (istiod sends dry-run policies to ztunnel only with AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY=true; Ambit always does).');
  }

  const lost = rules !== undefined && rules.dropped.length > 0;
  const reason = failed ? 'InvalidValue' : lost ? 'UnsupportedValue' : 'Accepted';
  const message = notes.length === 0 ? 'attached to ztunnel' : reason === 'Accepted' ? `attached to ztunnel. ${notes.join(' ')}` : notes.join(' ');
  const authorization = ztunnelAuthorization(shape, ctx, action, wireRules, dryRun);
  return {
    authorization,
    status: {
      namespace: shape.namespace,
      name: shape.name,
      enforcedBy: ['ztunnel'],
      dropped: rules?.dropped ?? [],
      summary: `${dryRun ? 'dry run (logged, not enforced): ' : ''}${ztunnelSummary(shape, rules, read.rules.length, scope)}`,
      conditions: [condition('ZtunnelAccepted', !failed, reason, message, policy)],
    },
    problems,
  };
}

function denyEffectNote(rules: ZtunnelRules, total: number): string {
  const never = rules.denyEffects.filter((e) => e.effect === 'never');
  if (never.length === total) return 'This DENY has no effect at ztunnel: every rule needs an attribute ztunnel cannot see.';
  const parts = rules.denyEffects.map(({ path, effect }) => {
    switch (effect) {
      case 'never':
        return `${path} never matches at ztunnel (a condition it needs holds only attributes ztunnel cannot see)`;
      case 'broader':
        return `${path} is enforced on its L4 conditions alone, which denies more than requested`;
      case 'narrower':
        return `${path} is enforced without its alternatives that held only attributes ztunnel cannot see, which denies less than requested`;
      default:
        return `${path} is enforced on its L4 conditions alone: more is denied where an alternative kept L4 conditions, less where one held none`;
    }
  });
  return `DENY policy with such attributes is enforced without them: ${parts.join('; ')}.`;
}

function ztunnelSummary(shape: PolicyShape, rules: ZtunnelRules | undefined, total: number, scope: string): string {
  if (!rules) return `ztunnel denies all traffic to ${scope} (fail closed: the action is invalid)`;
  if (rules.denyAll) return `ztunnel denies all traffic to ${scope} (fail closed: an invalid DENY rule)`;
  const n = rules.rules.length;
  if (shape.action === 'ALLOW') {
    if (n === 0) return `ztunnel allows nothing to ${scope}: traffic there is denied unless another ALLOW policy allows it`;
    const of = n === total ? `${n} rule${n > 1 ? 's' : ''}` : `${n} of ${total} rules`;
    return `ztunnel ALLOW with ${of} for ${scope}`;
  }
  if (n === 0) return `ztunnel DENY with no rules for ${scope}: denies nothing`;
  const never = rules.denyEffects.filter((e) => e.effect === 'never').length;
  if (never === n) return `no effect: ztunnel cannot see what any rule of this DENY needs (it would apply to ${scope})`;
  const effective = n - never;
  return `ztunnel DENY with ${effective === n ? `${n} rule${n > 1 ? 's' : ''}` : `${effective} of ${n} rules effective`} for ${scope}`;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}
