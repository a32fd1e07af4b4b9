// AuthorizationPolicy translation: the semantics that matter for security, asserted directly (and,
// where it is the clearest statement, by evaluating the result as ztunnel's rbac.rs does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { viewFromObjects } from '../../mesh/config/kinds.js';
import { buildContext, type ModelContext } from '../../controlplane/model/context.js';
import { translatePolicy, waypointPolicies } from '../../controlplane/model/authorization.js';
import { workloadPolicies } from '../../controlplane/model/policy-selection.js';
import { DEFAULT_MODEL_OPTIONS } from '../../controlplane/model/types.js';
import { Action, Scope, type Address, type Authorization, type Match, type StringMatch } from '../../proto/gen/istio/security/authorization.js';
import type { AuthorizationPolicy, Gateway, Pod } from '../../mesh/k8s/types.js';

// ---------------------------------------------------------------------------------------------
// Fixtures

function ctxOf(objects: unknown[]): ModelContext {
  const { view, rejected } = viewFromObjects(objects);
  assert.deepEqual(rejected, []);
  return buildContext(view, DEFAULT_MODEL_OPTIONS);
}

function policy(name: string, spec: unknown, extra: { namespace?: string; annotations?: Record<string, string> } = {}): AuthorizationPolicy {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: extra.namespace ?? 'ns', ...(extra.annotations ? { annotations: extra.annotations } : {}) },
    spec,
  } as AuthorizationPolicy;
}

function pod(name: string, namespace: string, labels: Record<string, string>): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: { nodeName: 'n', containers: [{ name: 'c' }] },
    status: { phase: 'Running', podIP: '10.0.0.1' },
  };
}

function waypoint(name: string, namespace: string): Gateway {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  };
}

/** Without the undefined oneof members fromPartial fills in. */
function plain(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value));
}

/** Translates one policy alone in its view (plus any other objects). */
function translate(p: AuthorizationPolicy, others: unknown[] = []) {
  const ctx = ctxOf([p, ...others]);
  const own = ctx.view.authorizationPolicies.find((x) => x.metadata.name === p.metadata.name)!;
  return translatePolicy(own, ctx);
}

// ---------------------------------------------------------------------------------------------
// A ztunnel RBAC evaluator (src/rbac.rs matches, src/state.rs assert_rbac), for semantic checks.

interface Conn {
  src: string;
  dst: string;
  port: number;
  /** `<td>/ns/<ns>/sa/<sa>`; absent for plaintext. */
  identity?: string;
}

function inBlock(a: Address, ip: string): boolean {
  const bytes = ipToBytes(ip);
  if (bytes.length !== a.address.length) return false;
  for (let bit = 0; bit < a.length; bit++) {
    const mask = 0x80 >> bit % 8;
    if ((bytes[bit >> 3]! & mask) !== (a.address[bit >> 3]! & mask)) return false;
  }
  return true;
}

function ipToBytes(ip: string): number[] {
  assert.equal(isIP(ip), 4, 'the evaluator handles IPv4 only');
  return ip.split('.').map(Number);
}

function strMatch(m: StringMatch, v: string): boolean {
  if (m.exact !== undefined) return v === m.exact;
  if (m.prefix !== undefined) return v.startsWith(m.prefix);
  if (m.suffix !== undefined) return v.endsWith(m.suffix);
  if (m.presence !== undefined) return v !== '';
  return false;
}

function list<T>(pos: T[], neg: T[], pred: (t: T) => boolean): boolean {
  return (pos.length === 0 || pos.some(pred)) && (neg.length === 0 || !neg.some(pred));
}

function isEmptyMatch(m: Match): boolean {
  return [m.namespaces, m.notNamespaces, m.principals, m.notPrincipals, m.sourceIps, m.notSourceIps, m.destinationIps, m.notDestinationIps, m.destinationPorts, m.notDestinationPorts, m.serviceAccounts, m.notServiceAccounts].every((l) => l.length === 0);
}

function matches(a: Authorization, c: Conn): boolean {
  const id = c.identity ?? '';
  const parts = id.split('/');
  const ns = c.identity ? parts[2]! : '';
  const sa = c.identity ? parts[4]! : '';
  if (a.rules.length === 0) return false;
  return a.rules.some((rule) =>
    rule.clauses.every((clause) => {
      if (clause.matches.length === 0) return true;
      return clause.matches.some(
        (m) =>
          !isEmptyMatch(m) &&
          list(m.destinationIps, m.notDestinationIps, (b) => inBlock(b, c.dst)) &&
          list(m.sourceIps, m.notSourceIps, (b) => inBlock(b, c.src)) &&
          list(m.destinationPorts, m.notDestinationPorts, (p) => p === c.port) &&
          list(m.serviceAccounts, m.notServiceAccounts, (s) => c.identity !== undefined && s.namespace === ns && s.serviceAccount === sa) &&
          list(m.principals, m.notPrincipals, (p) => c.identity !== undefined && strMatch(p, id)) &&
          list(m.namespaces, m.notNamespaces, (p) => strMatch(p, ns)),
      );
    }),
  );
}

function allowed(policies: Authorization[], c: Conn): boolean {
  const enforced = policies.filter((p) => !p.dryRun);
  if (enforced.some((p) => p.action === Action.DENY && matches(p, c))) return false;
  const allows = enforced.filter((p) => p.action === Action.ALLOW);
  return allows.length === 0 || allows.some((p) => matches(p, c));
}

const FRIEND: Conn = { src: '10.1.0.5', dst: '10.0.0.1', port: 8080, identity: 'cluster.local/ns/ns/sa/friend' };
const STRANGER: Conn = { src: '10.2.0.5', dst: '10.0.0.1', port: 8080, identity: 'cluster.local/ns/other/sa/stranger' };
const PLAINTEXT: Conn = { src: '10.3.0.5', dst: '10.0.0.1', port: 8080 };

// ---------------------------------------------------------------------------------------------
// Scope and action

test('scope: selector is WORKLOAD_SELECTOR, none is NAMESPACE, none in the root namespace is GLOBAL', () => {
  assert.equal(translate(policy('a', { selector: { matchLabels: { app: 'x' } } })).authorization!.scope, Scope.WORKLOAD_SELECTOR);
  assert.equal(translate(policy('b', {})).authorization!.scope, Scope.NAMESPACE);
  assert.equal(translate(policy('c', {}, { namespace: 'istio-system' })).authorization!.scope, Scope.GLOBAL);
  assert.equal(translate(policy('d', { action: 'DENY' })).authorization!.action, Action.DENY);
  assert.equal(translate(policy('e', { action: 'ALLOW' })).authorization!.action, Action.ALLOW);
});

test('AUDIT is never sent to ztunnel and says so (it never denies, so nothing fails closed)', () => {
  const t = translate(policy('p', { action: 'AUDIT', selector: { matchLabels: { app: 'x' } }, rules: [{}] }));
  assert.equal(t.authorization, undefined);
  assert.deepEqual(t.status.enforcedBy, []);
  assert.equal(t.status.conditions[0]!.type, 'ZtunnelAccepted');
  assert.equal(t.status.conditions[0]!.status, 'False');
  assert.match(t.status.conditions[0]!.message, /ztunnel does not support the AUDIT action/);
  assert.deepEqual(t.problems.map((p) => p.severity), ['warning']);
  const ctx = ctxOf([pod('a', 'ns', { app: 'x' }), policy('p', { action: 'AUDIT', selector: { matchLabels: { app: 'x' } } })]);
  assert.deepEqual(workloadPolicies(ctx.view.pods[0]!, ctx), []);
});

test('a selector CUSTOM policy fails closed: ztunnel denies all traffic to what it selects, and the status says why', () => {
  for (const spec of [
    { action: 'CUSTOM', provider: { name: 'ext-authz' }, selector: { matchLabels: { app: 'x' } }, rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] },
    { action: 'CUSTOM', provider: { name: 'ext-authz' }, selector: { matchLabels: { app: 'x' } } },
    { action: 'CUSTOM', selector: { matchLabels: { app: 'x' } }, rules: [{}] },
  ]) {
    const t = translate(policy('p', spec));
    const a = t.authorization!;
    assert.equal(a.action, Action.DENY);
    assert.equal(a.scope, Scope.WORKLOAD_SELECTOR);
    assert.deepEqual(a.rules, [{ clauses: [] }]);
    for (const c of [FRIEND, STRANGER, PLAINTEXT]) assert.equal(allowed([a], c), false);
    assert.deepEqual(t.status.enforcedBy, ['ztunnel']);
    const c = t.status.conditions[0]!;
    assert.deepEqual([c.type, c.status, c.reason], ['ZtunnelAccepted', 'False', 'UnsupportedValue']);
    assert.match(c.message, /cannot call an external authorizer.*Ambit denies all traffic to workloads labelled app=x in namespace ns until you attach the policy to a waypoint with targetRefs/);
    assert.match(t.status.summary, /^ztunnel denies all traffic/);
    assert.ok(t.problems.some((p) => p.severity === 'error' && /external authorizer/.test(p.message)));
  }
  // Listed by the workloads it selects, and namespace-wide without a selector.
  const ctx = ctxOf([pod('a', 'ns', { app: 'x' }), pod('b', 'ns', { app: 'y' }), policy('c', { action: 'CUSTOM', provider: { name: 'e' }, selector: { matchLabels: { app: 'x' } } })]);
  assert.deepEqual(ctx.view.pods.map((p) => workloadPolicies(p, ctx)), [['ns/c'], []]);
  assert.equal(translate(policy('wide', { action: 'CUSTOM', provider: { name: 'e' } })).authorization!.scope, Scope.NAMESPACE);
});

test('an unknown action fails closed: a DENY that matches everything', () => {
  for (const action of ['REJECT', 'deny', 1, { a: 1 }]) {
    const t = translate(policy('p', { action, rules: [{ from: [{ source: { namespaces: ['x'] } }] }] }));
    assert.equal(t.authorization!.action, Action.DENY);
    assert.deepEqual(t.authorization!.rules, [{ clauses: [] }]);
    assert.equal(allowed([t.authorization!], FRIEND), false);
    assert.ok(t.problems.some((p) => p.severity === 'error' && p.message.startsWith('spec.action:')));
  }
});

// ---------------------------------------------------------------------------------------------
// Matches

test('principals: no spiffe:// (stripped with a warning when written), and the * forms', () => {
  const t = translate(policy('p', { rules: [{ from: [{ source: { principals: ['spiffe://cluster.local/ns/a/sa/b', 'x*', '*y', '*', 'exact'] } }] }] }));
  const m = t.authorization!.rules[0]!.clauses[0]!.matches[0]!;
  assert.deepEqual(plain(m.principals), [{ exact: 'cluster.local/ns/a/sa/b' }, { prefix: 'x' }, { suffix: 'y' }, { presence: {} }, { exact: 'exact' }]);
  assert.ok(t.problems.some((p) => p.severity === 'warning' && /spiffe:\/\//.test(p.message)));
});

test('a * anywhere but the ends is invalid, not a literal', () => {
  const t = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['a*b'] } }] }] }));
  assert.deepEqual(t.authorization!.rules, [{ clauses: [] }]);
  assert.ok(t.problems.some((p) => p.message.includes('spec.rules[0].from[0].source.namespaces[0]')));
});

test('service accounts: ns/sa as written, a bare name in the policy namespace', () => {
  const t = translate(policy('p', { rules: [{ from: [{ source: { serviceAccounts: ['web', 'ops/deploy'] } }] }] }));
  assert.deepEqual(t.authorization!.rules[0]!.clauses[0]!.matches[0]!.serviceAccounts, [
    { namespace: 'ns', serviceAccount: 'web' },
    { namespace: 'ops', serviceAccount: 'deploy' },
  ]);
});

test('ip blocks: CIDR, bare v4 is /32, bare v6 is /128; invalid ones are errors', () => {
  const t = translate(policy('p', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8', '1.2.3.4', '2001:db8::1', 'fd00::/8'] } }] }] }));
  const ips = t.authorization!.rules[0]!.clauses[0]!.matches[0]!.sourceIps.map((a) => [Buffer.from(a.address).toString('hex'), a.length]);
  assert.deepEqual(ips, [['0a000000', 8], ['01020304', 32], ['20010db8000000000000000000000001', 128], ['fd000000000000000000000000000000', 8]]);
  for (const bad of ['10.0.0.300/8', '10.0.0.0/33', 'fd00::/129', '10.0.0.0/-1', 'fe80::1%eth0', 'example.com', '']) {
    const d = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: [bad] } }] }] }));
    assert.deepEqual(d.authorization!.rules, [{ clauses: [] }], bad);
  }
});

test('ports are 1-65535 strings; anything else fails closed', () => {
  const ok = translate(policy('p', { rules: [{ to: [{ operation: { ports: ['1', '65535'], notPorts: ['080'] } }] }] }));
  const m = ok.authorization!.rules[0]!.clauses[0]!.matches[0]!;
  assert.deepEqual([m.destinationPorts, m.notDestinationPorts], [[1, 65535], [80]]);
  for (const bad of ['0', '65536', 'http', '8080-8081', 80, '']) {
    const allow = translate(policy('p', { rules: [{ to: [{ operation: { ports: [bad] } }] }, { from: [{ source: { namespaces: ['ns'] } }] }] }));
    assert.equal(allow.authorization!.rules.length, 1, `ALLOW keeps only the good rule (${String(bad)})`);
    const deny = translate(policy('p', { action: 'DENY', rules: [{ to: [{ operation: { notPorts: [bad] } }] }] }));
    assert.deepEqual(deny.authorization!.rules, [{ clauses: [] }], `DENY denies all (${String(bad)})`);
  }
});

test('rule structure: to clause, from clause, one clause per when; from entries OR in one clause', () => {
  const t = translate(
    policy('p', {
      rules: [
        {
          from: [{ source: { namespaces: ['a'] } }, { source: { namespaces: ['b'] } }],
          to: [{ operation: { ports: ['80'] } }],
          when: [
            { key: 'source.ip', values: ['10.0.0.0/8'] },
            { key: 'destination.port', notValues: ['81'] },
          ],
        },
      ],
    }),
  );
  const clauses = t.authorization!.rules[0]!.clauses;
  assert.equal(clauses.length, 4);
  assert.deepEqual(clauses[0]!.matches.map((m) => m.destinationPorts), [[80]]);
  assert.deepEqual(plain(clauses[1]!.matches.map((m) => m.namespaces)), [[{ exact: 'a' }], [{ exact: 'b' }]]);
  assert.equal(clauses[2]!.matches[0]!.sourceIps[0]!.length, 8);
  assert.deepEqual(clauses[3]!.matches[0]!.notDestinationPorts, [81]);
});

test('an empty rule matches everything; no rules matches nothing (ALLOW with no rules denies all)', () => {
  const all = translate(policy('p', { rules: [{}] })).authorization!;
  assert.deepEqual(all.rules, [{ clauses: [] }]);
  assert.equal(allowed([all], STRANGER), true);
  const none = translate(policy('p', {})).authorization!;
  assert.deepEqual(none.rules, []);
  assert.equal(allowed([none], FRIEND), false);
});

// ---------------------------------------------------------------------------------------------
// HTTP attributes (istio-ambient-spec.md §6.2)

test('an ALLOW that loses every rule to HTTP attributes denies all traffic, and says so', () => {
  const t = translate(policy('p', { selector: { matchLabels: { app: 'x' } }, rules: [{ to: [{ operation: { methods: ['GET'] } }] }, { when: [{ key: 'request.headers[x]', values: ['1'] }] }] }));
  assert.deepEqual(t.authorization!.rules, []);
  assert.equal(allowed([t.authorization!], FRIEND), false);
  assert.deepEqual(t.status.dropped, ['methods', 'when request.headers[x]']);
  const c = t.status.conditions[0]!;
  assert.equal(c.reason, 'UnsupportedValue');
  assert.match(c.message, /ztunnel does not support HTTP attributes \(found: methods, request\.headers\[x\]\)/);
  assert.match(c.message, /denies all traffic/);
});

test('an ALLOW keeps its L4-only rules and drops the rules with HTTP attributes', () => {
  const t = translate(policy('p', { rules: [{ from: [{ source: { namespaces: ['ns'] } }] }, { from: [{ source: { namespaces: ['other'] } }], to: [{ operation: { paths: ['/x'] } }] }] }));
  assert.equal(t.authorization!.rules.length, 1);
  assert.equal(allowed([t.authorization!], FRIEND), true);
  assert.equal(allowed([t.authorization!], STRANGER), false);
});

test('a DENY made only of HTTP attributes denies all traffic to what it selects (fail closed), and says so', () => {
  for (const rules of [
    [{ to: [{ operation: { methods: ['DELETE'] } }] }],
    [{ to: [{ operation: { paths: ['/admin'], notMethods: ['GET'] } }] }],
    [{ to: [{ operation: { hosts: ['a.example'] } }, { operation: { notHosts: ['b.example'] } }] }],
    [{ from: [{ source: { requestPrincipals: ['*'] } }] }],
    [{ from: [{ source: { notRequestPrincipals: ['*'] } }] }],
    [{ from: [{ source: { remoteIpBlocks: ['10.0.0.0/8'] } }] }],
    [{ from: [{ source: { notRemoteIpBlocks: ['10.0.0.0/8'] } }] }],
    [{ when: [{ key: 'request.auth.claims[iss]', values: ['x'] }] }],
    [{ when: [{ key: 'request.headers[x-user]', values: ['bob'] }] }],
    [{ when: [{ key: 'remote.ip', values: ['10.0.0.1'] }] }],
    [{ when: [{ key: 'connection.sni', values: ['a.example'] }] }],
    [{ when: [{ key: 'request.auth.principal', values: ['iss/sub'] }] }],
    [{ when: [{ key: 'request.auth.audiences', values: ['aud'] }] }],
    [{ from: [{ source: { namespaces: ['other'] } }] }, { to: [{ operation: { methods: ['DELETE'] } }] }],
  ]) {
    const t = translate(policy('p', { selector: { matchLabels: { app: 'x' } }, action: 'DENY', rules }));
    const what = JSON.stringify(rules);
    assert.ok(t.authorization!.rules.some((r) => r.clauses.length === 0), what);
    for (const c of [FRIEND, STRANGER, PLAINTEXT]) assert.equal(allowed([t.authorization!], c), false, what);
    const c = t.status.conditions[0]!;
    assert.deepEqual([c.status, c.reason], ['True', 'UnsupportedValue'], what);
    assert.match(c.message, /HTTP attributes removed: this DENY now denies all traffic to workloads labelled app=x in namespace ns \(more restrictive than requested\); attach it to a waypoint with targetRefs to enforce it as written\./, what);
    assert.match(t.status.summary, /^ztunnel denies all traffic to workloads labelled app=x in namespace ns/, what);
    assert.ok(t.status.dropped.length > 0, what);
    assert.ok(t.problems.some((p) => p.severity === 'warning' && /now denies all traffic/.test(p.message)), what);
  }
});

test('a DENY mixing L4 and HTTP attributes is enforced on the L4 part (denies more)', () => {
  const t = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'], requestPrincipals: ['*'] } }], to: [{ operation: { ports: ['8080'], methods: ['POST'] } }] }] }));
  assert.equal(allowed([t.authorization!], STRANGER), false);
  assert.equal(allowed([t.authorization!], FRIEND), true);
  assert.match(t.status.conditions[0]!.message, /spec\.rules\[0\] is enforced on its L4 conditions alone, which denies more than requested/);
});

test('an HTTP-only `when` next to an L4 `from`: the condition is removed, the rule still requires its L4 clause', () => {
  const t = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'] } }], when: [{ key: 'request.headers[x-debug]', values: ['1'] }, { key: 'destination.port', values: ['8080'] }] }] }));
  assert.equal(t.authorization!.rules[0]!.clauses.length, 2);
  assert.equal(allowed([t.authorization!], STRANGER), false);
  assert.equal(allowed([t.authorization!], { ...STRANGER, port: 9090 }), true);
  assert.equal(allowed([t.authorization!], FRIEND), true);
  assert.deepEqual(t.status.dropped, ['when request.headers[x-debug]']);
});

test('a DENY `from` alternative holding only HTTP attributes removes the whole `from` clause (it could match anyone), never just the alternative', () => {
  const t = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'] } }, { source: { remoteIpBlocks: ['10.1.0.0/16'] } }], to: [{ operation: { ports: ['8080'] } }] }] }));
  // The to clause stays: port 8080 from anyone is denied, other ports are not.
  assert.deepEqual(t.authorization!.rules[0]!.clauses.map((c) => c.matches.map((m) => m.destinationPorts)), [[[8080]]]);
  for (const c of [FRIEND, STRANGER, PLAINTEXT]) assert.equal(allowed([t.authorization!], c), false);
  assert.equal(allowed([t.authorization!], { ...FRIEND, port: 9090 }), true);
  assert.doesNotMatch(t.status.conditions[0]!.message, /less/);
});

test('a trust-domain suffix DENY cannot be a principal pattern: it denies all traffic to what it selects', () => {
  const t = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { trustDomains: ['*.evil.example'] } }] }] }));
  assert.deepEqual(t.authorization!.rules, [{ clauses: [] }]);
  for (const c of [FRIEND, STRANGER, PLAINTEXT]) assert.equal(allowed([t.authorization!], c), false);
  assert.deepEqual(t.status.dropped, ['trustDomains']);
  assert.match(t.status.conditions[0]!.message, /trustDomains removed: this DENY now denies all traffic to every workload in namespace ns \(more restrictive than requested\)\./);
});

test('trustDomains: exact and prefix become principal patterns; a suffix is dropped from an ALLOW', () => {
  const t = translate(policy('p', { rules: [{ from: [{ source: { trustDomains: ['cluster.local'], notTrustDomains: ['evil*'] } }] }] }));
  const m = t.authorization!.rules[0]!.clauses[0]!.matches[0]!;
  assert.deepEqual(plain(m.principals), [{ prefix: 'cluster.local/' }]);
  assert.deepEqual(plain(m.notPrincipals), [{ prefix: 'evil' }]);
  assert.equal(allowed([t.authorization!], FRIEND), true);
  assert.equal(allowed([t.authorization!], PLAINTEXT), false);
  const suffix = translate(policy('p', { rules: [{ from: [{ source: { trustDomains: ['*.local'] } }] }] }));
  assert.deepEqual(suffix.authorization!.rules, []);
  assert.deepEqual(suffix.status.dropped, ['trustDomains']);
});

// ---------------------------------------------------------------------------------------------
// Invalid input fails closed

test('an invalid rule in a DENY makes it deny everything it selects; in an ALLOW the rule is left out', () => {
  const broken = [
    'not a rule',
    { from: { source: {} } },
    { from: [{ source: { ipBlocks: ['10.0.0.300/8'] } }] },
    { from: [{ source: { principals: 'a' } }] },
    { from: [{ source: { principals: [1] } }] },
    { from: [{ source: {} }] },
    { from: [{}] },
    { from: [{ source: { unknownField: ['x'] } }] },
    { when: [{ key: 'no.such.key', values: ['x'] }] },
    { when: [{ key: 'source.ip' }] },
    { bogus: [] },
  ];
  for (const rule of broken) {
    const deny = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['x'] } }] }, rule] }));
    assert.deepEqual(deny.authorization!.rules, [{ clauses: [] }], JSON.stringify(rule));
    assert.equal(deny.status.conditions[0]!.status, 'False');
    assert.ok(deny.problems.some((p) => p.severity === 'error' && p.message.startsWith('spec.rules[1]')), JSON.stringify(deny.problems));
    const allow = translate(policy('p', { rules: [{ from: [{ source: { namespaces: ['ns'] } }] }, rule] }));
    assert.equal(allow.authorization!.rules.length, 1, JSON.stringify(rule));
    assert.equal(allowed([allow.authorization!], FRIEND), true);
  }
});

test('unreadable rules: a DENY denies all, an ALLOW allows nothing', () => {
  assert.deepEqual(translate(policy('p', { action: 'DENY', rules: { a: 1 } })).authorization!.rules, [{ clauses: [] }]);
  assert.deepEqual(translate(policy('p', { action: 'ALLOW', rules: 'all' })).authorization!.rules, []);
});

test('problems name the policy and the field path', () => {
  const t = translate(policy('p', { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['10.0.0.1', '10.0.0.300/8'] } }] }] }));
  const p = t.problems.find((x) => x.severity === 'error')!;
  assert.deepEqual(p.object, { kind: 'AuthorizationPolicy', namespace: 'ns', name: 'p' });
  assert.match(p.message, /^spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[1\]: "10\.0\.0\.300\/8" is not an IP address or CIDR/);
});

test('translation never throws, whatever the object holds', () => {
  const junk: unknown[] = [null, 0, 'x', [], {}, [null], [[]], { a: null }, true, -1, NaN, [{}], [{ from: null }], [{ from: [null] }], [{ when: [{ key: 5 }] }]];
  const fields = ['selector', 'action', 'rules', 'targetRef', 'targetRefs', 'provider'];
  let n = 0;
  for (const field of fields) {
    for (const value of junk) {
      const t = translate(policy(`p${n++}`, { [field]: value, rules: field === 'rules' ? value : [{ from: [{ source: { namespaces: ['x'] } }] }] }));
      assert.ok(t.status.conditions.length > 0);
    }
  }
  for (const spec of junk) translate(policy(`s${n++}`, spec));
});

test('a broken selector selects every pod of the namespace; an empty one too', () => {
  const ctx = ctxOf([
    pod('a', 'ns', { app: 'a' }),
    pod('b', 'ns', { app: 'b' }),
    policy('bad', { selector: { matchLabels: { app: 5 } }, action: 'DENY', rules: [{}] }),
    policy('expr', { selector: { matchExpressions: [] }, rules: [{}] }),
    policy('empty', { selector: {}, rules: [{}] }),
    policy('string', { selector: 'app=a', rules: [{}] }),
  ]);
  for (const p of ctx.view.pods) assert.deepEqual(workloadPolicies(p, ctx), ['ns/bad', 'ns/empty', 'ns/expr', 'ns/string']);
});

// ---------------------------------------------------------------------------------------------
// Selection

test('workloadPolicies: own namespace and root namespace selectors only, sorted; no namespace-wide, targetRefs or AUDIT', () => {
  const ctx = ctxOf([
    pod('web', 'ns', { app: 'web', tier: 'front' }),
    pod('web', 'other', { app: 'web' }),
    policy('z-web', { selector: { matchLabels: { app: 'web' } } }),
    policy('a-front', { selector: { matchLabels: { app: 'web', tier: 'front' } }, action: 'DENY' }),
    policy('ns-wide', {}),
    policy('audit', { selector: { matchLabels: { app: 'web' } }, action: 'AUDIT' }),
    policy('targeted', { selector: { matchLabels: { app: 'web' } }, targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'w' }] }),
    policy('root-web', { selector: { matchLabels: { app: 'web' } } }, { namespace: 'istio-system' }),
    policy('root-wide', {}, { namespace: 'istio-system' }),
    policy('other-db', { selector: { matchLabels: { app: 'db' } } }, { namespace: 'other' }),
  ]);
  const [inNs, inOther] = [ctx.view.pods.find((p) => p.metadata.namespace === 'ns')!, ctx.view.pods.find((p) => p.metadata.namespace === 'other')!];
  assert.deepEqual(workloadPolicies(inNs, ctx), ['istio-system/root-web', 'ns/a-front', 'ns/z-web']);
  assert.deepEqual(workloadPolicies(inOther, ctx), ['istio-system/root-web']);
  // Every listed name exists as a ztunnel resource.
  for (const name of workloadPolicies(inNs, ctx)) {
    const p = ctx.view.authorizationPolicies.find((x) => `${x.metadata.namespace}/${x.metadata.name}` === name)!;
    assert.equal(translatePolicy(p, ctx).authorization!.scope, Scope.WORKLOAD_SELECTOR);
  }
});

test('workloadPolicies is fast: 10,000 pods and 500 policies', () => {
  const objects: unknown[] = [];
  for (let i = 0; i < 10_000; i++) objects.push(pod(`p${i}`, `ns${i % 50}`, { app: `app${i % 200}`, version: `v${i % 3}`, 'pod-template-hash': `h${i}` }));
  for (let i = 0; i < 500; i++) {
    const ns = i % 25 === 0 ? 'istio-system' : `ns${i % 50}`;
    const selector = i % 10 === 0 ? undefined : { matchLabels: { app: `app${i % 200}`, ...(i % 2 ? { version: 'v1' } : {}) } };
    objects.push(policy(`pol${i}`, { ...(selector ? { selector } : {}), action: i % 3 ? 'ALLOW' : 'DENY', rules: [{ from: [{ source: { namespaces: ['a', 'b'], principals: ['*/sa/x'] } }], to: [{ operation: { ports: ['80'] } }] }] }, { namespace: ns }));
  }
  const ctx = ctxOf(objects);
  const start = performance.now();
  let listed = 0;
  for (const p of ctx.view.pods) listed += workloadPolicies(p, ctx).length;
  for (const p of ctx.view.authorizationPolicies) translatePolicy(p, ctx);
  const ms = performance.now() - start;
  assert.ok(listed > 0);
  assert.ok(ms < 500, `took ${ms.toFixed(0)} ms`);
});

// ---------------------------------------------------------------------------------------------
// Waypoint policies

test('targetRefs policies are waypoint policies: never sent to ztunnel, L7 kept, services set', () => {
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'api', namespace: 'ns', labels: { 'istio.io/use-waypoint': 'wp' } },
    spec: { selector: { app: 'api' }, clusterIP: '10.96.0.9', ports: [{ port: 80 }] },
  };
  const byGateway = policy('gw', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }], action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] });
  const byService = policy('svc', { targetRefs: [{ kind: 'Service', group: '', name: 'api' }], rules: [{ to: [{ operation: { paths: ['/x'] } }] }] });
  const broken = policy('broken', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }], action: 'DENY', rules: [{ to: [{ operation: { ports: ['x'] } }] }] });
  const missing = policy('missing', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'nope' }] });
  const ctx = ctxOf([waypoint('wp', 'ns'), svc, byGateway, byService, broken, missing]);
  const gw = ctx.gateways.get('ns/wp')!;
  const get = (name: string) => translatePolicy(ctx.view.authorizationPolicies.find((p) => p.metadata.name === name)!, ctx);
  assert.equal(get('gw').authorization, undefined);
  assert.deepEqual(get('gw').status.enforcedBy, ['waypoint ns/wp']);
  // A Gateway that does not exist: what it meant is unknown, so every waypoint of the namespace
  // gets the policy as invalid (fail closed), never ztunnel.
  assert.equal(get('missing').authorization, undefined);
  assert.deepEqual(get('missing').status.enforcedBy, ['waypoint ns/wp']);
  assert.equal(get('missing').status.conditions[0]!.reason, 'TargetNotFound');
  assert.match(get('missing').status.conditions[0]!.message, /every waypoint of namespace ns \(ns\/wp\) denies every request/);
  const { policies } = waypointPolicies(gw, ['api.ns.svc.cluster.local'], ctx);
  assert.deepEqual(policies.map((p) => [p.name, p.action, p.services, p.invalidReason !== '']), [
    ['broken', 'DENY', [], true],
    ['gw', 'DENY', [], false],
    ['missing', 'DENY', [], true],
    ['svc', 'ALLOW', ['api.ns.svc.cluster.local'], false],
  ]);
  assert.deepEqual(policies[1]!.rules[0]!.to[0]!.methods, ['DELETE']);
  // A waypoint that does not serve the service does not get its policy.
  assert.deepEqual(waypointPolicies(gw, [], ctx).policies.map((p) => p.name), ['broken', 'gw', 'missing']);
});

// ---------------------------------------------------------------------------------------------
// targetRefs that no waypoint can enforce: fail closed (istiod enforces them nowhere)

function service(name: string, namespace: string, labels: Record<string, string> = {}, selector: Record<string, string> | null = { app: name }): unknown {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace, labels }, spec: { ...(selector ? { selector } : {}), clusterIP: '10.96.0.9', ports: [{ port: 80 }] } };
}

function gatewayOf(name: string, namespace: string, labels: Record<string, string> = {}): Gateway {
  const g = waypoint(name, namespace);
  return { ...g, metadata: { ...g.metadata, labels } };
}

const toService = (name: string) => ({ targetRefs: [{ kind: 'Service', group: '', name }] });

test('a targetRefs policy on a Service without a waypoint is enforced at ztunnel on the pods the service selects', () => {
  const objects = [pod('api-1', 'ns', { app: 'api' }), pod('web-1', 'ns', { app: 'web' }), pod('api-x', 'other', { app: 'api' }), service('api', 'ns')];
  // ALLOW: the L4 rule kept, the HTTP rule dropped (as a selector policy would be).
  const allow = translate(policy('allow', { ...toService('api'), rules: [{ from: [{ source: { namespaces: ['ns'] } }] }, { to: [{ operation: { methods: ['GET'] } }] }] }), objects);
  const a = allow.authorization!;
  assert.deepEqual([a.namespace, a.name, a.scope, a.action, a.rules.length], ['ns', 'allow', Scope.WORKLOAD_SELECTOR, Action.ALLOW, 1]);
  assert.equal(allowed([a], FRIEND), true);
  assert.equal(allowed([a], STRANGER), false);
  assert.deepEqual(allow.status.enforcedBy, ['ztunnel']);
  assert.deepEqual(allow.status.dropped, ['methods']);
  const [wp, zt] = allow.status.conditions;
  assert.deepEqual([wp!.type, wp!.status, wp!.reason], ['WaypointAccepted', 'False', 'AncestorNotBound']);
  assert.match(wp!.message, /Service ns\/api is not bound to a waypoint: label the service \(or namespace ns\) istio\.io\/use-waypoint=<waypoint name>/);
  assert.deepEqual([zt!.type, zt!.status, zt!.reason], ['ZtunnelAccepted', 'True', 'UnsupportedValue']);
  assert.match(zt!.message, /enforces this policy at ztunnel on the workloads of Service ns\/api \(pods labelled app=api\) as a fallback/);
  assert.match(allow.status.summary, /^fallback at ztunnel: ztunnel ALLOW with 1 of 2 rules/);
  assert.ok(allow.problems.some((p) => p.severity === 'error' && /not bound to a waypoint.*enforces the policy at ztunnel/.test(p.message)));
  // DENY made of HTTP attributes: denies all traffic to the service's pods.
  const deny = translate(policy('deny', { ...toService('api'), action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] }), objects);
  assert.deepEqual(deny.authorization!.rules, [{ clauses: [] }]);
  assert.equal(allowed([deny.authorization!], FRIEND), false);
  assert.match(deny.status.conditions[1]!.message, /this DENY now denies all traffic to the workloads of Service ns\/api .*bind Service ns\/api to a waypoint/);
  // CUSTOM: a DENY of everything, ZtunnelAccepted False.
  const custom = translate(policy('custom', { ...toService('api'), action: 'CUSTOM', provider: { name: 'ext' } }), objects);
  assert.deepEqual(custom.authorization!.rules, [{ clauses: [] }]);
  assert.deepEqual([custom.status.conditions[1]!.status, custom.status.conditions[1]!.reason], ['False', 'UnsupportedValue']);
  // AUDIT: nothing to deny; warnings only.
  const audit = translate(policy('audit', { ...toService('api'), action: 'AUDIT' }), objects);
  assert.equal(audit.authorization, undefined);
  assert.deepEqual(audit.status.enforcedBy, []);
  assert.ok(audit.problems.every((p) => p.severity === 'warning'));
  // Listed by the pods the service selects, in its namespace only; never by AUDIT.
  const ctx = ctxOf([...objects, policy('allow', toService('api')), policy('audit', { ...toService('api'), action: 'AUDIT' }), policy('custom', { ...toService('api'), action: 'CUSTOM', provider: { name: 'e' } })]);
  const listed = Object.fromEntries(ctx.view.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, workloadPolicies(p, ctx)]));
  assert.deepEqual(listed, { 'ns/api-1': ['ns/allow', 'ns/custom'], 'ns/web-1': [], 'other/api-x': [] });
});

test('a Service whose waypoint is missing or refuses it falls back to ztunnel too; one with a working waypoint does not', () => {
  const objects = [
    pod('api-1', 'ns', { app: 'api' }),
    pod('ghost-1', 'ns', { app: 'ghost' }),
    pod('refused-1', 'ns', { app: 'refused' }),
    pod('ok-1', 'ns', { app: 'ok' }),
    gatewayOf('wp', 'ns'),
    gatewayOf('wl', 'ns', { 'istio.io/waypoint-for': 'workload' }),
    service('ghost', 'ns', { 'istio.io/use-waypoint': 'nope' }),
    service('refused', 'ns', { 'istio.io/use-waypoint': 'wl' }),
    service('ok', 'ns', { 'istio.io/use-waypoint': 'wp' }),
    policy('p', { targetRefs: ['ghost', 'refused', 'ok'].map((name) => ({ kind: 'Service', group: '', name })), action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'] } }] }] }),
  ];
  const ctx = ctxOf(objects);
  const t = translatePolicy(ctx.view.authorizationPolicies[0]!, ctx);
  assert.deepEqual(t.status.enforcedBy, ['waypoint ns/wp', 'ztunnel']);
  assert.equal(t.authorization!.scope, Scope.WORKLOAD_SELECTOR);
  assert.equal(allowed([t.authorization!], STRANGER), false);
  assert.equal(allowed([t.authorization!], FRIEND), true);
  const listed = Object.fromEntries(ctx.view.pods.map((p) => [p.metadata.name, workloadPolicies(p, ctx)]));
  assert.deepEqual(listed, { 'api-1': [], 'ghost-1': ['ns/p'], 'refused-1': ['ns/p'], 'ok-1': [] });
  const wp = t.status.conditions.find((c) => c.type === 'WaypointAccepted')!;
  assert.deepEqual([wp.status, wp.reason], ['True', 'PartiallyInvalid']);
  assert.match(wp.message, /bound to waypoint ns\/nope, which does not exist/);
  assert.match(wp.message, /bound to waypoint ns\/wl, which has istio\.io\/waypoint-for=workload and does not take service traffic/);
  assert.deepEqual(waypointPolicies(ctx.gateways.get('ns/wp')!, ['ok.ns.svc.cluster.local'], ctx).policies.map((p) => [p.name, p.services]), [['p', ['ok.ns.svc.cluster.local']]]);
});

test('a selector-less Service without a waypoint: its fallback policy is listed by the pods its EndpointSlices name', () => {
  const slice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'ext-1', namespace: 'ns', labels: { 'kubernetes.io/service-name': 'ext' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['10.0.0.1'], targetRef: { kind: 'Pod', name: 'a', namespace: 'ns' } }],
    ports: [{ port: 80 }],
  };
  const ctx = ctxOf([pod('a', 'ns', { app: 'a' }), pod('b', 'ns', { app: 'b' }), service('ext', 'ns', {}, null), slice, policy('p', toService('ext'))]);
  assert.deepEqual(ctx.view.pods.map((p) => workloadPolicies(p, ctx)), [['ns/p'], []]);
  assert.match(translatePolicy(ctx.view.authorizationPolicies[0]!, ctx).status.conditions[1]!.message, /pods its EndpointSlices name/);
});

test('a target that does not exist: a missing Service protects nothing, the resolvable targets still apply', () => {
  const ctx = ctxOf([gatewayOf('wp', 'ns'), service('api', 'ns', { 'istio.io/use-waypoint': 'wp' }), policy('p', { targetRefs: [{ kind: 'Service', group: '', name: 'gone' }, { kind: 'Service', group: '', name: 'api' }], action: 'DENY', rules: [{}] }), policy('q', toService('gone'))]);
  const [p, q] = ctx.view.authorizationPolicies.map((x) => translatePolicy(x, ctx));
  assert.deepEqual(p!.status.enforcedBy, ['waypoint ns/wp']);
  assert.equal(p!.authorization, undefined);
  assert.deepEqual(q!.status.enforcedBy, []);
  assert.equal(q!.authorization, undefined);
  assert.match(q!.status.summary, /not enforced anywhere: Service ns\/gone was not found/);
  assert.deepEqual(waypointPolicies(ctx.gateways.get('ns/wp')!, ['api.ns.svc.cluster.local'], ctx).policies.map((x) => [x.name, x.services]), [['p', ['api.ns.svc.cluster.local']]]);
});

test('unresolvable targets (missing Gateway, malformed, wrong kind, ServiceEntry, other namespace) fail closed at every waypoint of the namespace', () => {
  const refs: unknown[] = [
    { kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'nope' },
    { kind: 'Gateway', group: 'gateway.networking.k8s.io' },
    { kind: 'Deployment', group: 'apps', name: 'api' },
    { kind: 'ServiceEntry', group: 'networking.istio.io', name: 'ext' },
    { kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp', namespace: 'elsewhere' },
    'not a reference',
  ];
  for (const ref of refs) {
    for (const action of ['ALLOW', 'DENY', 'CUSTOM']) {
      const ctx = ctxOf([gatewayOf('wp', 'ns'), gatewayOf('wp2', 'ns'), gatewayOf('far', 'other'), policy('p', { targetRefs: [ref], action, provider: { name: 'e' }, rules: [{}] })]);
      const what = `${action} ${JSON.stringify(ref)}`;
      const t = translatePolicy(ctx.view.authorizationPolicies[0]!, ctx);
      assert.equal(t.authorization, undefined, what);
      assert.deepEqual(t.status.enforcedBy, ['waypoint ns/wp', 'waypoint ns/wp2'], what);
      assert.match(t.status.summary, /denies every request at waypoint ns\/wp, ns\/wp2 \(fail closed/, what);
      assert.ok(t.problems.some((p) => p.severity === 'error' && /every waypoint of namespace ns/.test(p.message)), what);
      for (const name of ['ns/wp', 'ns/wp2']) {
        const [l7] = waypointPolicies(ctx.gateways.get(name)!, [], ctx).policies;
        assert.deepEqual([l7!.name, l7!.action, l7!.services, l7!.invalidReason !== ''], ['p', 'DENY', [], true], what);
      }
      assert.deepEqual(waypointPolicies(ctx.gateways.get('other/far')!, [], ctx).policies, [], what);
    }
  }
  // AUDIT never denies: nothing fails closed for it.
  const ctx = ctxOf([gatewayOf('wp', 'ns'), policy('p', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'nope' }], action: 'AUDIT' })]);
  assert.deepEqual(waypointPolicies(ctx.gateways.get('ns/wp')!, [], ctx).policies, []);
  // No waypoint in the namespace: nothing to fail closed at, and the status says so.
  const alone = translate(policy('p', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'nope' }], action: 'DENY' }));
  assert.deepEqual(alone.status.enforcedBy, []);
  assert.match(alone.status.conditions[0]!.message, /no waypoint exists in namespace ns to fail closed at/);
});

test('selector and targetRefs together: the selector is ignored (as Istio), and unresolvable targets still fail closed', () => {
  const ctx = ctxOf([
    pod('api-1', 'ns', { app: 'api' }),
    gatewayOf('wp', 'ns'),
    service('api', 'ns'),
    policy('p', { selector: { matchLabels: { app: 'api' } }, targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'nope' }, { kind: 'Service', group: '', name: 'api' }], action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'] } }] }] }),
  ]);
  const t = translatePolicy(ctx.view.authorizationPolicies[0]!, ctx);
  assert.deepEqual(t.status.enforcedBy, ['waypoint ns/wp', 'ztunnel']);
  assert.equal(t.authorization!.scope, Scope.WORKLOAD_SELECTOR);
  assert.ok(t.problems.some((p) => p.severity === 'warning' && /spec\.selector: ignored/.test(p.message)));
  assert.deepEqual(workloadPolicies(ctx.view.pods[0]!, ctx), ['ns/p']);
  assert.equal(waypointPolicies(ctx.gateways.get('ns/wp')!, [], ctx).policies[0]!.invalidReason !== '', true);
  // Only the selector, the targets all fine: never at ztunnel.
  const fine = ctxOf([pod('api-1', 'ns', { app: 'api' }), gatewayOf('wp', 'ns'), policy('q', { selector: { matchLabels: { app: 'api' } }, targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }] })]);
  assert.equal(translatePolicy(fine.view.authorizationPolicies[0]!, fine).authorization, undefined);
  assert.deepEqual(workloadPolicies(fine.view.pods[0]!, fine), []);
});

test('names reserved for converted PeerAuthentications are rejected: never sent to ztunnel, never listed', () => {
  const cases = [
    policy('istio_converted_static_strict', { action: 'ALLOW', selector: { matchLabels: { app: 'x' } } }, { namespace: 'istio-system' }),
    policy('converted_peer_authentication_db', { action: 'DENY', selector: { matchLabels: { app: 'x' } } }),
    policy('converted_peer_authentication_', { action: 'ALLOW' }, { namespace: 'other' }),
  ];
  const ctx = ctxOf([pod('a', 'ns', { app: 'x' }), ...cases]);
  for (const p of ctx.view.authorizationPolicies) {
    const t = translatePolicy(p, ctx);
    assert.equal(t.authorization, undefined, p.metadata.name);
    assert.deepEqual(t.status.enforcedBy, []);
    const c = t.status.conditions[0]!;
    assert.deepEqual([c.type, c.status, c.reason], ['ZtunnelAccepted', 'False', 'InvalidName']);
    assert.match(c.message, /reserved/);
    assert.deepEqual(t.problems.map((x) => [x.severity, x.object.name]), [['error', p.metadata.name]]);
  }
  assert.deepEqual(workloadPolicies(ctx.view.pods[0]!, ctx), []);
  // The same name outside the root namespace is an ordinary name.
  assert.ok(translate(policy('istio_converted_static_strict', {})).authorization);
  // A targetRefs policy of a reserved name still goes to its waypoints, but never to ztunnel.
  const t = translate(policy('converted_peer_authentication_x', toService('api')), [service('api', 'ns'), pod('api-1', 'ns', { app: 'api' })]);
  assert.equal(t.authorization, undefined);
  assert.deepEqual(t.status.conditions.map((c) => [c.type, c.reason]), [['WaypointAccepted', 'AncestorNotBound'], ['ZtunnelAccepted', 'InvalidName']]);
});

test('dry run: dry_run set for ztunnel and waypoints, with a note on the deviation from istiod', () => {
  const t = translate(policy('p', { action: 'DENY', rules: [{}] }, { annotations: { 'istio.io/dry-run': 'true' } }));
  assert.equal(t.authorization!.dryRun, true);
  assert.match(t.status.conditions[0]!.message, /AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY/);
  assert.equal(allowed([t.authorization!], FRIEND), true);
  const notBool = translate(policy('p', { action: 'DENY', rules: [{}] }, { annotations: { 'istio.io/dry-run': 'maybe' } }));
  assert.equal(notBool.authorization!.dryRun, false);
});
