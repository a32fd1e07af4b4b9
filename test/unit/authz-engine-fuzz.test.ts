// The L4 authorization engine against a plain reference evaluator written from
// istio-ambient-spec.md §6.3 (ztunnel's rbac.rs and assert_rbac), over seeded random policies,
// workloads and connections, with incremental upserts and removals between rounds.
// AMBIT_FUZZ_SEED=<n> replays a run; a failure message names its seed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicySet, type AuthzConnection, type AuthzDecision, type AuthzWorkload } from '../../mesh/authz/index.js';
import { ipBytes } from '../../mesh/ip-text.js';
import { Action, Authorization, Scope, type Address, type Match, type StringMatch } from '../../proto/gen/istio/security/authorization.js';
import { rng } from '../support/synthetic.js';

// ---------------------------------------------------------------------------------------------
// Random

class Rand {
  constructor(readonly next: () => number) {}
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  some<T>(max: number, make: () => T): T[] {
    return Array.from({ length: this.int(max + 1) }, make);
  }
}

const NAMESPACES = ['a', 'b', 'c'];
const POLICY_NAMESPACES = ['a', 'b', 'istio-system'];
const ACCOUNTS = ['x', 'y'];
const TRUST_DOMAINS = ['cluster.local', 'td2'];
const IPV4 = ['10.0.0.1', '10.0.0.2', '10.0.1.7', '10.128.0.1', '192.168.1.1'];
const IPV6 = ['fd00::1', 'fd00::1:2', 'fd00:0:0:1::9', '2001:db8::5'];
const MAPPED = ['::ffff:10.0.0.1', '::ffff:192.168.1.1'];
const PORTS = [80, 443, 8080, 9090];
const STRING_VALUES = ['a', 'b', 'c', 'x', 'cluster.local/ns/a/', 'cluster.local', 'td2/ns/b/sa/y', 'cluster.local/ns/a/sa/x', '/sa/x', '/ns/b/sa/y', 'ns/a'];

interface Identity {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

interface World {
  policies: Map<string, Authorization>;
  workloads: AuthzWorkload[];
  conns: { c: AuthzConnection; src: string; dst: string }[];
}

function genString(r: Rand): StringMatch {
  const v = r.pick(STRING_VALUES);
  switch (r.int(4)) {
    case 0:
      return { exact: v };
    case 1:
      return { prefix: r.chance(0.1) ? '' : v.slice(0, 1 + r.int(v.length)) };
    case 2:
      return { suffix: v.slice(r.int(v.length)) };
    default:
      return { presence: {} };
  }
}

function genCidr(r: Rand): Address {
  const family = r.int(3);
  const text = family === 0 ? r.pick(IPV4) : family === 1 ? r.pick(IPV6) : r.pick(MAPPED);
  const address = ipBytes(text)!;
  const bits = address.length * 8;
  // Lengths near the edges and byte boundaries, and anywhere.
  const length = r.chance(0.5) ? r.pick([0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 96, 104, 112, 120, 127, 128].filter((l) => l <= bits)) : r.int(bits + 1);
  return { address, length };
}

function genMatch(r: Rand): Match {
  const list = <T>(make: () => T): T[] => (r.chance(0.22) ? r.some(2, make).concat([make()]) : []);
  const sa = (): { namespace: string; serviceAccount: string } => ({ namespace: r.pick(NAMESPACES), serviceAccount: r.pick(ACCOUNTS) });
  return {
    namespaces: list(() => genString(r)),
    notNamespaces: list(() => genString(r)),
    principals: list(() => genString(r)),
    notPrincipals: list(() => genString(r)),
    sourceIps: list(() => genCidr(r)),
    notSourceIps: list(() => genCidr(r)),
    destinationIps: list(() => genCidr(r)),
    notDestinationIps: list(() => genCidr(r)),
    destinationPorts: list(() => r.pick(PORTS)),
    notDestinationPorts: list(() => r.pick(PORTS)),
    serviceAccounts: list(sa),
    notServiceAccounts: list(sa),
    extensions: [],
  };
}

function genPolicy(r: Rand, name: string): Authorization {
  const namespace = r.pick(POLICY_NAMESPACES);
  return Authorization.fromPartial({
    name,
    namespace,
    scope: r.pick([Scope.GLOBAL, Scope.NAMESPACE, Scope.WORKLOAD_SELECTOR]),
    action: r.chance(0.5) ? Action.ALLOW : Action.DENY,
    dryRun: r.chance(0.1),
    rules: r.some(3, () => ({ clauses: r.some(3, () => ({ matches: r.some(3, () => genMatch(r)) })) })),
  });
}

function genConn(r: Rand): { c: AuthzConnection; src: string; dst: string } {
  const addr = (): string => {
    const f = r.int(5);
    return f < 2 ? r.pick(IPV4) : f < 4 ? r.pick(IPV6) : r.pick(MAPPED);
  };
  const src = addr();
  const dst = addr();
  const identity: Identity | undefined = r.chance(0.3) ? undefined : { trustDomain: r.pick(TRUST_DOMAINS), namespace: r.pick(NAMESPACES), serviceAccount: r.pick(ACCOUNTS) };
  return { c: { identity, srcIp: ipBytes(src)!, dstIp: ipBytes(dst)!, dstPort: r.pick(PORTS) }, src, dst };
}

function genWorld(r: Rand): World {
  const policies = new Map<string, Authorization>();
  const count = 1 + r.int(8);
  for (let i = 0; i < count; i++) {
    const p = genPolicy(r, `p${i}`);
    policies.set(`${p.namespace}/${p.name}`, p);
  }
  const keys = [...policies.keys()];
  const workloads = Array.from({ length: 4 }, () => ({
    namespace: r.pick(NAMESPACES),
    authorizationPolicies: keys.filter(() => r.chance(0.3)).concat(r.chance(0.1) ? ['a/never-sent'] : []),
  }));
  return { policies, workloads, conns: Array.from({ length: 12 }, () => genConn(r)) };
}

// ---------------------------------------------------------------------------------------------
// Reference: the spec's algorithm, written for clarity over speed.

/** The address as a bit string; IPv4-mapped IPv6 as IPv4 (ztunnel canonicalizes peers). */
function bitsOf(bytes: Uint8Array): string {
  let b = Array.from(bytes);
  if (b.length === 16 && b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) b = b.slice(12);
  return b.map((x) => x.toString(2).padStart(8, '0')).join('');
}

function inCidr(a: Address, ipText: string): boolean {
  let net = Array.from(a.address).map((x) => x.toString(2).padStart(8, '0')).join('');
  let length = a.length;
  // Ambit reads a mapped block of /96 or more as the IPv4 block it spells.
  if (net.length === 128 && net.startsWith(`${'0'.repeat(80)}${'1'.repeat(16)}`) && length >= 96) {
    net = net.slice(96);
    length -= 96;
  }
  const ip = bitsOf(ipBytes(ipText)!);
  return ip.length === net.length && ip.slice(0, length) === net.slice(0, length);
}

function strHits(m: StringMatch, v: string): boolean {
  if (m.exact !== undefined) return v === m.exact;
  if (m.prefix !== undefined) return v.startsWith(m.prefix);
  if (m.suffix !== undefined) return v.endsWith(m.suffix);
  return v !== '';
}

function listHolds<T>(pos: T[], neg: T[], hit: (t: T) => boolean): boolean {
  return (pos.length === 0 || pos.some(hit)) && (neg.length === 0 || !neg.some(hit));
}

function isEmpty(m: Match): boolean {
  return [m.namespaces, m.notNamespaces, m.principals, m.notPrincipals, m.sourceIps, m.notSourceIps, m.destinationIps, m.notDestinationIps, m.destinationPorts, m.notDestinationPorts, m.serviceAccounts, m.notServiceAccounts].every((l) => l.length === 0);
}

function refMatches(a: Authorization, x: { c: AuthzConnection; src: string; dst: string }): boolean {
  const id = x.c.identity;
  const principal = id ? `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}` : undefined;
  const m1 = (m: Match): boolean =>
    listHolds(m.destinationIps, m.notDestinationIps, (b) => inCidr(b, x.dst)) &&
    listHolds(m.sourceIps, m.notSourceIps, (b) => inCidr(b, x.src)) &&
    listHolds(m.destinationPorts, m.notDestinationPorts, (p) => p === x.c.dstPort) &&
    listHolds(m.serviceAccounts, m.notServiceAccounts, (s) => id !== undefined && s.namespace === id.namespace && s.serviceAccount === id.serviceAccount) &&
    listHolds(m.principals, m.notPrincipals, (s) => principal !== undefined && strHits(s, principal)) &&
    listHolds(m.namespaces, m.notNamespaces, (s) => id !== undefined && strHits(s, id.namespace));
  if (a.rules.length === 0) return false;
  return a.rules.some((rule) => rule.clauses.every((clause) => clause.matches.length === 0 || clause.matches.some((m) => !isEmpty(m) && m1(m))));
}

interface RefOutcome {
  allowed: boolean;
  /** Keys of the policies that could have decided (any matching DENY, or any matching ALLOW). */
  deciders: string[];
  kind: 'deny' | 'none-allowed' | 'no-allow' | 'allow';
}

function refDecide(policies: Map<string, Authorization>, w: AuthzWorkload, x: { c: AuthzConnection; src: string; dst: string }, dry: boolean): RefOutcome {
  const candidates: Authorization[] = [];
  for (const p of policies.values()) {
    if (p.scope === Scope.GLOBAL || (p.scope === Scope.NAMESPACE && p.namespace === w.namespace)) candidates.push(p);
  }
  for (const name of w.authorizationPolicies) {
    const p = policies.get(name);
    if (p) candidates.push(p);
  }
  const active = candidates.filter((p) => dry || !p.dryRun);
  const key = (p: Authorization): string => `${p.namespace}/${p.name}`;
  const deny = active.filter((p) => p.action === Action.DENY && refMatches(p, x));
  if (deny.length > 0) return { allowed: false, deciders: deny.map(key), kind: 'deny' };
  const allows = active.filter((p) => p.action === Action.ALLOW);
  if (allows.length === 0) return { allowed: true, deciders: [], kind: 'no-allow' };
  const hit = allows.filter((p) => refMatches(p, x));
  if (hit.length > 0) return { allowed: true, deciders: hit.map(key), kind: 'allow' };
  return { allowed: false, deciders: [], kind: 'none-allowed' };
}

function sameOutcome(d: AuthzDecision, ref: RefOutcome, where: string): void {
  assert.equal(d.allowed, ref.allowed, `${where}: allowed`);
  if (ref.kind === 'deny' || ref.kind === 'allow') {
    assert.ok(d.policy !== undefined && ref.deciders.includes(d.policy), `${where}: decided by ${String(d.policy)}, expected one of ${ref.deciders.join(', ')}`);
  } else {
    assert.equal(d.policy, undefined, `${where}: no deciding policy`);
    assert.equal(d.reason, ref.kind === 'no-allow' ? 'no allow policies' : 'allow policies exist, but none allowed', `${where}: reason`);
  }
}

function describe(x: { src: string; dst: string; c: AuthzConnection }, w: AuthzWorkload): string {
  const id = x.c.identity;
  return `${x.src} (${id ? `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}` : 'plaintext'}) -> ${x.dst}:${x.c.dstPort} workload ns=${w.namespace} lists [${w.authorizationPolicies.join(', ')}]`;
}

function compareAll(set: PolicySet, world: World, where: string): { checks: number; allowed: number } {
  let checks = 0;
  let allowed = 0;
  for (const w of world.workloads) {
    for (const x of world.conns) {
      const d = set.check(x.c, w);
      const at = `${where}: ${describe(x, w)}`;
      sameOutcome(d, refDecide(world.policies, w, x, false), at);
      const dryApplies = [...world.policies.values()].some((p) => p.dryRun && (p.scope === Scope.GLOBAL || (p.scope === Scope.NAMESPACE && p.namespace === w.namespace) || w.authorizationPolicies.includes(`${p.namespace}/${p.name}`)));
      if (dryApplies) {
        assert.ok(d.dryRun, `${at}: dry-run outcome expected`);
        sameOutcome(d.dryRun, refDecide(world.policies, w, x, true), `${at} (dry run)`);
      } else {
        assert.equal(d.dryRun, undefined, `${at}: no dry-run outcome expected`);
      }
      checks++;
      if (d.allowed) allowed++;
    }
  }
  return { checks, allowed };
}

// ---------------------------------------------------------------------------------------------

test('fuzz: the engine decides as the reference evaluator, through incremental updates', () => {
  const seed = Number(process.env.AMBIT_FUZZ_SEED ?? 20260807);
  const r = new Rand(rng(seed));
  let checks = 0;
  let allowed = 0;
  for (let round = 0; round < 160; round++) {
    const world = genWorld(r);
    const set = new PolicySet(world.policies.values());
    const where = `seed ${seed} round ${round}`;
    let t = compareAll(set, world, where);
    checks += t.checks;
    allowed += t.allowed;
    for (let step = 0; step < 4; step++) {
      const keys = [...world.policies.keys()];
      if (keys.length > 0 && r.chance(0.35)) {
        const key = r.pick(keys);
        world.policies.delete(key);
        assert.equal(set.remove(key), true);
      } else {
        // A new policy, or a new version of an existing one (possibly another scope or action).
        const name = r.chance(0.5) && keys.length > 0 ? r.pick(keys).split('/')[1]! : `q${round}-${step}`;
        const p = genPolicy(r, name);
        for (const k of keys) if (k.endsWith(`/${name}`) && k !== `${p.namespace}/${name}`) {
          world.policies.delete(k);
          set.remove(k);
        }
        world.policies.set(`${p.namespace}/${p.name}`, p);
        set.upsert(p);
      }
      assert.equal(set.size, world.policies.size, `${where} step ${step}: size`);
      t = compareAll(set, world, `${where} step ${step}`);
      checks += t.checks;
      allowed += t.allowed;
    }
  }
  // The generator must exercise both outcomes, or the comparison proves little.
  assert.ok(allowed > checks * 0.1 && allowed < checks * 0.9, `allowed ${allowed} of ${checks}`);
});

test('fuzz: recheck returns exactly the connections check refuses', () => {
  const seed = Number(process.env.AMBIT_FUZZ_SEED ?? 7);
  const r = new Rand(rng(seed));
  for (let round = 0; round < 50; round++) {
    const world = genWorld(r);
    const set = new PolicySet(world.policies.values());
    const open = world.workloads.flatMap((workload) => world.conns.map((x) => ({ conn: x.c, workload })));
    const expected = open.filter((o) => !set.check(o.conn, o.workload).allowed);
    const denied = set.recheck(open);
    assert.deepEqual(denied.map((d) => d.connection), expected, `seed ${seed} round ${round}`);
    for (const d of denied) assert.equal(d.decision.allowed, false);
  }
});
