// Reads and checks `spec.rules` of an AuthorizationPolicy once, for both translations (ztunnel's
// L4 Authorization and the waypoint's L7Policy). Every value is checked here, with the field path
// in the message; a rule with any error is marked so that each translation can fail closed its own
// way. Values come out normalized: principals without `spiffe://`, service accounts as `ns/sa`,
// trust domains folded into principals where that is exact.

import type { AuthorizationPolicy } from '../../mesh/k8s/types.js';
import { ipBlock } from './ip-blocks.js';
import { isRecord, show } from './labels.js';
import { serviceAccountMatch, starMatch, stripSpiffe } from './string-match.js';

export const SOURCE_L4 = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks', 'serviceAccounts', 'notServiceAccounts'] as const;
export const SOURCE_L7 = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const;
export const OPERATION_L4 = ['ports', 'notPorts'] as const;
export const OPERATION_L7 = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const;
const TRUST_DOMAINS = ['trustDomains', 'notTrustDomains'] as const;

export type SourceField = (typeof SOURCE_L4)[number] | (typeof SOURCE_L7)[number];
export type OperationField = (typeof OPERATION_L4)[number] | (typeof OPERATION_L7)[number];

/** `when` keys ztunnel can enforce. `source.serviceAccount` is Ambit's addition (istiod treats it as HTTP-only). */
export const L4_CONDITION_KEYS: ReadonlySet<string> = new Set(['source.ip', 'source.namespace', 'source.principal', 'source.serviceAccount', 'destination.ip', 'destination.port']);

export interface ReadSource {
  fields: Partial<Record<SourceField, string[]>>;
  /** Attributes present but not expressible in principals (`trustDomains`, `notTrustDomains`). */
  unsupported: string[];
}

export interface ReadOperation {
  fields: Partial<Record<OperationField, string[]>>;
}

export interface ReadCondition {
  key: string;
  values: string[];
  notValues: string[];
}

export interface ReadRule {
  /** `spec.rules[<i>]`. */
  path: string;
  /** Untranslatable values, each `<field path>: <why>`; a rule with errors must fail closed. */
  errors: string[];
  from: ReadSource[];
  to: ReadOperation[];
  when: ReadCondition[];
}

export interface ReadRules {
  rules: ReadRule[];
  /** spec.rules itself unreadable: no rule is known. */
  errors: string[];
  /** Accepted with a caveat (a `spiffe://` principal). */
  warnings: string[];
}

type Kind = 'star' | 'principal' | 'ip' | 'serviceAccount' | 'port' | 'text';

const SOURCE_KINDS: Record<SourceField, Kind> = {
  principals: 'principal',
  notPrincipals: 'principal',
  requestPrincipals: 'star',
  notRequestPrincipals: 'star',
  namespaces: 'star',
  notNamespaces: 'star',
  ipBlocks: 'ip',
  notIpBlocks: 'ip',
  remoteIpBlocks: 'ip',
  notRemoteIpBlocks: 'ip',
  serviceAccounts: 'serviceAccount',
  notServiceAccounts: 'serviceAccount',
};

const OPERATION_KINDS: Record<OperationField, Kind> = {
  hosts: 'text',
  notHosts: 'text',
  ports: 'port',
  notPorts: 'port',
  methods: 'text',
  notMethods: 'text',
  paths: 'text',
  notPaths: 'text',
};

const CONDITION_KINDS: ReadonlyMap<string, Kind> = new Map<string, Kind>([
  ['source.ip', 'ip'],
  ['destination.ip', 'ip'],
  ['remote.ip', 'ip'],
  ['source.namespace', 'star'],
  ['source.principal', 'principal'],
  ['source.serviceAccount', 'serviceAccount'],
  ['destination.port', 'port'],
  ['request.auth.principal', 'text'],
  ['request.auth.audiences', 'text'],
  ['request.auth.presenter', 'text'],
  ['connection.sni', 'text'],
]);
const BRACKETED_KEY = /^(request\.headers|request\.auth\.claims)\[[^\]]+\]$/;
const ENVOY_FILTER_KEY = 'experimental.envoy.filters.';
const PORT = /^[0-9]{1,5}$/;

const cache = new WeakMap<object, ReadRules>();

/** The policy's rules, read and checked; cached on the (immutable) object. */
export function readRules(policy: AuthorizationPolicy): ReadRules {
  let read = cache.get(policy);
  if (!read) {
    read = readAll(policy);
    cache.set(policy, read);
  }
  return read;
}

/** The `when` key's value kind, or undefined for a key Istio does not have. */
export function conditionKind(key: string): Kind | undefined {
  const kind = CONDITION_KINDS.get(key);
  if (kind) return kind;
  if (BRACKETED_KEY.test(key) || (key.startsWith(ENVOY_FILTER_KEY) && key.length > ENVOY_FILTER_KEY.length)) return 'text';
  return undefined;
}

function readAll(policy: AuthorizationPolicy): ReadRules {
  const namespace = policy.metadata.namespace ?? 'default';
  const out: ReadRules = { rules: [], errors: [], warnings: [] };
  const spec: unknown = policy.spec;
  const raw = isRecord(spec) ? spec.rules : undefined;
  if (spec !== undefined && spec !== null && !isRecord(spec)) {
    out.errors.push(`spec: ${show(spec)} is not a map`);
    return out;
  }
  if (raw === undefined || raw === null) return out;
  if (!Array.isArray(raw)) {
    out.errors.push(`spec.rules: ${show(raw)} is not a list`);
    return out;
  }
  raw.forEach((rule, i) => out.rules.push(readRule(rule, `spec.rules[${i}]`, namespace, out.warnings)));
  return out;
}

function readRule(rule: unknown, path: string, namespace: string, warnings: string[]): ReadRule {
  const out: ReadRule = { path, errors: [], from: [], to: [], when: [] };
  if (!isRecord(rule)) {
    out.errors.push(`${path}: ${show(rule)} is not a map`);
    return out;
  }
  for (const key of Object.keys(rule)) {
    if (key !== 'from' && key !== 'to' && key !== 'when') out.errors.push(`${path}.${key}: not a field of an AuthorizationPolicy rule`);
  }
  for (const [i, entry] of list(rule.from, `${path}.from`, out.errors).entries()) {
    const at = `${path}.from[${i}]`;
    const source = element(entry, 'source', at, out.errors);
    if (source) out.from.push(readSource(source, `${at}.source`, namespace, out.errors, warnings));
  }
  for (const [i, entry] of list(rule.to, `${path}.to`, out.errors).entries()) {
    const at = `${path}.to[${i}]`;
    const operation = element(entry, 'operation', at, out.errors);
    if (operation) out.to.push(readOperation(operation, `${at}.operation`, out.errors));
  }
  for (const [i, entry] of list(rule.when, `${path}.when`, out.errors).entries()) {
    const condition = readCondition(entry, `${path}.when[${i}]`, namespace, out.errors, warnings);
    if (condition) out.when.push(condition);
  }
  return out;
}

function list(value: unknown, path: string, errors: string[]): unknown[] {
  if (value === undefined || value === null) return [];
  if (Array.isArray(value)) return value;
  errors.push(`${path}: ${show(value)} is not a list`);
  return [];
}

/** `from[i].source` / `to[i].operation`: the one key the element must hold. */
function element(entry: unknown, key: string, path: string, errors: string[]): Record<string, unknown> | undefined {
  if (!isRecord(entry)) {
    errors.push(`${path}: ${show(entry)} is not a map`);
    return undefined;
  }
  for (const k of Object.keys(entry)) if (k !== key) errors.push(`${path}.${k}: not a field here (expected ${key})`);
  const inner = entry[key];
  if (!isRecord(inner)) {
    errors.push(`${path}.${key}: ${inner === undefined || inner === null ? 'missing' : `${show(inner)} is not a map`}`);
    return undefined;
  }
  return inner;
}

function readSource(source: Record<string, unknown>, path: string, namespace: string, errors: string[], warnings: string[]): ReadSource {
  const out: ReadSource = { fields: {}, unsupported: [] };
  const before = errors.length;
  let any = false;
  for (const [key, value] of Object.entries(source)) {
    if ((TRUST_DOMAINS as readonly string[]).includes(key)) continue;
    const kind = SOURCE_KINDS[key as SourceField] as Kind | undefined;
    if (!kind || !Object.prototype.hasOwnProperty.call(SOURCE_KINDS, key)) {
      errors.push(`${path}.${key}: not a field of an AuthorizationPolicy source`);
      continue;
    }
    const values = stringList(value, `${path}.${key}`, kind, namespace, errors, warnings);
    if (values.length > 0) {
      out.fields[key as SourceField] = values;
      any = true;
    }
  }
  any = readTrustDomains(source, path, out, errors) || any;
  // Only when nothing else was wrong with it: a source emptied by bad values is already reported.
  if (!any && errors.length === before) errors.push(`${path}: is empty (a source must name at least one attribute)`);
  return out;
}

/**
 * istiod does not translate trustDomains at all (an ALLOW then ignores them, widening it). A
 * trust domain is the first part of the principal, so `td` is the principal pattern `td/*`:
 * exact, and enforceable by ztunnel and waypoints alike. Not expressible: a suffix pattern
 * (`*.example`), and trustDomains beside principals (the two would have to AND). Those stay
 * `unsupported`; each translation fails closed on them.
 */
function readTrustDomains(source: Record<string, unknown>, path: string, out: ReadSource, errors: string[]): boolean {
  let any = false;
  for (const key of TRUST_DOMAINS) {
    const values = stringList(source[key], `${path}.${key}`, 'star', '', errors, []);
    if (values.length === 0) continue;
    any = true;
    const target = key === 'trustDomains' ? 'principals' : 'notPrincipals';
    const converted: string[] = [];
    let expressible = key === 'notTrustDomains' || (out.fields.principals ?? []).length === 0;
    for (const [i, td] of values.entries()) {
      if (td.includes('/')) {
        errors.push(`${path}.${key}[${i}]: ${show(td)} is not a trust domain`);
        expressible = false;
        continue;
      }
      if (td === '*') converted.push('*');
      else if (td.startsWith('*')) expressible = false;
      else if (td.endsWith('*')) converted.push(td);
      else converted.push(`${td}/*`);
    }
    if (!expressible) {
      out.unsupported.push(key);
      continue;
    }
    out.fields[target] = [...(out.fields[target] ?? []), ...converted];
  }
  return any;
}

function readOperation(operation: Record<string, unknown>, path: string, errors: string[]): ReadOperation {
  const out: ReadOperation = { fields: {} };
  const before = errors.length;
  let any = false;
  for (const [key, value] of Object.entries(operation)) {
    const kind = Object.prototype.hasOwnProperty.call(OPERATION_KINDS, key) ? OPERATION_KINDS[key as OperationField] : undefined;
    if (!kind) {
      errors.push(`${path}.${key}: not a field of an AuthorizationPolicy operation`);
      continue;
    }
    const values = stringList(value, `${path}.${key}`, kind, '', errors, []);
    if (values.length > 0) {
      out.fields[key as OperationField] = values;
      any = true;
    }
  }
  if (!any && errors.length === before) errors.push(`${path}: is empty (an operation must name at least one attribute)`);
  return out;
}

function readCondition(entry: unknown, path: string, namespace: string, errors: string[], warnings: string[]): ReadCondition | undefined {
  if (!isRecord(entry)) {
    errors.push(`${path}: ${show(entry)} is not a map`);
    return undefined;
  }
  for (const k of Object.keys(entry)) {
    if (k !== 'key' && k !== 'values' && k !== 'notValues') errors.push(`${path}.${k}: not a field of a condition`);
  }
  const key = entry.key;
  if (typeof key !== 'string' || key === '') {
    errors.push(`${path}.key: ${key === undefined ? 'missing' : `${show(key)} is not a condition key`}`);
    return undefined;
  }
  const kind = conditionKind(key);
  if (!kind) {
    errors.push(`${path}.key: ${show(key)} is not a condition key Istio knows`);
    return undefined;
  }
  const values = stringList(entry.values, `${path}.values`, kind, namespace, errors, warnings);
  const notValues = stringList(entry.notValues, `${path}.notValues`, kind, namespace, errors, warnings);
  if (values.length === 0 && notValues.length === 0) {
    errors.push(`${path}: has neither values nor notValues`);
    return undefined;
  }
  return { key, values, notValues };
}

/** A list of checked, normalized strings; every bad element is an error naming its index. */
function stringList(value: unknown, path: string, kind: Kind, namespace: string, errors: string[], warnings: string[]): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) {
    errors.push(`${path}: ${show(value)} is not a list of strings`);
    return [];
  }
  const out: string[] = [];
  value.forEach((v, i) => {
    const at = `${path}[${i}]`;
    if (typeof v !== 'string') {
      errors.push(`${at}: ${show(v)} is not a string`);
      return;
    }
    const checked = checkValue(v, kind, namespace);
    if (checked.error !== undefined) {
      errors.push(`${at}: ${show(v)} ${checked.error}`);
      return;
    }
    if (checked.warning !== undefined) warnings.push(`${at}: ${show(v)} ${checked.warning}`);
    out.push(checked.value);
  });
  return out;
}

function checkValue(v: string, kind: Kind, namespace: string): { value: string; error?: string; warning?: string } {
  switch (kind) {
    case 'text':
      return v === '' ? { value: v, error: 'is empty' } : { value: v };
    case 'star': {
      const m = starMatch(v);
      return typeof m === 'string' ? { value: v, error: m } : { value: v };
    }
    case 'principal': {
      const { value, stripped } = stripSpiffe(v);
      const m = starMatch(value);
      if (typeof m === 'string') return { value, error: m };
      return stripped ? { value, warning: `is written with "spiffe://"; matched as ${show(value)} (Istio would never match it)` } : { value };
    }
    case 'ip': {
      const a = ipBlock(v);
      return typeof a === 'string' ? { value: v, error: a } : { value: v };
    }
    case 'serviceAccount': {
      const sa = serviceAccountMatch(v, namespace);
      return typeof sa === 'string' ? { value: v, error: sa } : { value: `${sa.namespace}/${sa.serviceAccount}` };
    }
    case 'port':
      return PORT.test(v) && Number(v) >= 1 && Number(v) <= 65535 ? { value: String(Number(v)) } : { value: v, error: 'is not a port number (1-65535)' };
  }
}
