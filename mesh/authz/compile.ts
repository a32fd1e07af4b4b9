// istio.security.Authorization to the flat form the engine evaluates, once per upsert. Structure as
// ztunnel's rbac.rs reads it (istio-ambient-spec.md §4.3, §6.3): any Rule; every Clause of a Rule;
// any non-empty Match of a Clause (empty Matches are skipped, a Clause with no Matches holds);
// every populated list of a Match. Constant parts are folded here, so a Clause that always holds,
// a Rule that never does, or a policy that matches everything costs nothing per connection.
//
// Fail closed where the content is malformed (ztunnel instead drops a value it cannot parse, which
// widens a not-list and can empty a DENY): a Match holding any malformed value is decided whole
// in the direction that cannot open anything. In an ALLOW it never matches, in a DENY it always
// does. Clauses, Rules and policies are monotone in their Matches, so this can only shrink what an
// ALLOW admits and grow what a DENY refuses, whatever the malformed value was meant to say.

import { Action, Scope, type Authorization, type Match, type StringMatch } from '../../proto/gen/istio/security/authorization.js';
import { compileCidr, type Cidr } from './address.js';
import type { AuthzDecision } from './types.js';

export const EXACT = 0;
export const PREFIX = 1;
export const SUFFIX = 2;
export const PRESENCE = 3;

export interface StringTest {
  readonly kind: typeof EXACT | typeof PREFIX | typeof SUFFIX | typeof PRESENCE;
  readonly value: string;
}

export interface ServiceAccountTest {
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** One populated list of a Match: holds when some value hits, or, negated, when none does. */
export type Test =
  | { readonly field: 'namespace' | 'principal'; readonly negate: boolean; readonly values: readonly StringTest[] }
  | { readonly field: 'serviceAccount'; readonly negate: boolean; readonly values: readonly ServiceAccountTest[] }
  | { readonly field: 'sourceIp' | 'destinationIp'; readonly negate: boolean; readonly values: readonly Cidr[] }
  | { readonly field: 'port'; readonly negate: boolean; readonly values: readonly number[] };

/** Every Test holds. Never empty. */
export type CompiledMatch = readonly Test[];
/** Some Match holds. Never empty. */
export type CompiledClause = readonly CompiledMatch[];
/** Every Clause holds. Never empty. */
export type CompiledRule = readonly CompiledClause[];

export type PolicyAction = 'allow' | 'deny';
/** Where a policy is indexed: by namespace, for everyone, or only where a workload lists it. */
export type PolicyReach = 'namespace' | 'global' | 'workload';

export interface CompiledPolicy {
  /** `<namespace>/<name>`, the xDS resource name. */
  readonly key: string;
  readonly namespace: string;
  readonly reach: PolicyReach;
  readonly action: PolicyAction;
  readonly dryRun: boolean;
  /** `rules` is used only for `some`; `never` and `always` were decided at compile time. */
  readonly form: 'never' | 'always' | 'some';
  readonly rules: readonly CompiledRule[];
  /** What was malformed, and how it was decided; empty for a clean policy. */
  readonly problems: readonly string[];
  /** The decision when this policy decides, built once so a check allocates nothing. */
  readonly decision: AuthzDecision;
}

const NEVER = 0;
const ALWAYS = 1;
type Folded = typeof NEVER | typeof ALWAYS;

export function compilePolicy(a: Authorization): CompiledPolicy {
  const key = `${a.namespace}/${a.name}`;
  const problems: string[] = [];
  let action: PolicyAction;
  let unsupportedAction = false;
  if (a.action === Action.ALLOW) action = 'allow';
  else if (a.action === Action.DENY) action = 'deny';
  else {
    // It may have meant anything, including a DENY of this very connection: refuse everything the
    // policy reaches, as the control plane does for an AuthorizationPolicy action it cannot read.
    action = 'deny';
    unsupportedAction = true;
    problems.push(`action ${String(a.action)} is not ALLOW or DENY: enforced as a DENY of every connection (fail closed)`);
  }

  let reach: PolicyReach;
  if (a.scope === Scope.GLOBAL) reach = 'global';
  else if (a.scope === Scope.NAMESPACE) reach = 'namespace';
  else if (a.scope === Scope.WORKLOAD_SELECTOR) reach = 'workload';
  else {
    // Wider reach only adds restrictions (more workloads under an ALLOW or a DENY); the policy's own
    // namespace is the widest a non-root policy can legitimately have.
    reach = 'namespace';
    problems.push(`scope ${String(a.scope)} is not GLOBAL, NAMESPACE or WORKLOAD_SELECTOR: applied to every workload of namespace ${a.namespace} (fail closed)`);
  }

  const failClosed: Folded = action === 'allow' ? NEVER : ALWAYS;
  let form: CompiledPolicy['form'];
  const rules: CompiledRule[] = [];
  if (unsupportedAction) {
    form = 'always';
  } else if (a.extensions.length > 0) {
    // An extension could narrow what the policy means; which way is unknown.
    problems.push(`extensions (${a.extensions.map((e) => e.name).join(', ')}) are not supported: ${action === 'allow' ? 'the ALLOW matches nothing' : 'the DENY matches every connection'} (fail closed)`);
    form = failClosed === ALWAYS ? 'always' : 'never';
  } else {
    form = 'never';
    for (let i = 0; i < a.rules.length; i++) {
      const rule = compileRule(a.rules[i]!.clauses, `rules[${i}]`, failClosed, problems);
      if (rule === ALWAYS) {
        form = 'always';
        rules.length = 0;
        break;
      }
      if (rule === NEVER) continue;
      rules.push(rule);
      form = 'some';
    }
  }

  const decision: AuthzDecision = Object.freeze(
    action === 'allow'
      ? { allowed: true, policy: key, reason: `allowed by: ${key}` }
      : { allowed: false, policy: key, reason: unsupportedAction ? `explicitly denied by: ${key} (unsupported action ${String(a.action)}, fail closed)` : `explicitly denied by: ${key}` },
  );
  return {
    key,
    namespace: a.namespace,
    reach,
    action,
    dryRun: a.dryRun === true,
    form,
    rules,
    problems: problems.map((p) => `${key}: ${p}`),
    decision,
  };
}

function compileRule(clauses: Authorization['rules'][number]['clauses'], path: string, failClosed: Folded, problems: string[]): CompiledRule | Folded {
  const out: CompiledClause[] = [];
  for (let i = 0; i < clauses.length; i++) {
    const clause = compileClause(clauses[i]!.matches, `${path}.clauses[${i}]`, failClosed, problems);
    if (clause === NEVER) return NEVER;
    if (clause === ALWAYS) continue;
    out.push(clause);
  }
  // No clause left to check (ztunnel: a Rule without clauses matches).
  return out.length === 0 ? ALWAYS : out;
}

function compileClause(matches: readonly Match[], path: string, failClosed: Folded, problems: string[]): CompiledClause | Folded {
  // ztunnel: a Clause with no Matches at all holds; one whose Matches are all empty does not.
  if (matches.length === 0) return ALWAYS;
  const out: CompiledMatch[] = [];
  let poisoned = false;
  for (let i = 0; i < matches.length; i++) {
    const m = compileMatch(matches[i]!, `${path}.matches[${i}]`, failClosed, problems);
    if (m === undefined) continue;
    if (m === NEVER) continue;
    if (m === ALWAYS) poisoned = true;
    else out.push(m);
  }
  // Checked after the loop so every malformed Match is reported, not just the first.
  if (poisoned) return ALWAYS;
  return out.length === 0 ? NEVER : out;
}

/** undefined for an empty Match (ztunnel skips it); NEVER/ALWAYS for a malformed one. */
function compileMatch(m: Match, path: string, failClosed: Folded, problems: string[]): CompiledMatch | Folded | undefined {
  const issues: string[] = [];
  const tests: Test[] = [];
  const strings = (field: 'namespace' | 'principal', name: string, list: readonly StringMatch[], negate: boolean): void => {
    if (list.length === 0) return;
    const values = collect(list, `${path}.${name}`, compileString, issues);
    if (values) tests.push({ field, negate, values });
  };
  const accounts = (name: string, list: Match['serviceAccounts'], negate: boolean): void => {
    if (list.length === 0) return;
    const values = collect(list, `${path}.${name}`, compileServiceAccount, issues);
    if (values) tests.push({ field: 'serviceAccount', negate, values });
  };
  const ips = (field: 'sourceIp' | 'destinationIp', name: string, list: Match['sourceIps'], negate: boolean): void => {
    if (list.length === 0) return;
    const values = collect(list, `${path}.${name}`, (a) => compileCidr(a.address, a.length), issues);
    if (values) tests.push({ field, negate, values });
  };
  const ports = (name: string, list: readonly number[], negate: boolean): void => {
    if (list.length === 0) return;
    // ztunnel truncates to u16 (65616 becomes 80); out of range is malformed here.
    const values = collect(list, `${path}.${name}`, (p) => (Number.isInteger(p) && p >= 1 && p <= 65535 ? p : `${String(p)} is not a port (1-65535)`), issues);
    if (values) tests.push({ field: 'port', negate, values: [...new Set(values)] });
  };

  // Cheapest tests first: the order inside a Match does not change its meaning.
  ports('destinationPorts', m.destinationPorts, false);
  ports('notDestinationPorts', m.notDestinationPorts, true);
  ips('destinationIp', 'destinationIps', m.destinationIps, false);
  ips('destinationIp', 'notDestinationIps', m.notDestinationIps, true);
  ips('sourceIp', 'sourceIps', m.sourceIps, false);
  ips('sourceIp', 'notSourceIps', m.notSourceIps, true);
  accounts('serviceAccounts', m.serviceAccounts, false);
  accounts('notServiceAccounts', m.notServiceAccounts, true);
  strings('namespace', 'namespaces', m.namespaces, false);
  strings('namespace', 'notNamespaces', m.notNamespaces, true);
  strings('principal', 'principals', m.principals, false);
  strings('principal', 'notPrincipals', m.notPrincipals, true);
  if (m.extensions.length > 0) issues.push(`${path}.extensions: not supported`);

  if (issues.length > 0) {
    const effect = failClosed === NEVER ? 'this Match of an ALLOW never matches' : 'this Match of a DENY matches every connection';
    for (const issue of issues) problems.push(`${issue}; ${effect} (fail closed)`);
    return failClosed;
  }
  return tests.length === 0 ? undefined : tests;
}

/** The compiled values, or undefined when one is malformed (each reported in `issues`). */
function collect<T, R>(list: readonly T[], path: string, compile: (v: T) => R | string, issues: string[]): R[] | undefined {
  const out: R[] = [];
  let bad = false;
  for (let i = 0; i < list.length; i++) {
    const r = compile(list[i]!);
    if (typeof r === 'string') {
      issues.push(`${path}[${i}]: ${r}`);
      bad = true;
    } else {
      out.push(r);
    }
  }
  return bad ? undefined : out;
}

function compileString(s: StringMatch): StringTest | string {
  let set = 0;
  let out: StringTest | undefined;
  if (s.exact !== undefined) {
    set++;
    out = { kind: EXACT, value: s.exact };
  }
  if (s.prefix !== undefined) {
    set++;
    out = { kind: PREFIX, value: s.prefix };
  }
  if (s.suffix !== undefined) {
    set++;
    out = { kind: SUFFIX, value: s.suffix };
  }
  if (s.presence !== undefined) {
    set++;
    out = { kind: PRESENCE, value: '' };
  }
  if (set === 0 || !out) return 'no match type is set';
  // The wire allows several members of a oneof (the last wins); which one was meant is unknown.
  if (set > 1) return 'more than one match type is set';
  if (typeof out.value !== 'string') return 'the value is not a string';
  // Names no peer; istiod never sends it (an empty value fails validation).
  if (out.kind === EXACT && out.value === '') return 'the exact value is empty';
  return out;
}

function compileServiceAccount(s: Match['serviceAccounts'][number]): ServiceAccountTest | string {
  if (typeof s.namespace !== 'string' || typeof s.serviceAccount !== 'string' || s.namespace === '' || s.serviceAccount === '') {
    return 'a service account needs both a namespace and a name';
  }
  return { namespace: s.namespace, serviceAccount: s.serviceAccount };
}
