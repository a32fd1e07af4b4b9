// A selector/namespace/mesh AuthorizationPolicy as the istio.security.Authorization ztunnel
// enforces (istiod ambient/authorization.go convertAuthorizationPolicy and handleRule; ztunnel
// src/rbac.rs for what the structure means):
//
// - each rule is a Rule whose clauses AND: one clause holding a Match per `to` entry (entries OR),
//   one holding a Match per `from` entry, then one clause per `when` condition;
// - ztunnel skips an empty Match, so a clause of empty Matches never matches, a Rule with no
//   clauses always matches, and an Authorization with no Rules never matches;
// - HTTP attributes (and trustDomains Ambit cannot write as principals): an ALLOW drops the whole
//   rule (less is allowed), as istiod does. A DENY must deny more, never less, so each clause is
//   replaced by one that holds at least whenever the written one does: an alternative (a `from` or
//   `to` entry) keeps its L4 attributes (it then matches more); a clause with an alternative that
//   has no L4 attribute at all, or a `when` condition on an HTTP key, could hold for any
//   connection, so the clause is removed. A DENY made only of HTTP attributes is a Rule with no
//   clauses and denies every connection to what the policy selects.
//   Ambit deliberately differs from istiod here: istiod keeps such a clause as an empty Match,
//   which ztunnel skips, so the rule never matches and the DENY denies less than written (a DENY of
//   `methods` alone does nothing; an alternative `requestPrincipals` is silently lost;
//   istio-ambient-spec.md §6.2). Fail closed: a DENY ztunnel cannot enforce as written must deny more.
//
// Where Istio's input validation would have rejected the object, Ambit fails closed: a broken rule
// is left out of an ALLOW (less is allowed) and turns a DENY into a DENY of everything it selects
// (istiod would skip the value, which for a DENY or a not-list widens what passes).

import {
  Action,
  Authorization,
  Scope,
  type Address,
  type Clause,
  type Match,
  type Rule,
  type StringMatch,
} from '../../proto/gen/istio/security/authorization.js';
import type { ModelContext } from './context.js';
import { ipBlock } from './ip-blocks.js';
import {
  L4_CONDITION_KEYS,
  OPERATION_L7,
  SOURCE_L7,
  type ReadCondition,
  type ReadOperation,
  type ReadRule,
  type ReadSource,
} from './policy-rules.js';
import type { PolicyShape } from './policy-shape.js';
import { starMatch } from './string-match.js';

/**
 * What happened to one rule of a DENY that lost attributes: `all`, no clause ztunnel can check is
 * left, so it matches every connection; `broader`, enforced on its L4 clauses alone (or with
 * alternatives reduced to their L4 attributes), which matches more connections than written.
 */
export type DenyRuleEffect = 'all' | 'broader';

export interface ZtunnelRules {
  rules: Rule[];
  /** Attribute names removed (`methods`, `when request.headers[x]`, `trustDomains`), sorted. */
  dropped: string[];
  /** HTTP attribute names as Istio lists them (`methods`, `request.headers[x]`). */
  http: string[];
  /** trustDomains/notTrustDomains Ambit could not express as principals. */
  inexpressible: string[];
  /** ALLOW: the rules left out for HTTP attributes. */
  droppedRules: string[];
  /** DENY: the rules enforced differently from what was written. */
  denyEffects: { path: string; effect: DenyRuleEffect }[];
  /** ALLOW: rules left out as invalid. DENY: any invalid rule makes `denyAll`. */
  invalidRules: string[];
  denyAll: boolean;
}

/** A Rule with no clauses: matches every connection. */
export const MATCH_EVERYTHING: Rule = { clauses: [] };

export function ztunnelScope(shape: PolicyShape, ctx: ModelContext): Scope {
  if (shape.selector.kind !== 'none') return Scope.WORKLOAD_SELECTOR;
  return shape.namespace === ctx.opts.rootNamespace ? Scope.GLOBAL : Scope.NAMESPACE;
}

/** `scope` overrides the one the selector gives (a targetRefs policy enforced on a service's workloads is WORKLOAD_SELECTOR). */
export function ztunnelAuthorization(shape: PolicyShape, ctx: ModelContext, action: Action, rules: Rule[], dryRun: boolean, scope?: Scope): Authorization {
  return Authorization.fromPartial({ name: shape.name, namespace: shape.namespace, scope: scope ?? ztunnelScope(shape, ctx), action, rules, dryRun });
}

/** The Rules of an ALLOW or DENY from its checked rules (see policy-rules.ts). */
export function ztunnelRules(action: 'ALLOW' | 'DENY', read: readonly ReadRule[], unreadable: boolean): ZtunnelRules {
  const out: ZtunnelRules = { rules: [], dropped: [], http: [], inexpressible: [], droppedRules: [], denyEffects: [], invalidRules: [], denyAll: false };
  const dropped = new Set<string>();
  const http = new Set<string>();
  const inexpressible = new Set<string>();
  if (unreadable && action === 'DENY') out.denyAll = true;
  for (const rule of read) {
    if (rule.errors.length > 0) {
      out.invalidRules.push(rule.path);
      if (action === 'DENY') out.denyAll = true;
      continue;
    }
    const t = translateRule(rule);
    for (const name of t.http) {
      http.add(name);
      dropped.add(name.includes('.') ? `when ${name}` : name);
    }
    for (const name of t.inexpressible) {
      inexpressible.add(name);
      dropped.add(name);
    }
    const lost = t.http.length > 0 || t.inexpressible.length > 0;
    if (action === 'ALLOW') {
      if (lost) out.droppedRules.push(rule.path);
      else out.rules.push(t.rule);
      continue;
    }
    out.rules.push(t.rule);
    if (lost) out.denyEffects.push({ path: rule.path, effect: t.effect });
  }
  if (out.denyAll) out.rules = [MATCH_EVERYTHING];
  out.dropped = [...dropped].sort();
  out.http = [...http].sort();
  out.inexpressible = [...inexpressible].sort();
  return out;
}

interface TranslatedRule {
  rule: Rule;
  http: string[];
  inexpressible: string[];
  effect: DenyRuleEffect;
}

function translateRule(rule: ReadRule): TranslatedRule {
  const http: string[] = [];
  const inexpressible: string[] = [];
  const clauses: Clause[] = [];
  // Only meaningful for a DENY (an ALLOW drops a rule that lost anything): whether a clause was
  // removed because it could hold for any connection.
  let removed = false;
  const alternatives = (matches: { match: Match; lost: boolean }[]): void => {
    if (matches.length === 0) return;
    // An alternative with no L4 attribute left could match any connection, so the clause could
    // hold for any: remove it (istiod keeps an empty Match, which ztunnel skips: never holds).
    if (matches.some((m) => isEmpty(m.match))) {
      removed = true;
      return;
    }
    // Alternatives that lost attributes but kept L4 ones match more than written: still a superset.
    clauses.push({ matches: matches.map((m) => m.match) });
  };
  alternatives(rule.to.map((op) => operationMatch(op, http)));
  alternatives(rule.from.map((src) => sourceMatch(src, http, inexpressible)));
  for (const condition of rule.when) {
    const match = conditionMatch(condition);
    if (!match) {
      // An HTTP condition could hold for any connection: the clause is removed (istiod: an empty Match, never holds).
      http.push(condition.key);
      removed = true;
    } else {
      clauses.push({ matches: [match] });
    }
  }
  const effect: DenyRuleEffect = removed && clauses.length === 0 ? 'all' : 'broader';
  return { rule: { clauses }, http: unique(http), inexpressible: unique(inexpressible), effect };
}

function operationMatch(op: ReadOperation, http: string[]): { match: Match; lost: boolean } {
  let lost = false;
  for (const f of OPERATION_L7) {
    if (op.fields[f]) {
      http.push(f);
      lost = true;
    }
  }
  const match = emptyMatch();
  match.destinationPorts = ports(op.fields.ports);
  match.notDestinationPorts = ports(op.fields.notPorts);
  return { match, lost };
}

function sourceMatch(src: ReadSource, http: string[], inexpressible: string[]): { match: Match; lost: boolean } {
  let lost = false;
  for (const f of SOURCE_L7) {
    if (src.fields[f]) {
      http.push(f);
      lost = true;
    }
  }
  for (const f of src.unsupported) {
    inexpressible.push(f);
    lost = true;
  }
  const f = src.fields;
  const match = emptyMatch();
  match.principals = strings(f.principals);
  match.notPrincipals = strings(f.notPrincipals);
  match.namespaces = strings(f.namespaces);
  match.notNamespaces = strings(f.notNamespaces);
  match.sourceIps = addresses(f.ipBlocks);
  match.notSourceIps = addresses(f.notIpBlocks);
  match.serviceAccounts = serviceAccounts(f.serviceAccounts);
  match.notServiceAccounts = serviceAccounts(f.notServiceAccounts);
  return { match, lost };
}

/** The Match for an L4 condition; undefined for an HTTP one. */
function conditionMatch(c: ReadCondition): Match | undefined {
  if (!L4_CONDITION_KEYS.has(c.key)) return undefined;
  const match = emptyMatch();
  switch (c.key) {
    case 'source.ip':
      match.sourceIps = addresses(c.values);
      match.notSourceIps = addresses(c.notValues);
      break;
    case 'destination.ip':
      match.destinationIps = addresses(c.values);
      match.notDestinationIps = addresses(c.notValues);
      break;
    case 'source.namespace':
      match.namespaces = strings(c.values);
      match.notNamespaces = strings(c.notValues);
      break;
    case 'source.principal':
      match.principals = strings(c.values);
      match.notPrincipals = strings(c.notValues);
      break;
    case 'source.serviceAccount':
      match.serviceAccounts = serviceAccounts(c.values);
      match.notServiceAccounts = serviceAccounts(c.notValues);
      break;
    case 'destination.port':
      match.destinationPorts = ports(c.values);
      match.notDestinationPorts = ports(c.notValues);
      break;
  }
  return match;
}

// The values were checked by policy-rules.ts; these only convert.
function strings(values: string[] | undefined): StringMatch[] {
  return (values ?? []).map((v) => starMatch(v) as StringMatch);
}

function addresses(values: string[] | undefined): Address[] {
  return (values ?? []).map((v) => ipBlock(v) as Address);
}

function ports(values: string[] | undefined): number[] {
  return (values ?? []).map(Number);
}

function serviceAccounts(values: string[] | undefined): Match['serviceAccounts'] {
  return (values ?? []).map((v) => {
    const slash = v.indexOf('/');
    return { namespace: v.slice(0, slash), serviceAccount: v.slice(slash + 1) };
  });
}

export function emptyMatch(): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    extensions: [],
  };
}

export function isEmpty(m: Match): boolean {
  return (
    m.namespaces.length === 0 &&
    m.notNamespaces.length === 0 &&
    m.principals.length === 0 &&
    m.notPrincipals.length === 0 &&
    m.sourceIps.length === 0 &&
    m.notSourceIps.length === 0 &&
    m.destinationIps.length === 0 &&
    m.notDestinationIps.length === 0 &&
    m.destinationPorts.length === 0 &&
    m.notDestinationPorts.length === 0 &&
    m.serviceAccounts.length === 0 &&
    m.notServiceAccounts.length === 0
  );
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
