// Evaluating compiled policies against one connection. A Subject is loaded once per check and
// reused (checks are synchronous, so one per PolicySet is never shared by two checks at once); the
// loops below allocate nothing.

import type { Identity } from '../identity/spiffe.js';
import { cidrContains, locate, type AddressView, type Cidr } from './address.js';
import { EXACT, PREFIX, SUFFIX, type CompiledPolicy, type StringTest, type Test } from './compile.js';
import type { AuthzConnection } from './types.js';

const NO_BYTES = new Uint8Array(0);

export class Subject {
  identity: Identity | undefined = undefined;
  src: Uint8Array = NO_BYTES;
  dst: Uint8Array = NO_BYTES;
  port = 0;
  readonly srcAt: AddressView = { v4: false, offset: 0 };
  readonly dstAt: AddressView = { v4: false, offset: 0 };
  private principalText: string | undefined = undefined;

  /** False when the description is malformed (the caller refuses the connection). */
  load(conn: AuthzConnection): boolean {
    this.identity = conn.identity;
    this.principalText = undefined;
    this.src = conn.srcIp;
    this.dst = conn.dstIp;
    this.port = conn.dstPort;
    if (!(conn.srcIp instanceof Uint8Array) || !(conn.dstIp instanceof Uint8Array)) return false;
    if (!locate(conn.srcIp, this.srcAt) || !locate(conn.dstIp, this.dstAt)) return false;
    return Number.isInteger(conn.dstPort) && conn.dstPort >= 0 && conn.dstPort <= 65535;
  }

  /** `<trust domain>/ns/<ns>/sa/<sa>`: the SPIFFE ID without `spiffe://`, built on first use. */
  principal(id: Identity): string {
    if (this.principalText === undefined) this.principalText = `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
    return this.principalText;
  }
}

export function policyMatches(p: CompiledPolicy, s: Subject): boolean {
  if (p.form !== 'some') return p.form === 'always';
  const rules = p.rules;
  for (let r = 0; r < rules.length; r++) if (ruleHolds(rules[r]!, s)) return true;
  return false;
}

function ruleHolds(rule: CompiledPolicy['rules'][number], s: Subject): boolean {
  for (let c = 0; c < rule.length; c++) {
    const clause = rule[c]!;
    let any = false;
    for (let m = 0; m < clause.length && !any; m++) any = matchHolds(clause[m]!, s);
    if (!any) return false;
  }
  return true;
}

function matchHolds(tests: readonly Test[], s: Subject): boolean {
  for (let t = 0; t < tests.length; t++) {
    const test = tests[t]!;
    if (hits(test, s) === test.negate) return false;
  }
  return true;
}

/** Whether any value of the list hits. An identity-less peer hits no identity value. */
function hits(test: Test, s: Subject): boolean {
  switch (test.field) {
    case 'port':
      return test.values.includes(s.port);
    case 'destinationIp':
      return anyCidr(test.values, s.dst, s.dstAt);
    case 'sourceIp':
      return anyCidr(test.values, s.src, s.srcAt);
    case 'serviceAccount': {
      const id = s.identity;
      if (!id) return false;
      // The trust domain is not compared (ztunnel's ServiceAccountMatch).
      const values = test.values;
      for (let i = 0; i < values.length; i++) if (values[i]!.namespace === id.namespace && values[i]!.serviceAccount === id.serviceAccount) return true;
      return false;
    }
    case 'namespace': {
      const id = s.identity;
      if (!id) return false;
      return anyString(test.values, id.namespace);
    }
    case 'principal': {
      const id = s.identity;
      if (!id) return false;
      return anyString(test.values, s.principal(id));
    }
  }
}

function anyCidr(values: readonly Cidr[], ip: Uint8Array, at: AddressView): boolean {
  for (let i = 0; i < values.length; i++) if (cidrContains(values[i]!, ip, at)) return true;
  return false;
}

function anyString(values: readonly StringTest[], value: string): boolean {
  for (let i = 0; i < values.length; i++) if (stringHits(values[i]!, value)) return true;
  return false;
}

function stringHits(m: StringTest, value: string): boolean {
  switch (m.kind) {
    case EXACT:
      return value === m.value;
    case PREFIX:
      return value.startsWith(m.value);
    case SUFFIX:
      return value.endsWith(m.value);
    default:
      return value !== '';
  }
}
