// A targetRefs AuthorizationPolicy as the L7Policy a waypoint enforces (waypoint.proto): every
// attribute kept (the waypoint sees HTTP), values normalized by policy-rules.ts. Failing closed
// as for ztunnel: a broken rule is left out of an ALLOW or AUDIT; anything that leaves a DENY or
// CUSTOM policy (or the action itself) unknown sets invalid_reason, and the waypoint then denies
// every request the policy applies to.

import { L7Policy, L7Source, type L7Rule } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { AuthorizationPolicy } from '../../mesh/k8s/types.js';
import { isRecord, show } from './labels.js';
import { readRules, type ReadRule, type SourceField } from './policy-rules.js';
import type { PolicyShape } from './policy-shape.js';

export interface L7Translation {
  /** Without `services` (set per waypoint). */
  policy: L7Policy;
  /** Rules left out of an ALLOW/AUDIT (invalid, or trust domains the waypoint cannot express). */
  omittedRules: string[];
  /** Field errors, `<path>: <why>`. */
  errors: string[];
  warnings: string[];
}

const SOURCE_FIELDS: readonly [SourceField, keyof L7Source][] = [
  ['principals', 'principals'],
  ['notPrincipals', 'notPrincipals'],
  ['requestPrincipals', 'requestPrincipals'],
  ['notRequestPrincipals', 'notRequestPrincipals'],
  ['namespaces', 'namespaces'],
  ['notNamespaces', 'notNamespaces'],
  ['ipBlocks', 'ipBlocks'],
  ['notIpBlocks', 'notIpBlocks'],
  ['remoteIpBlocks', 'remoteIpBlocks'],
  ['notRemoteIpBlocks', 'notRemoteIpBlocks'],
  ['serviceAccounts', 'serviceAccounts'],
  ['notServiceAccounts', 'notServiceAccounts'],
];

export function l7Policy(policy: AuthorizationPolicy, shape: PolicyShape, dryRun: boolean): L7Translation {
  const read = readRules(policy);
  const errors = [...read.errors];
  const warnings = [...read.warnings];
  const omittedRules: string[] = [];
  const base = { name: shape.name, namespace: shape.namespace, services: [], dryRun };
  const invalid = (reason: string): L7Translation => ({
    policy: L7Policy.fromPartial({ ...base, action: 'DENY', rules: [], invalidReason: reason }),
    omittedRules,
    errors,
    warnings,
  });
  if (shape.action === undefined) {
    errors.push(shape.actionProblem!);
    return invalid(shape.actionProblem!);
  }
  const action = shape.action;
  const strictOnError = action === 'DENY' || action === 'CUSTOM';
  let provider = '';
  const spec: Record<string, unknown> = isRecord(policy.spec) ? policy.spec : {};
  if (action === 'CUSTOM') {
    const name = isRecord(spec.provider) ? spec.provider.name : undefined;
    if (typeof name !== 'string' || name === '') {
      const why = `spec.provider.name: ${name === undefined ? 'missing' : `${show(name)} is not a provider name`} (a CUSTOM policy needs its extension provider)`;
      errors.push(why);
      return invalid(why);
    }
    provider = name;
  } else if (spec.provider !== undefined && spec.provider !== null) {
    warnings.push(`spec.provider: only used with action CUSTOM; ignored`);
  }
  if (read.errors.length > 0 && strictOnError) return invalid(read.errors[0]!);
  const rules: L7Rule[] = [];
  for (const rule of read.rules) {
    if (rule.errors.length > 0) {
      errors.push(...rule.errors);
      if (strictOnError) return invalid(rule.errors[0]!);
      omittedRules.push(rule.path);
      continue;
    }
    const inexpressible = rule.from.some((s) => s.unsupported.length > 0);
    if (inexpressible && !strictOnError) {
      omittedRules.push(rule.path);
      continue;
    }
    rules.push(l7Rule(rule));
  }
  return { policy: L7Policy.fromPartial({ ...base, action, rules, provider }), omittedRules, errors, warnings };
}

function l7Rule(rule: ReadRule): L7Rule {
  const from: L7Source[] = [];
  let anySource = false;
  for (const src of rule.from) {
    const out = L7Source.fromPartial({});
    let fields = 0;
    for (const [field, target] of SOURCE_FIELDS) {
      const values = src.fields[field];
      if (values) {
        out[target] = values;
        fields++;
      }
    }
    // Only a DENY or CUSTOM gets here with trust domains it cannot express; dropping them makes
    // the source match more. A source left with nothing would match everyone, so `from` as a
    // whole no longer restricts the rule.
    if (fields === 0) anySource = true;
    from.push(out);
  }
  return {
    from: anySource ? [] : from,
    to: rule.to.map((op) => ({
      hosts: op.fields.hosts ?? [],
      notHosts: op.fields.notHosts ?? [],
      ports: op.fields.ports ?? [],
      notPorts: op.fields.notPorts ?? [],
      methods: op.fields.methods ?? [],
      notMethods: op.fields.notMethods ?? [],
      paths: op.fields.paths ?? [],
      notPaths: op.fields.notPaths ?? [],
    })),
    when: rule.when.map((c) => ({ key: c.key, values: c.values, notValues: c.notValues })),
  };
}
