// Istio AuthorizationPolicy to istio.security.Authorization (ztunnel) and to L7 policies (waypoints),
// with where each is enforced (istio-ambient-spec.md §4.3, §5.4, §6).
//
// Without targetRef(s) a policy goes to ztunnel with a scope from its selector: ALLOW and DENY as
// written (less what ztunnel cannot see, see ztunnel-policy.ts), CUSTOM as a DENY of everything it
// selects, an unknown action likewise; AUDIT never denies and is enforced nowhere, as in Istio.
// With targetRef(s) it goes to the waypoints its targets resolve to. Where a target cannot be
// enforced at a waypoint, Ambit fails closed where istiod enforces nothing (policy-targets.ts):
// - a Service without a usable waypoint: the policy is also sent to ztunnel, scope
//   WORKLOAD_SELECTOR, listed by the pods the service selects (policy-selection.ts), translated as
//   a selector policy would be;
// - a target that cannot be resolved: every waypoint of the policy's namespace gets the policy as
//   invalid (L7Policy.invalid_reason) and denies every request through it.
// The translation never throws for bad input and fails closed: see ztunnel-policy.ts and
// waypoint-policy.ts. Names reserved for converted PeerAuthentications are rejected for ztunnel.

import { Action, Scope, type Authorization } from '../../proto/gen/istio/security/authorization.js';
import { L7Policy } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { AuthorizationPolicy, Gateway } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { isRecord } from './labels.js';
import { perView } from './memo.js';
import { readRules } from './policy-rules.js';
import { policyShape, reservedName, type PolicyShape } from './policy-shape.js';
import { condition, dryRunOf, flattenTargets, scopeText, some } from './policy-status.js';
import { isWaypoint, resolveTargets, type FallbackService, type TargetResolution } from './policy-targets.js';
import type { ObjectRef, PolicyStatus, Problem } from './types.js';
import { l7Policy, type L7Translation } from './waypoint-policy.js';
import { MATCH_EVERYTHING, ztunnelAuthorization, ztunnelRules, type ZtunnelRules } from './ztunnel-policy.js';

export interface PolicyTranslation {
  /**
   * What ztunnel gets, named `<namespace>/<name>`; absent for AUDIT, reserved names, and targetRefs
   * policies all of whose targets are enforced at waypoints (or need no enforcement).
   */
  authorization: Authorization | undefined;
  status: PolicyStatus;
  problems: Problem[];
}

export function translatePolicy(policy: AuthorizationPolicy, ctx: ModelContext): PolicyTranslation {
  const shape = policyShape(policy);
  if (shape.targeted) {
    try {
      return waypointTranslation(policy, shape, ctx);
    } catch (err) {
      return targetedInternalError(policy, shape, ctx, err);
    }
  }
  const reserved = reservedName(shape, ctx.opts.rootNamespace);
  if (reserved) return reservedNameTranslation(policy, shape, reserved);
  if (shape.action === 'AUDIT') return auditNowhere(policy, shape, ctx);
  try {
    return ztunnelTranslation(policy, shape, ctx);
  } catch (err) {
    // A bug, not bad input. build.ts's guard turns a failed policy into an ALLOW with no rules,
    // which is right for an ALLOW but lets a broken DENY deny only what no ALLOW allows.
    if (shape.action === 'ALLOW') throw err;
    return internalErrorDeny(policy, shape, ctx, err);
  }
}

function objectOf(shape: PolicyShape): ObjectRef {
  return { kind: 'AuthorizationPolicy', namespace: shape.namespace, name: shape.name };
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
    problems: [{ object: objectOf(shape), severity: 'error', message }],
  };
}

/**
 * A bug in a targetRefs policy's translation. The pods of services that fall back to ztunnel list
 * the policy's name (policy-selection.ts): give them a DENY of everything under that name, never a
 * name ztunnel would skip as unknown.
 */
function targetedInternalError(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext, err: unknown): PolicyTranslation {
  let fallback: readonly FallbackService[] = [];
  try {
    if (shape.action !== 'AUDIT' && !reservedName(shape, ctx.opts.rootNamespace)) fallback = resolveTargets(policy, ctx).fallbackServices;
  } catch {
    // Then nothing lists the policy either.
  }
  const scope = fallback.length > 0 ? fallbackScopeText(fallback) : '';
  const effect = fallback.length > 0 ? `; ztunnel denies all traffic to ${scope}` : '; no waypoint enforces it';
  const message = `could not be translated (internal error: ${err instanceof Error ? err.message : String(err)})${effect}`;
  const authorization = fallback.length > 0 ? ztunnelAuthorization(shape, ctx, Action.DENY, [MATCH_EVERYTHING], false, Scope.WORKLOAD_SELECTOR) : undefined;
  return {
    authorization,
    status: {
      namespace: shape.namespace,
      name: shape.name,
      enforcedBy: authorization ? ['ztunnel'] : [],
      dropped: [],
      summary: authorization ? `ztunnel denies all traffic to ${scope} (fail closed: internal error)` : `not enforced anywhere: internal error`,
      conditions: [condition(authorization ? 'ZtunnelAccepted' : 'WaypointAccepted', false, 'InternalError', message, policy)],
    },
    problems: [{ object: objectOf(shape), severity: 'error', message }],
  };
}

function reservedNameMessage(why: string): string {
  return `${why}; a policy of this name would replace that Authorization (and could silently remove STRICT mTLS), so it is rejected and not sent to ztunnel: rename it`;
}

function reservedNameTranslation(policy: AuthorizationPolicy, shape: PolicyShape, why: string): PolicyTranslation {
  const message = reservedNameMessage(why);
  return {
    authorization: undefined,
    status: {
      namespace: shape.namespace,
      name: shape.name,
      enforcedBy: [],
      dropped: [],
      summary: `rejected, enforced nowhere: ${why}`,
      conditions: [condition('ZtunnelAccepted', false, 'InvalidName', message, policy)],
    },
    problems: [{ object: objectOf(shape), severity: 'error', message }],
  };
}

/** The L7 policies a waypoint enforces: those targeting it, its GatewayClass, or the services it serves, and invalid ones of its namespace. */
export function waypointPolicies(gateway: Gateway, servedServices: readonly string[], ctx: ModelContext): { policies: L7Policy[]; problems: Problem[] } {
  const index = waypointIndex(ctx);
  const namespace = gateway.metadata.namespace ?? 'default';
  const key = `${namespace}/${gateway.metadata.name}`;
  // By policy key: the whole waypoint, or some of its services; or invalid for the whole waypoint.
  const found = new Map<string, { entry: WaypointEntry; whole: boolean; invalid: boolean; services: Set<string> }>();
  const add = (entry: WaypointEntry, whole: boolean, hostname?: string, invalid = false): void => {
    let f = found.get(entry.shape.key);
    if (!f) found.set(entry.shape.key, (f = { entry, whole: false, invalid: false, services: new Set() }));
    if (whole) f.whole = true;
    if (invalid) f.invalid = true;
    if (hostname !== undefined) f.services.add(hostname);
  };
  for (const entry of index.byGateway.get(key) ?? []) add(entry, true);
  if (isWaypoint(gateway)) {
    for (const entry of index.everyWaypoint) add(entry, true);
    for (const entry of index.invalidInNamespace.get(namespace) ?? []) add(entry, true, undefined, true);
  }
  for (const hostname of servedServices) for (const entry of index.byService.get(hostname) ?? []) add(entry, false, hostname);
  const policies: L7Policy[] = [];
  for (const policyKey of [...found.keys()].sort()) {
    const f = found.get(policyKey)!;
    if (f.invalid && f.entry.invalidL7) policies.push({ ...f.entry.invalidL7, services: [] });
    else policies.push({ ...f.entry.l7.policy, services: f.whole ? [] : [...f.services].sort() });
  }
  return { policies, problems: [] };
}

// ---------------------------------------------------------------------------------------------
// Waypoint-bound (targetRefs)

interface WaypointEntry {
  shape: PolicyShape;
  targets: TargetResolution;
  l7: L7Translation;
  /**
   * What the waypoints of the policy's namespace enforce when a target cannot be resolved: the
   * policy as invalid, which denies every request (not for AUDIT, which never denies).
   */
  invalidL7: L7Policy | undefined;
  dryRun: boolean;
  dryRunWarning: string | undefined;
}

interface WaypointIndex {
  entries: Map<AuthorizationPolicy, WaypointEntry>;
  byGateway: Map<string, WaypointEntry[]>;
  everyWaypoint: WaypointEntry[];
  byService: Map<string, WaypointEntry[]>;
  /** Policies with an unresolvable target, by their namespace: invalid at every waypoint there. */
  invalidInNamespace: Map<string, WaypointEntry[]>;
}

const waypointIndex = perView((ctx: ModelContext): WaypointIndex => {
  const index: WaypointIndex = { entries: new Map(), byGateway: new Map(), everyWaypoint: [], byService: new Map(), invalidInNamespace: new Map() };
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
    if (entry.invalidL7) push(index.invalidInNamespace, shape.namespace, entry);
  }
  return index;
});

function waypointEntry(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext): WaypointEntry {
  const { dryRun, warning } = dryRunOf(policy);
  const targets = resolveTargets(policy, ctx);
  let invalidL7: L7Policy | undefined;
  if (targets.unresolved && shape.action !== 'AUDIT') {
    const reason = targets.errors[0] ?? targets.outcomes.find((o) => o.failClosed === 'namespace')?.message ?? 'a target cannot be resolved';
    invalidL7 = L7Policy.fromPartial({
      name: shape.name,
      namespace: shape.namespace,
      action: 'DENY',
      dryRun,
      invalidReason: `a target cannot be resolved (${reason}), so every waypoint of namespace ${shape.namespace} denies every request until it is fixed`,
    });
  }
  return { shape, targets, l7: l7Policy(policy, shape, dryRun), invalidL7, dryRun, dryRunWarning: warning };
}

function waypointTranslation(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext): PolicyTranslation {
  const entry = waypointIndex(ctx).entries.get(policy) ?? waypointEntry(policy, shape, ctx);
  const { targets, l7 } = entry;
  const object = objectOf(shape);
  const problems: Problem[] = [];
  const audit = shape.action === 'AUDIT';
  const reserved = reservedName(shape, ctx.opts.rootNamespace);

  // Where it is enforced: the waypoints its targets resolve to, as written; every waypoint of its
  // namespace as invalid (an unresolvable target); ztunnel on the pods of services without a waypoint.
  const invalidAt = entry.invalidL7 ? targets.namespaceWaypoints : [];
  const asWritten = targets.targets.filter((t) => !invalidAt.includes(t.waypoint));
  const fallback = targets.fallbackServices;
  const fallbackScope = fallback.length > 0 ? fallbackScopeText(fallback) : '';
  const hint = `bind ${fallback.length > 1 ? 'the services' : `Service ${fallback[0]?.key ?? ''}`} to a waypoint (label istio.io/use-waypoint)`;
  const ztunnel = fallback.length > 0 && !audit && !reserved ? ztunnelPart(policy, shape, ctx, fallbackScope, entry.dryRun, hint, Scope.WORKLOAD_SELECTOR) : undefined;
  const waypoints = [...new Set([...asWritten.map((t) => t.waypoint), ...invalidAt])].sort();
  const enforcedBy = [...waypoints.map((w) => `waypoint ${w}`), ...(ztunnel ? ['ztunnel'] : [])];
  const nowhere = enforcedBy.length === 0;

  // What happens to targets that are not enforced at a waypoint as written.
  const ns = shape.namespace;
  const unresolvedEffect = audit
    ? 'this target is ignored (an AUDIT policy never denies, so nothing fails closed for it)'
    : invalidAt.length > 0
      ? `what it meant is unknown, so Ambit fails closed: every waypoint of namespace ${ns} (${invalidAt.join(', ')}) applies this policy as invalid and denies every request through it`
      : `what it meant is unknown, and no waypoint exists in namespace ${ns} to fail closed at, so nothing enforces this target`;
  const fallbackEffect = audit
    ? 'nothing is audited for it (ztunnel has no AUDIT action)'
    : reserved
      ? `it cannot be enforced at ztunnel instead either: ${reserved}`
      : 'Ambit enforces the policy at ztunnel on the pods the service selects instead (more restrictive; see the ZtunnelAccepted condition)';
  const ignoredEffect = nowhere ? 'the policy is enforced nowhere (nothing to protect there)' : `this target is ignored; the policy is enforced by ${enforcedBy.join(', ')}`;
  for (const e of targets.errors) problems.push({ object, severity: audit ? 'warning' : 'error', message: `${e}; ${unresolvedEffect}` });
  for (const w of targets.warnings) problems.push({ object, severity: 'warning', message: w });
  for (const o of targets.outcomes) {
    if (o.bound) continue;
    if (o.failClosed === 'namespace') problems.push({ object, severity: audit ? 'warning' : 'error', message: `${o.message}; ${unresolvedEffect}` });
    else if (o.failClosed === 'ztunnel') problems.push({ object, severity: audit ? 'warning' : 'error', message: `${o.message}; ${fallbackEffect}` });
    else problems.push({ object, severity: nowhere ? 'error' : 'warning', message: `${o.message}; ${ignoredEffect}` });
  }
  if (shape.selector.kind !== 'none') {
    problems.push({ object, severity: 'warning', message: 'spec.selector: ignored, the policy has targetRefs (Istio ignores the selector then, and rejects both together)' });
  }
  if (entry.dryRunWarning) problems.push({ object, severity: 'warning', message: entry.dryRunWarning });
  for (const w of l7.warnings) problems.push({ object, severity: 'warning', message: w });

  // Notes on the L7 translation, where some waypoint enforces it as written.
  const notes: string[] = [];
  const invalid = l7.policy.invalidReason !== '';
  if (asWritten.length > 0) {
    if (invalid) {
      notes.push(`${some(l7.errors)}: the waypoint denies every request this policy applies to until it is fixed.`);
      for (const e of l7.errors) problems.push({ object, severity: 'error', message: `${e}; the waypoint denies every request this policy applies to` });
    } else if (l7.errors.length > 0) {
      notes.push(`${some(l7.errors)}: ${l7.omittedRules.join(', ')} left out (the policy then ${l7.policy.action === 'ALLOW' ? 'allows' : 'audits'} less).`);
      for (const e of l7.errors) problems.push({ object, severity: 'error', message: `${e}; the rule is left out at the waypoint` });
    }
    const inexpressible = l7.omittedRules.filter((r) => !l7.errors.some((e) => e.startsWith(`${r}.`) || e.startsWith(`${r}:`)));
    if (inexpressible.length > 0) {
      notes.push(`trustDomains written as a suffix pattern, or beside principals, cannot be enforced; ${inexpressible.join(', ')} left out (less is allowed).`);
      problems.push({ object, severity: 'warning', message: `trustDomains cannot be enforced as written; ${inexpressible.join(', ')} left out` });
    }
    if (entry.dryRun) notes.push('Dry run: the waypoint logs what this policy would decide and does not enforce it.');
  }
  if (ztunnel) problems.push(...ztunnel.problems);

  // WaypointAccepted: the targets, and how those not bound fail closed.
  const conditions = [];
  const consequences: string[] = [];
  if (fallback.length > 0) {
    consequences.push(
      audit
        ? `nothing is audited for ${fallbackKeys(fallback)} (no waypoint, and ztunnel has no AUDIT action)`
        : reserved
          ? `the ztunnel fallback for ${fallbackKeys(fallback)} is rejected (reserved name; see ZtunnelAccepted)`
          : `Ambit enforces it at ztunnel on the pods of ${fallbackKeys(fallback)} instead (see ZtunnelAccepted)`,
    );
  }
  if (targets.unresolved && !audit) {
    consequences.push(
      invalidAt.length > 0
        ? `every waypoint of namespace ${ns} (${invalidAt.join(', ')}) denies every request until the targets are fixed`
        : `no waypoint exists in namespace ${ns} to fail closed at`,
    );
  }
  if (nowhere) consequences.push('the policy is enforced nowhere');
  const conclusion = consequences.length > 0 ? `; ${consequences.join('; ')}` : '';
  if (targets.outcomes.length === 0) {
    const message = `${some(targets.errors)}: no usable target${conclusion}.`;
    conditions.push(condition('WaypointAccepted', false, 'Invalid', message, policy));
  } else {
    const flat = flattenTargets(targets.outcomes);
    const errors = targets.errors.length > 0 ? `; ${some(targets.errors)}` : '';
    const head = `${flat.message}${errors}${conclusion}`;
    const message = notes.length === 0 ? head : `${head}. ${notes.join(' ')}`;
    const flatReason = flat.bound && flat.reason === 'Accepted' && targets.errors.length > 0 ? 'PartiallyInvalid' : flat.reason;
    const l7Broken = asWritten.length > 0 && (invalid || l7.errors.length > 0);
    const reason = flat.bound && l7Broken ? 'InvalidValue' : flatReason;
    // Bound, but every such waypoint runs the invalid version (an unresolvable target): not accepted as written.
    conditions.push(condition('WaypointAccepted', flat.bound && asWritten.length > 0 && !l7Broken, reason, message, policy));
  }

  // ZtunnelAccepted: only when some target falls back to ztunnel.
  if (fallback.length > 0) {
    if (audit) {
      const message = `${fallbackKeys(fallback)} ${fallback.length > 1 ? 'have' : 'has'} no usable waypoint, and ztunnel does not support the AUDIT action: nothing is audited there (an AUDIT policy never denies, so nothing fails closed).`;
      conditions.push(condition('ZtunnelAccepted', false, 'UnsupportedValue', message, policy));
    } else if (reserved) {
      const message = reservedNameMessage(reserved);
      conditions.push(condition('ZtunnelAccepted', false, 'InvalidName', message, policy));
      problems.push({ object, severity: 'error', message });
    } else if (ztunnel) {
      const head = `${fallbackKeys(fallback)} ${fallback.length > 1 ? 'have' : 'has'} no usable waypoint, so Ambit enforces this policy at ztunnel on ${fallbackScope} as a fallback (istiod would enforce it nowhere). It applies there to all traffic to those pods, not only through the service, with the identity of the client and without HTTP.`;
      const dry = entry.dryRun ? ['Dry run: ztunnel logs what this policy would decide and does not enforce it.'] : [];
      const message = [head, ...ztunnel.notes, ...dry].join(' ');
      const reason = ztunnel.failed ? ztunnel.reason : 'UnsupportedValue';
      conditions.push(condition('ZtunnelAccepted', !ztunnel.failed, reason, message, policy));
    }
  }

  // Summary: one line over every place it is enforced.
  const parts: string[] = [];
  if (asWritten.length > 0) {
    const action = invalid ? 'DENY (fail closed: denies every request it applies to)' : l7.policy.action === 'CUSTOM' ? `CUSTOM (provider ${l7.policy.provider})` : l7.policy.action;
    const where = asWritten.map((t) => (t.services.length > 0 ? `${t.waypoint} (${t.services.join(', ')})` : t.waypoint)).join(', ');
    parts.push(`${action} at waypoint ${where}`);
  }
  if (invalidAt.length > 0) parts.push(`denies every request at waypoint ${invalidAt.join(', ')} (fail closed: a target cannot be resolved)`);
  if (ztunnel) parts.push(`fallback at ztunnel: ${ztunnel.summary}`);
  const summary = nowhere
    ? `not enforced anywhere: ${some([...targets.outcomes.filter((o) => !o.bound).map((o) => o.message), ...targets.errors])}`
    : `${entry.dryRun ? 'dry run (logged, not enforced): ' : ''}${parts.join('; ')}`;
  return {
    authorization: ztunnel?.authorization,
    status: { namespace: shape.namespace, name: shape.name, enforcedBy, dropped: ztunnel?.dropped ?? [], summary, conditions },
    problems,
  };
}

function fallbackKeys(fallback: readonly FallbackService[]): string {
  return `${fallback.length > 1 ? 'Services' : 'Service'} ${fallback.map((f) => f.key).join(', ')}`;
}

function fallbackScopeText(fallback: readonly FallbackService[]): string {
  return `the workloads of ${fallback.length > 1 ? 'Services' : 'Service'} ${fallback.map((f) => `${f.key} (${f.pods})`).join(', ')}`;
}

// ---------------------------------------------------------------------------------------------
// ztunnel-bound (selector, namespace, mesh)

function auditNowhere(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext): PolicyTranslation {
  const message =
    'ztunnel does not support the AUDIT action. This policy is enforced nowhere: nothing is audited. In ambient mode, attach AUDIT policies to a waypoint with targetRefs (kind Gateway or Service). (An AUDIT policy never denies, so nothing needs to fail closed.)';
  return {
    authorization: undefined,
    status: {
      namespace: shape.namespace,
      name: shape.name,
      enforcedBy: [],
      dropped: [],
      summary: `not enforced anywhere: ztunnel has no AUDIT action and the policy targets no waypoint (it would apply to ${scopeText(shape, ctx)})`,
      conditions: [condition('ZtunnelAccepted', false, 'UnsupportedValue', message, policy)],
    },
    problems: [{ object: objectOf(shape), severity: 'warning', message }],
  };
}

function ztunnelTranslation(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext): PolicyTranslation {
  const object = objectOf(shape);
  const problems: Problem[] = [];
  const scope = scopeText(shape, ctx);
  const { dryRun, warning: dryRunWarning } = dryRunOf(policy);
  const read = readRules(policy);
  if (dryRunWarning) problems.push({ object, severity: 'warning', message: dryRunWarning });
  for (const w of read.warnings) problems.push({ object, severity: 'warning', message: w });
  const notes: string[] = read.warnings.map((w) => `${w}.`);
  let selectorFailed = false;
  if (shape.selector.kind === 'invalid') {
    selectorFailed = true;
    const effect = `applied to ${scope.replace(' (the selector is invalid)', '')} so that it fails closed`;
    problems.push({ object, severity: 'error', message: `${shape.selector.message}; ${effect}` });
    notes.push(`${shape.selector.message}: ${effect}.`);
  } else if (shape.selector.kind === 'labels' && shape.selector.pairs.length === 0) {
    const effect = `it selects ${scope.replace(' (empty selector)', '')} (istiod would apply it to no workload)`;
    problems.push({ object, severity: 'warning', message: `spec.selector: empty, so ${effect}` });
    notes.push(`The selector is empty: ${effect}.`);
  }
  const spec: Record<string, unknown> = isRecord(policy.spec) ? policy.spec : {};
  if (shape.action !== 'CUSTOM' && spec.provider !== undefined && spec.provider !== null) {
    problems.push({ object, severity: 'warning', message: 'spec.provider: only used with action CUSTOM; ignored' });
  }

  const part = ztunnelPart(policy, shape, ctx, scope, dryRun, 'attach it to a waypoint with targetRefs');
  problems.push(...part.problems);
  notes.push(...part.notes);
  if (dryRun) {
    notes.push('Dry run: ztunnel logs what this policy would decide and does not enforce it (istiod sends dry-run policies to ztunnel only with AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY=true; Ambit always does).');
  }
  const failed = selectorFailed || part.failed;
  const reason = selectorFailed ? 'InvalidValue' : part.reason;
  const message = notes.length === 0 ? 'attached to ztunnel' : reason === 'Accepted' ? `attached to ztunnel. ${notes.join(' ')}` : notes.join(' ');
  return {
    authorization: part.authorization,
    status: {
      namespace: shape.namespace,
      name: shape.name,
      enforcedBy: ['ztunnel'],
      dropped: part.dropped,
      summary: `${dryRun ? 'dry run (logged, not enforced): ' : ''}${part.summary}`,
      conditions: [condition('ZtunnelAccepted', !failed, reason, message, policy)],
    },
    problems,
  };
}

/** What ztunnel enforces for a policy (not AUDIT) on `scope`, and the words for its status. */
interface ZtunnelPart {
  authorization: Authorization;
  /** ZtunnelAccepted is False. */
  failed: boolean;
  /** Accepted, UnsupportedValue or InvalidValue. */
  reason: string;
  /** Sentences of the ZtunnelAccepted message. */
  notes: string[];
  dropped: string[];
  /** Without the dry-run prefix. */
  summary: string;
  problems: Problem[];
}

/**
 * The Authorization for ALLOW, DENY, CUSTOM (a DENY of everything: ztunnel cannot call an external
 * authorizer) or an unknown action (likewise), on the workloads `scope` names. `fix` completes
 * "...; <fix> to enforce it as written" (how to get the policy to a waypoint).
 */
function ztunnelPart(policy: AuthorizationPolicy, shape: PolicyShape, ctx: ModelContext, scope: string, dryRun: boolean, fix: string, wireScope?: Scope): ZtunnelPart {
  const object = objectOf(shape);
  const denyAll = (reason: string, message: string, summary: string, failed = true): ZtunnelPart => ({
    authorization: ztunnelAuthorization(shape, ctx, Action.DENY, [MATCH_EVERYTHING], dryRun, wireScope),
    failed,
    reason,
    notes: [`${message}.`],
    dropped: [],
    summary,
    problems: [{ object, severity: 'error', message }],
  });
  if (shape.action === undefined) {
    return denyAll('InvalidValue', `${shape.actionProblem}; ztunnel enforces this policy as a DENY of all traffic to ${scope} until it is fixed`, `ztunnel denies all traffic to ${scope} (fail closed: the action is invalid)`);
  }
  if (shape.action === 'CUSTOM') {
    // istiod sends nothing to ztunnel, and the workloads are not protected at all. Ambit fails
    // closed: without the external authorizer's answer, nothing is allowed.
    const provider = providerName(policy);
    const named = provider ? ` (provider ${provider})` : '';
    return denyAll(
      'UnsupportedValue',
      `ztunnel does not support the CUSTOM action: it cannot call an external authorizer${named}, so Ambit denies all traffic to ${scope} until you ${fix.replace(/^attach it/, 'attach the policy')} (the waypoint calls the provider)`,
      `ztunnel denies all traffic to ${scope} (fail closed: ztunnel cannot call the external authorizer${provider ? ` ${provider}` : ''})`,
    );
  }

  const problems: Problem[] = [];
  const notes: string[] = [];
  const read = readRules(policy);
  const allow = shape.action === 'ALLOW';
  const rules = ztunnelRules(allow ? 'ALLOW' : 'DENY', read.rules, read.errors.length > 0);
  const errors = [...read.errors, ...read.rules.flatMap((r) => r.errors)];
  if (errors.length > 0) {
    const effect = allow
      ? read.errors.length > 0
        ? 'no rule is known, so this ALLOW allows nothing'
        : `${rules.invalidRules.join(', ')} left out (an ALLOW only allows less without ${rules.invalidRules.length > 1 ? 'them' : 'it'})`
      : `this DENY denies all traffic to ${scope} until it is fixed`;
    notes.push(`${some(errors)}: ${effect}.`);
    const each = allow ? (read.errors.length > 0 ? 'no rule is known, so the ALLOW allows nothing' : 'the rule is left out') : `the DENY denies all traffic to ${scope}`;
    for (const e of errors) problems.push({ object, severity: 'error', message: `${e}; ${each}` });
  }
  if (rules.http.length > 0) {
    notes.push(
      allow
        ? `ztunnel does not support HTTP attributes (found: ${rules.http.join(', ')}). In ambient mode you must use a waypoint proxy to enforce HTTP rules: ${fix}.`
        : `ztunnel does not support HTTP attributes (found: ${rules.http.join(', ')}).`,
    );
  }
  if (rules.inexpressible.length > 0) {
    notes.push(`ztunnel cannot enforce ${rules.inexpressible.join(', ')} written as a suffix pattern or beside principals; ${allow ? 'rules using them are handled' : 'they are removed'} like HTTP attributes.`);
  }
  if (allow && rules.droppedRules.length > 0) {
    notes.push(`Within an ALLOW policy, rules with attributes ztunnel cannot enforce are omitted (${rules.droppedRules.join(', ')}); this is more restrictive than requested.`);
  }
  const matchesAll = !allow && !rules.denyAll && rules.denyEffects.some((e) => e.effect === 'all');
  if (!allow && !rules.denyAll && rules.denyEffects.length > 0) notes.push(denyEffectNote(rules, scope, fix));
  if (allow && rules.rules.length === 0 && read.rules.length > 0) {
    notes.push(`No rule is left: this policy denies all traffic to ${scope} that no other ALLOW policy allows.`);
  }
  if (rules.dropped.length > 0) {
    const effect = allow
      ? `${rules.droppedRules.join(', ')} omitted from the ALLOW`
      : matchesAll
        ? `removed from the DENY, which now denies all traffic to ${scope}`
        : 'removed from the DENY, which now denies more than requested';
    problems.push({ object, severity: 'warning', message: `ztunnel cannot enforce ${rules.dropped.join(', ')}; ${effect} (see the policy status)` });
  }
  const failed = errors.length > 0;
  return {
    authorization: ztunnelAuthorization(shape, ctx, allow ? Action.ALLOW : Action.DENY, rules.rules, dryRun, wireScope),
    failed,
    reason: failed ? 'InvalidValue' : rules.dropped.length > 0 ? 'UnsupportedValue' : 'Accepted',
    notes,
    dropped: rules.dropped,
    summary: ztunnelSummary(allow, rules, read.rules.length, scope),
    problems,
  };
}

function providerName(policy: AuthorizationPolicy): string | undefined {
  const spec: Record<string, unknown> = isRecord(policy.spec) ? policy.spec : {};
  const name = isRecord(spec.provider) ? spec.provider.name : undefined;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** A DENY that lost attributes: what it denies now (always more than written, never less). */
function denyEffectNote(rules: ZtunnelRules, scope: string, fix: string): string {
  const what = rules.http.length > 0 && rules.inexpressible.length > 0 ? 'HTTP attributes and trustDomains' : rules.http.length > 0 ? 'HTTP attributes' : 'trustDomains';
  // A waypoint cannot enforce a trust-domain suffix pattern either; only HTTP has somewhere to go.
  const tail = rules.http.length > 0 ? `; ${fix} to enforce it as written` : '';
  const all = rules.denyEffects.filter((e) => e.effect === 'all').map((e) => e.path);
  if (all.length > 0) {
    return `${what} removed: this DENY now denies all traffic to ${scope} (more restrictive than requested)${tail}. (${all.join(', ')} ${all.length > 1 ? 'keep' : 'keeps'} no condition ztunnel can check, so ${all.length > 1 ? 'they match' : 'it matches'} every connection.)`;
  }
  const paths = rules.denyEffects.map((e) => e.path);
  const many = paths.length > 1;
  return `${what} removed: ${paths.join(', ')} ${many ? 'are' : 'is'} enforced on ${many ? 'their' : 'its'} L4 conditions alone, which denies more than requested${tail}.`;
}

function ztunnelSummary(allow: boolean, rules: ZtunnelRules, total: number, scope: string): string {
  if (rules.denyAll) return `ztunnel denies all traffic to ${scope} (fail closed: an invalid DENY rule)`;
  const n = rules.rules.length;
  if (allow) {
    if (n === 0) return `ztunnel allows nothing to ${scope}: traffic there is denied unless another ALLOW policy allows it`;
    const of = n === total ? `${n} rule${n > 1 ? 's' : ''}` : `${n} of ${total} rules`;
    return `ztunnel ALLOW with ${of} for ${scope}`;
  }
  if (n === 0) return `ztunnel DENY with no rules for ${scope}: denies nothing`;
  if (rules.denyEffects.some((e) => e.effect === 'all')) {
    return `ztunnel denies all traffic to ${scope} (attributes it cannot check were removed from this DENY: more restrictive than requested)`;
  }
  const lost = rules.denyEffects.length > 0 ? ' (attributes it cannot check removed: denies more than requested)' : '';
  return `ztunnel DENY with ${n} rule${n > 1 ? 's' : ''} for ${scope}${lost}`;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}
