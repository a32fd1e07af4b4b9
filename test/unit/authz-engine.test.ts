// The L4 authorization engine (mesh/authz): every Match field both ways, the Rule/Clause/Match
// structure, scope selection, the decision order, plaintext peers, fail-closed handling of malformed
// content, incremental updates, recheck, dry run, and the control plane's own output end to end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicySet, type AuthzConnection, type AuthzWorkload } from '../../mesh/authz/index.js';
import { parseIdentity } from '../../mesh/identity/spiffe.js';
import { ipBytes } from '../../mesh/ip-text.js';
import { ipBlock } from '../../controlplane/model/ip-blocks.js';
import { viewFromObjects } from '../../mesh/config/kinds.js';
import { buildModel } from '../../controlplane/model/build.js';
import { Action, Authorization, Scope, type Address, type DeepPartial, type Match } from '../../proto/gen/istio/security/authorization.js';
import type { Workload } from '../../proto/gen/istio/workload/workload.js';

// ---------------------------------------------------------------------------------------------
// Fixtures

function ip(text: string): Buffer {
  const b = ipBytes(text);
  assert.ok(b, `${text} is an address`);
  return b;
}

function cidr(text: string): Address {
  const a = ipBlock(text);
  assert.ok(typeof a !== 'string', `${text}: ${String(a)}`);
  return a;
}

interface ConnSpec {
  /** `<td>/ns/<ns>/sa/<sa>`; absent for plaintext. */
  id?: string;
  src?: string;
  dst?: string;
  port?: number;
}

function conn(spec: ConnSpec = {}): AuthzConnection {
  return {
    identity: spec.id === undefined ? undefined : parseIdentity(`spiffe://${spec.id}`),
    srcIp: ip(spec.src ?? '10.1.0.5'),
    dstIp: ip(spec.dst ?? '10.0.0.1'),
    dstPort: spec.port ?? 8080,
  };
}

const FRIEND = 'cluster.local/ns/ns/sa/friend';
const STRANGER = 'cluster.local/ns/other/sa/stranger';

type PolicySpec = DeepPartial<Authorization>;
type MatchSpec = DeepPartial<Match>;

function pol(spec: PolicySpec): Authorization {
  const full: PolicySpec = { namespace: 'ns', scope: Scope.NAMESPACE, action: Action.ALLOW, ...spec };
  return Authorization.fromPartial(full);
}

function wl(namespace = 'ns', authorizationPolicies: string[] = []): AuthzWorkload {
  return { namespace, authorizationPolicies };
}

/**
 * Whether one Match holds for a connection, asked twice: as the only ALLOW (allowed iff it holds)
 * and as the only DENY (denied iff it holds). The two must agree.
 */
function holds(match: MatchSpec, c: AuthzConnection): boolean {
  const rules = [{ clauses: [{ matches: [match] }] }];
  const viaAllow = new PolicySet([pol({ name: 'a', rules })]).check(c, wl()).allowed;
  const viaDeny = !new PolicySet([pol({ name: 'd', action: Action.DENY, rules })]).check(c, wl()).allowed;
  assert.equal(viaAllow, viaDeny, 'ALLOW and DENY views of one Match disagree');
  return viaAllow;
}

// ---------------------------------------------------------------------------------------------
// Match fields

test('namespaces: exact, prefix, suffix, presence, taken from the peer identity', () => {
  const c = conn({ id: 'cluster.local/ns/payments/sa/api' });
  assert.equal(holds({ namespaces: [{ exact: 'payments' }] }, c), true);
  assert.equal(holds({ namespaces: [{ exact: 'pay' }] }, c), false);
  assert.equal(holds({ namespaces: [{ prefix: 'pay' }] }, c), true);
  assert.equal(holds({ namespaces: [{ prefix: 'ments' }] }, c), false);
  assert.equal(holds({ namespaces: [{ suffix: 'ments' }] }, c), true);
  assert.equal(holds({ namespaces: [{ suffix: 'pay' }] }, c), false);
  assert.equal(holds({ namespaces: [{ presence: {} }] }, c), true);
  // Values of one list OR.
  assert.equal(holds({ namespaces: [{ exact: 'a' }, { exact: 'payments' }] }, c), true);
  assert.equal(holds({ namespaces: [{ exact: 'a' }, { exact: 'b' }] }, c), false);
  // The namespace, not the service account or trust domain.
  assert.equal(holds({ namespaces: [{ exact: 'api' }] }, c), false);
  assert.equal(holds({ namespaces: [{ exact: 'cluster.local' }] }, c), false);
});

test('notNamespaces: holds when no value hits', () => {
  const c = conn({ id: 'cluster.local/ns/payments/sa/api' });
  assert.equal(holds({ notNamespaces: [{ exact: 'payments' }] }, c), false);
  assert.equal(holds({ notNamespaces: [{ exact: 'other' }] }, c), true);
  assert.equal(holds({ notNamespaces: [{ exact: 'other' }, { prefix: 'pay' }] }, c), false);
  assert.equal(holds({ notNamespaces: [{ presence: {} }] }, c), false);
});

test('principals: compared without spiffe://, with the * forms', () => {
  const c = conn({ id: 'td.example/ns/payments/sa/api' });
  assert.equal(holds({ principals: [{ exact: 'td.example/ns/payments/sa/api' }] }, c), true);
  assert.equal(holds({ principals: [{ exact: 'spiffe://td.example/ns/payments/sa/api' }] }, c), false, 'a written spiffe:// never matches');
  assert.equal(holds({ principals: [{ exact: 'cluster.local/ns/payments/sa/api' }] }, c), false, 'the trust domain counts');
  assert.equal(holds({ principals: [{ prefix: 'td.example/ns/payments/' }] }, c), true);
  assert.equal(holds({ principals: [{ prefix: 'td.example/ns/pay/' }] }, c), false);
  assert.equal(holds({ principals: [{ suffix: '/sa/api' }] }, c), true);
  assert.equal(holds({ principals: [{ suffix: '/sa/web' }] }, c), false);
  assert.equal(holds({ principals: [{ presence: {} }] }, c), true);
  assert.equal(holds({ principals: [{ exact: 'x' }, { suffix: '/sa/api' }] }, c), true);
});

test('notPrincipals', () => {
  const c = conn({ id: FRIEND });
  assert.equal(holds({ notPrincipals: [{ exact: FRIEND }] }, c), false);
  assert.equal(holds({ notPrincipals: [{ exact: STRANGER }] }, c), true);
  assert.equal(holds({ notPrincipals: [{ presence: {} }] }, c), false);
  assert.equal(holds({ notPrincipals: [{ presence: {} }] }, conn({ id: STRANGER })), false);
});

test('serviceAccounts: namespace and name, any trust domain', () => {
  const sa = { namespace: 'payments', serviceAccount: 'api' };
  assert.equal(holds({ serviceAccounts: [sa] }, conn({ id: 'cluster.local/ns/payments/sa/api' })), true);
  assert.equal(holds({ serviceAccounts: [sa] }, conn({ id: 'other.td/ns/payments/sa/api' })), true);
  assert.equal(holds({ serviceAccounts: [sa] }, conn({ id: 'cluster.local/ns/payments/sa/web' })), false);
  assert.equal(holds({ serviceAccounts: [sa] }, conn({ id: 'cluster.local/ns/api/sa/payments' })), false);
  assert.equal(holds({ serviceAccounts: [{ namespace: 'x', serviceAccount: 'y' }, sa] }, conn({ id: 'cluster.local/ns/payments/sa/api' })), true);
  assert.equal(holds({ notServiceAccounts: [sa] }, conn({ id: 'cluster.local/ns/payments/sa/api' })), false);
  assert.equal(holds({ notServiceAccounts: [sa] }, conn({ id: 'cluster.local/ns/payments/sa/web' })), true);
});

test('sourceIps: IPv4 /32, /24, /23, /31, /0, host bits in the block ignored', () => {
  const c = conn({ src: '10.1.2.3' });
  assert.equal(holds({ sourceIps: [cidr('10.1.2.3/32')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('10.1.2.4/32')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('10.1.2.3')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('10.1.2.0/24')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('10.1.3.0/24')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('10.1.2.0/23')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('10.1.0.0/23')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('10.1.2.2/31')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('10.1.2.4/31')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('0.0.0.0/0')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('10.99.99.99/8')] }, c), true, 'host bits of the block do not count');
  assert.equal(holds({ sourceIps: [cidr('11.0.0.0/8'), cidr('10.0.0.0/8')] }, c), true);
  // The destination address is not the source.
  assert.equal(holds({ sourceIps: [cidr('10.0.0.1/32')] }, conn({ src: '10.1.2.3', dst: '10.0.0.1' })), false);
});

test('sourceIps: IPv6 /128, /64, /127, /0; families never cross; IPv4-mapped peers count as IPv4', () => {
  const c = conn({ src: '2001:db8:1:2::5' });
  assert.equal(holds({ sourceIps: [cidr('2001:db8:1:2::5/128')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('2001:db8:1:2::6/128')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('2001:db8:1:2::/64')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('2001:db8:1:3::/64')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('2001:db8:1:2::4/127')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('2001:db8:1:2::6/127')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('::/0')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('0.0.0.0/0')] }, c), false, 'an IPv4 block never holds an IPv6 peer');
  assert.equal(holds({ sourceIps: [cidr('::/0')] }, conn({ src: '10.1.2.3' })), false, 'an IPv6 block never holds an IPv4 peer');
  const mapped = conn({ src: '::ffff:10.1.2.3' });
  assert.equal(mapped.srcIp.length, 16);
  assert.equal(holds({ sourceIps: [cidr('10.1.2.0/24')] }, mapped), true);
  assert.equal(holds({ sourceIps: [cidr('10.1.3.0/24')] }, mapped), false);
  assert.equal(holds({ sourceIps: [cidr('::/0')] }, mapped), false, 'mapped peers are IPv4');
  // A mapped block of /96 or longer is the IPv4 block it spells.
  assert.equal(holds({ sourceIps: [cidr('::ffff:10.1.0.0/112')] }, conn({ src: '10.1.2.3' })), true);
  assert.equal(holds({ sourceIps: [cidr('::ffff:10.2.0.0/112')] }, conn({ src: '10.1.2.3' })), false);
});

test('notSourceIps', () => {
  const c = conn({ src: '10.1.2.3' });
  assert.equal(holds({ notSourceIps: [cidr('10.1.2.0/24')] }, c), false);
  assert.equal(holds({ notSourceIps: [cidr('10.1.3.0/24')] }, c), true);
  assert.equal(holds({ notSourceIps: [cidr('0.0.0.0/0')] }, c), false);
  assert.equal(holds({ notSourceIps: [cidr('::/0')] }, c), true);
  assert.equal(holds({ sourceIps: [cidr('10.0.0.0/8')], notSourceIps: [cidr('10.1.0.0/16')] }, c), false);
  assert.equal(holds({ sourceIps: [cidr('10.0.0.0/8')], notSourceIps: [cidr('10.2.0.0/16')] }, c), true);
});

test('destinationIps and notDestinationIps, IPv4 and IPv6', () => {
  const c4 = conn({ src: '10.9.9.9', dst: '10.0.0.1' });
  assert.equal(holds({ destinationIps: [cidr('10.0.0.1/32')] }, c4), true);
  assert.equal(holds({ destinationIps: [cidr('10.0.0.2/32')] }, c4), false);
  assert.equal(holds({ destinationIps: [cidr('10.9.9.9/32')] }, c4), false, 'the source is not the destination');
  assert.equal(holds({ destinationIps: [cidr('0.0.0.0/0')] }, c4), true);
  assert.equal(holds({ notDestinationIps: [cidr('10.0.0.0/30')] }, c4), false);
  assert.equal(holds({ notDestinationIps: [cidr('10.0.0.4/30')] }, c4), true);
  const c6 = conn({ src: 'fd00::9', dst: 'fd00::1' });
  assert.equal(holds({ destinationIps: [cidr('fd00::1/128')] }, c6), true);
  assert.equal(holds({ destinationIps: [cidr('fd00::2/128')] }, c6), false);
  assert.equal(holds({ destinationIps: [cidr('fd00::/8')] }, c6), true);
  assert.equal(holds({ destinationIps: [cidr('fe00::/8')] }, c6), false);
  assert.equal(holds({ notDestinationIps: [cidr('fd00::/16')] }, c6), false);
  assert.equal(holds({ notDestinationIps: [cidr('::/0')] }, c6), false);
  assert.equal(holds({ notDestinationIps: [cidr('0.0.0.0/0')] }, c6), true);
});

test('destinationPorts and notDestinationPorts', () => {
  const c = conn({ port: 8080 });
  assert.equal(holds({ destinationPorts: [8080] }, c), true);
  assert.equal(holds({ destinationPorts: [80] }, c), false);
  assert.equal(holds({ destinationPorts: [80, 8080] }, c), true);
  assert.equal(holds({ notDestinationPorts: [8080] }, c), false);
  assert.equal(holds({ notDestinationPorts: [80, 443] }, c), true);
  assert.equal(holds({ destinationPorts: [65535] }, conn({ port: 65535 })), true);
  assert.equal(holds({ destinationPorts: [1] }, conn({ port: 1 })), true);
});

test('a Match: different lists AND', () => {
  const m: MatchSpec = { namespaces: [{ exact: 'ns' }], destinationPorts: [8080], sourceIps: [cidr('10.1.0.0/16')] };
  assert.equal(holds(m, conn({ id: FRIEND, src: '10.1.0.5', port: 8080 })), true);
  assert.equal(holds(m, conn({ id: STRANGER, src: '10.1.0.5', port: 8080 })), false);
  assert.equal(holds(m, conn({ id: FRIEND, src: '10.2.0.5', port: 8080 })), false);
  assert.equal(holds(m, conn({ id: FRIEND, src: '10.1.0.5', port: 9090 })), false);
  const both: MatchSpec = { principals: [{ presence: {} }], notPrincipals: [{ exact: STRANGER }] };
  assert.equal(holds(both, conn({ id: FRIEND })), true);
  assert.equal(holds(both, conn({ id: STRANGER })), false);
});

// ---------------------------------------------------------------------------------------------
// Plaintext (no peer identity)

test('plaintext: no principal, namespace or service-account value hits; their not-forms hold', () => {
  const plain = conn({});
  for (const m of [
    { principals: [{ presence: {} }] },
    { principals: [{ prefix: '' }] },
    { principals: [{ suffix: '' }] },
    { namespaces: [{ presence: {} }] },
    { namespaces: [{ prefix: '' }] },
    { namespaces: [{ suffix: '' }] },
    { serviceAccounts: [{ namespace: 'ns', serviceAccount: 'default' }] },
  ] satisfies MatchSpec[]) {
    assert.equal(holds(m, plain), false, JSON.stringify(m));
  }
  for (const m of [
    { notPrincipals: [{ presence: {} }] },
    { notPrincipals: [{ prefix: '' }] },
    { notNamespaces: [{ presence: {} }] },
    { notNamespaces: [{ exact: 'ns' }] },
    { notServiceAccounts: [{ namespace: 'ns', serviceAccount: 'default' }] },
  ] satisfies MatchSpec[]) {
    assert.equal(holds(m, plain), true, JSON.stringify(m));
  }
  // Address and port lists still apply to plaintext.
  assert.equal(holds({ sourceIps: [cidr('10.1.0.0/16')] }, plain), true);
  assert.equal(holds({ destinationPorts: [8080] }, plain), true);
});

test('plaintext: an ALLOW by principal or namespace refuses it; a DENY by namespace does not catch it', () => {
  const allow = new PolicySet([pol({ name: 'friends', rules: [{ clauses: [{ matches: [{ principals: [{ exact: FRIEND }] }, { namespaces: [{ exact: 'ns' }] }] }] }] })]);
  assert.equal(allow.check(conn({ id: FRIEND }), wl()).allowed, true);
  assert.deepEqual(allow.check(conn({}), wl()), { allowed: false, reason: 'allow policies exist, but none allowed' });
  const deny = new PolicySet([pol({ name: 'no-other', action: Action.DENY, rules: [{ clauses: [{ matches: [{ namespaces: [{ exact: 'other' }] }] }] }] })]);
  assert.equal(deny.check(conn({ id: STRANGER }), wl()).allowed, false);
  assert.equal(deny.check(conn({}), wl()).allowed, true);
});

// ---------------------------------------------------------------------------------------------
// Rule / Clause / Match structure

test('structure: matches of a clause OR, clauses of a rule AND, rules of a policy OR', () => {
  const set = new PolicySet([
    pol({
      name: 'p',
      rules: [
        {
          clauses: [
            { matches: [{ namespaces: [{ exact: 'a' }] }, { namespaces: [{ exact: 'b' }] }] },
            { matches: [{ destinationPorts: [80] }] },
          ],
        },
        { clauses: [{ matches: [{ principals: [{ exact: 'cluster.local/ns/c/sa/admin' }] }] }] },
      ],
    }),
  ]);
  const ok = (id: string, port: number): boolean => set.check(conn({ id, port }), wl()).allowed;
  assert.equal(ok('cluster.local/ns/a/sa/x', 80), true);
  assert.equal(ok('cluster.local/ns/b/sa/x', 80), true);
  assert.equal(ok('cluster.local/ns/a/sa/x', 81), false, 'second clause fails');
  assert.equal(ok('cluster.local/ns/c/sa/x', 80), false, 'first clause fails');
  assert.equal(ok('cluster.local/ns/c/sa/admin', 81), true, 'second rule');
  assert.equal(ok('cluster.local/ns/d/sa/admin', 81), false);
});

test('structure: an empty Match is skipped; a clause of only empty Matches never holds', () => {
  const empty: MatchSpec = {};
  // [empty, ports 80]: only the port Match counts.
  const set = new PolicySet([pol({ name: 'p', rules: [{ clauses: [{ matches: [empty, { destinationPorts: [80] }] }] }] })]);
  assert.equal(set.check(conn({ port: 80 }), wl()).allowed, true);
  assert.equal(set.check(conn({ port: 81 }), wl()).allowed, false);
  // A DENY whose clause is only empty Matches (istiod's L7-only DENY) denies nothing.
  const deny = new PolicySet([pol({ name: 'l7', action: Action.DENY, rules: [{ clauses: [{ matches: [empty, empty] }] }] })]);
  assert.equal(deny.check(conn({ id: FRIEND }), wl()).allowed, true);
  assert.equal(deny.check(conn({}), wl()).allowed, true);
  // The same in one clause of a rule makes the whole rule fail.
  const mixed = new PolicySet([pol({ name: 'm', action: Action.DENY, rules: [{ clauses: [{ matches: [{ destinationPorts: [8080] }] }, { matches: [empty] }] }] })]);
  assert.equal(mixed.check(conn({ port: 8080 }), wl()).allowed, true);
});

test('structure: a clause with no matches holds; a rule with no clauses matches everything', () => {
  const clauseless = new PolicySet([pol({ name: 'd', action: Action.DENY, rules: [{ clauses: [] }] })]);
  for (const c of [conn({}), conn({ id: FRIEND }), conn({ src: 'fd00::1', dst: 'fd00::2', port: 1 })]) {
    assert.deepEqual(clauseless.check(c, wl()), { allowed: false, policy: 'ns/d', reason: 'explicitly denied by: ns/d' });
  }
  const emptyClause = new PolicySet([pol({ name: 'a', rules: [{ clauses: [{ matches: [] }, { matches: [{ destinationPorts: [80] }] }] }] })]);
  assert.equal(emptyClause.check(conn({ port: 80 }), wl()).allowed, true);
  assert.equal(emptyClause.check(conn({ port: 81 }), wl()).allowed, false);
});

test('an ALLOW with zero rules matches nothing and so denies everything (and beats no policy)', () => {
  const set = new PolicySet([pol({ name: 'nothing', rules: [] })]);
  for (const c of [conn({}), conn({ id: FRIEND }), conn({ id: STRANGER, port: 1 })]) {
    assert.deepEqual(set.check(c, wl()), { allowed: false, reason: 'allow policies exist, but none allowed' });
  }
  // Another ALLOW can still allow beside it.
  set.upsert(pol({ name: 'friend', rules: [{ clauses: [{ matches: [{ principals: [{ exact: FRIEND }] }] }] }] }));
  assert.equal(set.check(conn({ id: FRIEND }), wl()).allowed, true);
  // A DENY with zero rules denies nothing.
  const deny = new PolicySet([pol({ name: 'd', action: Action.DENY, rules: [] })]);
  assert.equal(deny.check(conn({}), wl()).allowed, true);
});

// ---------------------------------------------------------------------------------------------
// Decision order

test('no policies: allowed', () => {
  assert.deepEqual(new PolicySet().check(conn({}), wl()), { allowed: true, reason: 'no allow policies' });
});

test('DENY wins over a matching ALLOW; the decision names the deciding policy', () => {
  const set = new PolicySet([
    pol({ name: 'allow-all', rules: [{ clauses: [] }] }),
    pol({ name: 'deny-stranger', action: Action.DENY, rules: [{ clauses: [{ matches: [{ principals: [{ exact: STRANGER }] }] }] }] }),
  ]);
  assert.deepEqual(set.check(conn({ id: STRANGER }), wl()), { allowed: false, policy: 'ns/deny-stranger', reason: 'explicitly denied by: ns/deny-stranger' });
  assert.deepEqual(set.check(conn({ id: FRIEND }), wl()), { allowed: true, policy: 'ns/allow-all', reason: 'allowed by: ns/allow-all' });
});

test('DENY-only: what no DENY matches is allowed', () => {
  const set = new PolicySet([pol({ name: 'd', action: Action.DENY, rules: [{ clauses: [{ matches: [{ destinationPorts: [22] }] }] }] })]);
  assert.equal(set.check(conn({ port: 22 }), wl()).allowed, false);
  assert.deepEqual(set.check(conn({ port: 8080 }), wl()), { allowed: true, reason: 'no allow policies' });
});

test('several matching DENYs: the namespace ones first, by key, then global, then listed', () => {
  const all = { rules: [{ clauses: [] }], action: Action.DENY };
  const set = new PolicySet([
    pol({ name: 'z', ...all, scope: Scope.WORKLOAD_SELECTOR }),
    pol({ name: 'g', namespace: 'istio-system', scope: Scope.GLOBAL, ...all }),
    pol({ name: 'b', ...all }),
    pol({ name: 'a', ...all }),
  ]);
  assert.equal(set.check(conn({}), wl('ns', ['ns/z'])).policy, 'ns/a');
  set.remove('ns/a');
  assert.equal(set.check(conn({}), wl('ns', ['ns/z'])).policy, 'ns/b');
  set.remove('ns/b');
  assert.equal(set.check(conn({}), wl('ns', ['ns/z'])).policy, 'istio-system/g');
  set.remove('istio-system/g');
  assert.equal(set.check(conn({}), wl('ns', ['ns/z'])).policy, 'ns/z');
});

// ---------------------------------------------------------------------------------------------
// Scope selection

test('scope: NAMESPACE applies to its namespace only, GLOBAL everywhere, WORKLOAD_SELECTOR where listed', () => {
  const denyAll = { action: Action.DENY, rules: [{ clauses: [] }] };
  const set = new PolicySet([
    pol({ name: 'ns-wide', namespace: 'a', scope: Scope.NAMESPACE, ...denyAll }),
    pol({ name: 'selected', namespace: 'b', scope: Scope.WORKLOAD_SELECTOR, ...denyAll }),
  ]);
  assert.equal(set.check(conn({}), wl('a')).allowed, false);
  assert.equal(set.check(conn({}), wl('b')).allowed, true, 'a workload policy no workload lists applies nowhere');
  assert.equal(set.check(conn({}), wl('b', ['b/selected'])).allowed, false);
  assert.equal(set.check(conn({}), wl('c')).allowed, true, "another namespace's policy does not apply");
  // A listed name applies whatever namespace the workload is in (ztunnel looks names up by key).
  assert.equal(set.check(conn({}), wl('c', ['b/selected'])).allowed, false);
  set.upsert(pol({ name: 'mesh', namespace: 'istio-system', scope: Scope.GLOBAL, ...denyAll }));
  for (const ns of ['a', 'b', 'c', 'istio-system']) assert.equal(set.check(conn({}), wl(ns)).policy, ns === 'a' ? 'a/ns-wide' : 'istio-system/mesh', ns);
});

test('scope: a NAMESPACE ALLOW makes ALLOW-mode only its namespace', () => {
  const set = new PolicySet([pol({ name: 'friends', namespace: 'a', rules: [{ clauses: [{ matches: [{ principals: [{ exact: FRIEND }] }] }] }] })]);
  assert.equal(set.check(conn({ id: STRANGER }), wl('a')).allowed, false);
  assert.equal(set.check(conn({ id: STRANGER }), wl('b')).allowed, true);
});

test('scope: listed names that were not received are skipped by default, refused with unknownPolicy deny', () => {
  const skip = new PolicySet();
  assert.deepEqual(skip.check(conn({}), wl('ns', ['istio-system/istio_converted_static_strict'])), { allowed: true, reason: 'no allow policies' });
  const strict = new PolicySet([], { unknownPolicy: 'deny' });
  const d = strict.check(conn({ id: FRIEND }), wl('ns', ['istio-system/istio_converted_static_strict']));
  assert.equal(d.allowed, false);
  assert.equal(d.policy, 'istio-system/istio_converted_static_strict');
  assert.match(d.reason, /has not been received/);
  strict.upsert(pol({ name: 'istio_converted_static_strict', namespace: 'istio-system', scope: Scope.WORKLOAD_SELECTOR, action: Action.DENY, rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }] }] }] }] }));
  assert.equal(strict.check(conn({ id: FRIEND }), wl('ns', ['istio-system/istio_converted_static_strict'])).allowed, true);
});

// ---------------------------------------------------------------------------------------------
// The control plane's own output

function modelWorld(objects: unknown[]): { set: PolicySet; workload(name: string): Workload; problems: string[] } {
  const { view, rejected } = viewFromObjects(objects);
  assert.deepEqual(rejected, []);
  const model = buildModel(view);
  const set = new PolicySet();
  const problems: string[] = [];
  for (const a of model.authorizations.values()) problems.push(...set.upsert(a));
  return {
    set,
    problems,
    workload: (name) => {
      const w = [...model.workloads.values()].find((x) => x.name === name);
      assert.ok(w, `workload ${name}`);
      return w;
    },
  };
}

function podObject(name: string, namespace: string, ip4: string, labels: Record<string, string> = {}): unknown {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels }, spec: { containers: [{ name: 'c' }] }, status: { phase: 'Running', podIP: ip4 } };
}

function peerAuthentication(name: string, namespace: string, spec: unknown): unknown {
  return { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name, namespace }, spec };
}

function authorizationPolicy(name: string, namespace: string, spec: unknown): unknown {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec };
}

test('model: mesh-wide STRICT PeerAuthentication refuses plaintext and admits mTLS', () => {
  const w = modelWorld([podObject('a', 'ns', '10.0.0.1'), peerAuthentication('default', 'istio-system', { mtls: { mode: 'STRICT' } })]);
  assert.deepEqual(w.problems, []);
  const a = w.workload('a');
  assert.deepEqual(a.authorizationPolicies, ['istio-system/istio_converted_static_strict']);
  assert.deepEqual(w.set.check(conn({ dst: '10.0.0.1' }), a), {
    allowed: false,
    policy: 'istio-system/istio_converted_static_strict',
    reason: 'explicitly denied by: istio-system/istio_converted_static_strict',
  });
  assert.deepEqual(w.set.check(conn({ id: STRANGER, dst: '10.0.0.1' }), a), { allowed: true, reason: 'no allow policies' });
});

test('model: PERMISSIVE admits plaintext; a STRICT workload policy with a PERMISSIVE port admits plaintext on that port only', () => {
  const permissive = modelWorld([podObject('a', 'ns', '10.0.0.1'), peerAuthentication('default', 'istio-system', { mtls: { mode: 'PERMISSIVE' } })]);
  assert.equal(permissive.set.check(conn({}), permissive.workload('a')).allowed, true);

  const w = modelWorld([
    podObject('a', 'ns', '10.0.0.1', { app: 'a' }),
    podObject('b', 'ns', '10.0.0.2', { app: 'b' }),
    peerAuthentication('a-ports', 'ns', { selector: { matchLabels: { app: 'a' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { 8080: { mode: 'PERMISSIVE' } } }),
    peerAuthentication('b-ports', 'ns', { selector: { matchLabels: { app: 'b' } }, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { 9090: { mode: 'STRICT' } } }),
  ]);
  const a = w.workload('a');
  assert.equal(w.set.check(conn({ port: 8080 }), a).allowed, true, 'the PERMISSIVE port');
  assert.equal(w.set.check(conn({ port: 9090 }), a).allowed, false, 'every other port is STRICT');
  assert.equal(w.set.check(conn({ id: FRIEND, port: 9090 }), a).allowed, true);
  const b = w.workload('b');
  assert.equal(w.set.check(conn({ port: 8080 }), b).allowed, true);
  assert.equal(w.set.check(conn({ port: 9090 }), b).allowed, false, 'the STRICT port');
  assert.equal(w.set.check(conn({ id: FRIEND, port: 9090 }), b).allowed, true);
});

test('model: AuthorizationPolicies as translated (selector ALLOW, namespace DENY, L7-only ALLOW, CUSTOM)', () => {
  const w = modelWorld([
    podObject('api', 'ns', '10.0.0.1', { app: 'api' }),
    podObject('web', 'ns', '10.0.0.2', { app: 'web' }),
    podObject('admin', 'ns', '10.0.0.3', { app: 'admin' }),
    podObject('ext', 'ns', '10.0.0.4', { app: 'ext' }),
    podObject('elsewhere', 'other', '10.0.1.1', { app: 'api' }),
    authorizationPolicy('api-allow', 'ns', {
      selector: { matchLabels: { app: 'api' } },
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/ns/sa/friend'] } }, { source: { ipBlocks: ['192.168.0.0/16'] } }], to: [{ operation: { ports: ['8080'] } }] }],
    }),
    authorizationPolicy('no-legacy', 'ns', { action: 'DENY', rules: [{ from: [{ source: { notNamespaces: ['ns', 'other'] } }] }] }),
    authorizationPolicy('admin-l7', 'ns', { selector: { matchLabels: { app: 'admin' } }, rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }),
    authorizationPolicy('ext-authz', 'ns', { selector: { matchLabels: { app: 'ext' } }, action: 'CUSTOM', provider: { name: 'opa' }, rules: [{}] }),
  ]);
  const api = w.workload('api');
  assert.equal(w.set.check(conn({ id: FRIEND, port: 8080 }), api).allowed, true);
  assert.equal(w.set.check(conn({ id: FRIEND, port: 9090 }), api).allowed, false, 'wrong port');
  assert.equal(w.set.check(conn({ id: 'cluster.local/ns/ns/sa/other', port: 8080 }), api).allowed, false, 'wrong principal');
  assert.equal(w.set.check(conn({ id: 'cluster.local/ns/ns/sa/other', src: '192.168.3.4', port: 8080 }), api).allowed, true, 'the ipBlocks alternative');
  assert.equal(w.set.check(conn({ src: '192.168.3.4', port: 8080 }), api).policy, 'ns/no-legacy', 'plaintext: notNamespaces holds, the DENY wins');
  assert.equal(w.set.check(conn({ id: 'cluster.local/ns/legacy/sa/x', src: '192.168.3.4', port: 8080 }), api).policy, 'ns/no-legacy', 'the DENY wins');
  const web = w.workload('web');
  assert.equal(w.set.check(conn({ id: STRANGER }), web).allowed, true, 'no ALLOW for web; namespace other is not denied');
  assert.equal(w.set.check(conn({ id: 'cluster.local/ns/legacy/sa/x' }), web).allowed, false);
  // notNamespaces holds for plaintext: the DENY refuses it.
  assert.equal(w.set.check(conn({}), web).policy, 'ns/no-legacy');
  // An ALLOW made only of HTTP attributes has no rules for ztunnel: nothing gets in.
  assert.equal(w.set.check(conn({ id: FRIEND }), w.workload('admin')).allowed, false);
  // CUSTOM cannot be enforced by ztunnel: the control plane sends a DENY of everything.
  assert.equal(w.set.check(conn({ id: FRIEND }), w.workload('ext')).policy, 'ns/ext-authz');
  // The selector policy does not reach the other namespace's api pod.
  assert.equal(w.set.check(conn({ id: STRANGER, port: 9090 }), w.workload('elsewhere')).allowed, true);
});

// ---------------------------------------------------------------------------------------------
// Fail closed on malformed content

test('an unknown action denies every connection the policy reaches, and says so', () => {
  const set = new PolicySet();
  const problems = set.upsert(pol({ name: 'weird', action: 7 as Action, rules: [{ clauses: [{ matches: [{ principals: [{ exact: FRIEND }] }] }] }] }));
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /^ns\/weird: action 7 is not ALLOW or DENY/);
  for (const c of [conn({}), conn({ id: FRIEND }), conn({ id: STRANGER })]) {
    const d = set.check(c, wl());
    assert.equal(d.allowed, false);
    assert.equal(d.policy, 'ns/weird');
    assert.match(d.reason, /unsupported action 7/);
  }
  assert.equal(set.check(conn({}), wl('other')).allowed, true, 'only where it reaches');
  assert.deepEqual(set.problems('ns/weird'), problems);
  // UNRECOGNIZED (-1), as fromJSON gives it, too.
  assert.equal(new PolicySet([pol({ name: 'u', action: Action.UNRECOGNIZED, rules: [] })]).check(conn({ id: FRIEND }), wl()).allowed, false);
});

test('an unknown scope applies to the whole namespace of the policy', () => {
  const set = new PolicySet();
  const problems = set.upsert(pol({ name: 's', scope: 9 as Scope, action: Action.DENY, rules: [{ clauses: [] }] }));
  assert.match(problems.join('\n'), /scope 9/);
  assert.equal(set.check(conn({}), wl('ns')).allowed, false);
  assert.equal(set.check(conn({}), wl('other')).allowed, true);
});

test('a malformed value: its Match never matches in an ALLOW, always matches in a DENY', () => {
  const bad: [string, MatchSpec][] = [
    ['prefix length 33', { sourceIps: [{ address: ip('10.0.0.0'), length: 33 }] }],
    ['prefix length 129', { destinationIps: [{ address: ip('fd00::'), length: 129 }] }],
    ['5-byte address', { notSourceIps: [{ address: Buffer.from([10, 0, 0, 0, 0]), length: 8 }] }],
    ['empty address', { sourceIps: [{ address: Buffer.alloc(0), length: 0 }] }],
    ['port 65616', { destinationPorts: [65616] }],
    ['port 0', { notDestinationPorts: [0] }],
    ['no match type', { principals: [{}] }],
    ['two match types', { notNamespaces: [{ exact: 'a', prefix: 'b' }] }],
    ['empty exact', { principals: [{ exact: '' }] }],
    ['service account without name', { serviceAccounts: [{ namespace: 'ns', serviceAccount: '' }] }],
    ['extensions', { extensions: [{ name: 'future' }] }],
  ];
  // The malformed Match next to a valid one, with the valid one failing for the connection.
  const c = conn({ id: FRIEND, src: '10.0.0.9', port: 8080 });
  for (const [what, m] of bad) {
    const rules = [{ clauses: [{ matches: [m, { destinationPorts: [1] }] }, { matches: [{ destinationPorts: [8080] }] }] }];
    const allow = new PolicySet();
    assert.ok(allow.upsert(pol({ name: 'a', rules })).length > 0, `${what}: reported`);
    assert.equal(allow.check(c, wl()).allowed, false, `${what}: ALLOW admits nothing through it`);
    const deny = new PolicySet();
    assert.match(deny.upsert(pol({ name: 'd', action: Action.DENY, rules })).join('\n'), /matches every connection \(fail closed\)/, what);
    assert.equal(deny.check(c, wl()).allowed, false, `${what}: DENY refuses`);
    // The rest of the rule still has to hold: it is the Match that is decided, not the policy.
    assert.equal(deny.check(conn({ id: FRIEND, port: 9090 }), wl()).allowed, true, `${what}: other clauses still apply`);
  }
  // The same valid Match alone: the ALLOW admits via the valid alternative.
  const ok = new PolicySet([pol({ name: 'a', rules: [{ clauses: [{ matches: [bad[0]![1], { destinationPorts: [8080] }] }] }] })]);
  assert.equal(ok.check(c, wl()).allowed, true);
});

test('a port above 65535 is not truncated into another port (ztunnel would make 65616 port 80)', () => {
  const allow = new PolicySet([pol({ name: 'a', rules: [{ clauses: [{ matches: [{ destinationPorts: [65616] }] }] }] })]);
  assert.equal(allow.check(conn({ port: 80 }), wl()).allowed, false);
});

test('policy-level extensions: an ALLOW matches nothing, a DENY everything', () => {
  const allow = new PolicySet([pol({ name: 'a', extensions: [{ name: 'x' }], rules: [{ clauses: [] }] })]);
  assert.equal(allow.check(conn({ id: FRIEND }), wl()).allowed, false);
  const deny = new PolicySet([pol({ name: 'd', action: Action.DENY, extensions: [{ name: 'x' }], rules: [] })]);
  assert.equal(deny.check(conn({ id: FRIEND }), wl()).allowed, false);
});

test('a malformed connection description is refused', () => {
  const set = new PolicySet();
  const good = conn({});
  for (const c of [
    { ...good, srcIp: new Uint8Array(5) },
    { ...good, dstIp: new Uint8Array(0) },
    { ...good, dstPort: 65536 },
    { ...good, dstPort: -1 },
    { ...good, dstPort: 1.5 },
  ]) {
    const d = set.check(c, wl());
    assert.equal(d.allowed, false);
    assert.match(d.reason, /invalid connection description/);
  }
  assert.equal(set.check(good, wl()).allowed, true);
});

test('two oneof members on the wire (decode keeps both) is malformed, not "the last one wins" guessed', () => {
  // StringMatch{exact="x" (1), prefix="" (2)}: a prefix "" would match every identity.
  const stringMatch = Buffer.from([0x0a, 0x01, 0x78, 0x12, 0x00]);
  const match = Buffer.concat([Buffer.from([0x1a, stringMatch.length]), stringMatch]); // Match.principals (3)
  const clause = Buffer.concat([Buffer.from([0x12, match.length]), match]); // Clause.matches (2)
  const rule = Buffer.concat([Buffer.from([0x0a, clause.length]), clause]); // Rule.clauses (1)
  const head = Authorization.encode(pol({ name: 'a' })).finish();
  const wire = Buffer.concat([head, Buffer.from([0x2a, rule.length]), rule]); // Authorization.rules (5)
  const decoded = Authorization.decode(wire);
  const m = decoded.rules[0]!.clauses[0]!.matches[0]!.principals[0]!;
  assert.deepEqual([m.exact, m.prefix], ['x', '']);
  const set = new PolicySet();
  assert.match(set.upsert(decoded).join('\n'), /more than one match type/);
  assert.equal(set.check(conn({ id: FRIEND }), wl()).allowed, false);
});

test('policies decoded from the wire: Buffer addresses, all fields', () => {
  const written = pol({
    name: 'wire',
    rules: [{ clauses: [{ matches: [{ sourceIps: [cidr('2001:db8::/32')], destinationPorts: [443], namespaces: [{ suffix: '-prod' }] }] }] }],
  });
  const decoded = Authorization.decode(Authorization.encode(written).finish());
  const set = new PolicySet([decoded]);
  assert.equal(set.check(conn({ id: 'cluster.local/ns/shop-prod/sa/x', src: '2001:db8:5::1', port: 443 }), wl()).allowed, true);
  assert.equal(set.check(conn({ id: 'cluster.local/ns/shop-dev/sa/x', src: '2001:db8:5::1', port: 443 }), wl()).allowed, false);
  assert.equal(set.check(conn({ id: 'cluster.local/ns/shop-prod/sa/x', src: '2001:db9::1', port: 443 }), wl()).allowed, false);
});

// ---------------------------------------------------------------------------------------------
// Incremental updates and recheck

test('upsert replaces (also across scope and action), remove forgets, version counts changes', () => {
  const set = new PolicySet();
  const v0 = set.version;
  set.upsert(pol({ name: 'p', action: Action.DENY, rules: [{ clauses: [] }] }));
  assert.equal(set.size, 1);
  assert.ok(set.version > v0);
  assert.equal(set.check(conn({}), wl()).allowed, false);
  // Now a WORKLOAD_SELECTOR ALLOW: gone from the namespace index.
  set.upsert(pol({ name: 'p', scope: Scope.WORKLOAD_SELECTOR, rules: [] }));
  assert.equal(set.size, 1);
  assert.deepEqual(set.check(conn({}), wl()), { allowed: true, reason: 'no allow policies' });
  assert.equal(set.check(conn({}), wl('ns', ['ns/p'])).allowed, false);
  // Now GLOBAL DENY of port 22.
  set.upsert(pol({ name: 'p', scope: Scope.GLOBAL, action: Action.DENY, rules: [{ clauses: [{ matches: [{ destinationPorts: [22] }] }] }] }));
  assert.equal(set.check(conn({ port: 22 }), wl('elsewhere')).allowed, false);
  assert.equal(set.check(conn({ port: 23 }), wl('ns', ['ns/p'])).allowed, true);
  const v1 = set.version;
  assert.equal(set.remove('ns/p'), true);
  assert.equal(set.remove('ns/p'), false);
  assert.ok(set.version > v1);
  assert.equal(set.size, 0);
  assert.equal(set.check(conn({ port: 22 }), wl('elsewhere')).allowed, true);
  assert.equal(set.has('ns/p'), false);
});

test('replaceAll drops what is not in the new list', () => {
  const set = new PolicySet([pol({ name: 'a', action: Action.DENY, rules: [{ clauses: [] }] }), pol({ name: 'g', namespace: 'istio-system', scope: Scope.GLOBAL, action: Action.DENY, rules: [{ clauses: [] }] })]);
  set.replaceAll([pol({ name: 'b', rules: [{ clauses: [{ matches: [{ principals: [{ exact: FRIEND }] }] }] }] })]);
  assert.deepEqual([...set.keys()], ['ns/b']);
  assert.equal(set.check(conn({ id: FRIEND }), wl()).allowed, true);
  assert.equal(set.check(conn({ id: STRANGER }), wl()).allowed, false);
  assert.equal(set.check(conn({}), wl('other')).allowed, true, 'the old GLOBAL DENY is gone');
});

test('recheck returns exactly the open connections the new policies refuse', () => {
  const set = new PolicySet();
  const open = [
    { id: 1, conn: conn({ id: FRIEND, port: 8080 }), workload: wl('ns') },
    { id: 2, conn: conn({ id: STRANGER, port: 8080 }), workload: wl('ns') },
    { id: 3, conn: conn({ port: 8080 }), workload: wl('ns', ['ns/strict']) },
    { id: 4, conn: conn({ id: STRANGER, port: 8080 }), workload: wl('other') },
  ];
  assert.deepEqual(set.recheck(open), []);
  set.upsert(pol({ name: 'friends', rules: [{ clauses: [{ matches: [{ principals: [{ exact: FRIEND }] }] }] }] }));
  set.upsert(pol({ name: 'strict', scope: Scope.WORKLOAD_SELECTOR, action: Action.DENY, rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }] }] }] }] }));
  const denied = set.recheck(open);
  assert.deepEqual(denied.map((d) => d.connection.id), [2, 3]);
  assert.equal(denied[0]!.decision.reason, 'allow policies exist, but none allowed');
  assert.equal(denied[1]!.decision.policy, 'ns/strict');
  set.remove('ns/friends');
  assert.deepEqual(set.recheck(open).map((d) => d.connection.id), [3]);
  // Any iterable, e.g. a Set of tracked connections.
  assert.deepEqual(set.recheck(new Set(open)).map((d) => d.connection.id), [3]);
});

// ---------------------------------------------------------------------------------------------
// Dry run

test('dry run: never decides; the decision carries what it would have done', () => {
  const set = new PolicySet([
    pol({ name: 'dry-deny', action: Action.DENY, dryRun: true, rules: [{ clauses: [{ matches: [{ principals: [{ exact: STRANGER }] }] }] }] }),
  ]);
  const d = set.check(conn({ id: STRANGER }), wl());
  assert.equal(d.allowed, true);
  assert.deepEqual(d.dryRun, { allowed: false, policy: 'ns/dry-deny', reason: 'explicitly denied by: ns/dry-deny' });
  assert.deepEqual(set.check(conn({ id: FRIEND }), wl()), { allowed: true, reason: 'no allow policies', dryRun: { allowed: true, reason: 'no allow policies' } });
  // A dry-run ALLOW does not put the workload in ALLOW mode.
  set.upsert(pol({ name: 'dry-allow', dryRun: true, rules: [{ clauses: [{ matches: [{ principals: [{ exact: FRIEND }] }] }] }] }));
  const plain = set.check(conn({}), wl());
  assert.equal(plain.allowed, true);
  assert.deepEqual(plain.dryRun, { allowed: false, reason: 'allow policies exist, but none allowed' });
  assert.deepEqual(set.check(conn({ id: FRIEND }), wl()).dryRun, { allowed: true, policy: 'ns/dry-allow', reason: 'allowed by: ns/dry-allow' });
  // Elsewhere no dry-run policy applies: no dryRun field.
  assert.equal('dryRun' in set.check(conn({}), wl('other')), false);
  // Listed dry-run workload policies count too.
  const listed = new PolicySet([pol({ name: 'w', scope: Scope.WORKLOAD_SELECTOR, action: Action.DENY, dryRun: true, rules: [{ clauses: [] }] })]);
  assert.equal(listed.check(conn({}), wl('x', ['ns/w'])).dryRun?.allowed, false);
  assert.equal(listed.check(conn({}), wl('x', ['ns/w'])).allowed, true);
  listed.remove('ns/w');
  assert.equal(listed.check(conn({}), wl('x', ['ns/w'])).dryRun, undefined);
});

test('decisions are shared, frozen objects (a check allocates no decision)', () => {
  const set = new PolicySet([pol({ name: 'd', action: Action.DENY, rules: [{ clauses: [{ matches: [{ destinationPorts: [22] }] }] }] })]);
  const a = set.check(conn({ port: 22 }), wl());
  const b = set.check(conn({ port: 22, id: FRIEND }), wl());
  assert.equal(a, b);
  assert.ok(Object.isFrozen(a));
  assert.equal(set.check(conn({ port: 1 }), wl()), set.check(conn({ port: 2 }), wl()));
});
