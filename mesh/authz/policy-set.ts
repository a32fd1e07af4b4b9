// The Authorization resources a ztunnel holds, indexed the way ztunnel's PolicyStore indexes them
// (namespace scope by namespace, global scope in one list, workload scope only by key), and the
// per-connection decision of state.rs assert_rbac (istio-ambient-spec.md §6.3):
//   1. candidates: the workload namespace's policies, the global ones, the names the workload lists;
//   2. any matching DENY refuses;
//   3. no ALLOW among the candidates allows;
//   4. otherwise some ALLOW must match.
// Dry-run policies never decide; when some apply, the decision carries what they would have done.

import type { Authorization } from '../../proto/gen/istio/security/authorization.js';
import { compilePolicy, type CompiledPolicy } from './compile.js';
import { policyMatches, Subject } from './match.js';
import type { AuthzConnection, AuthzDecision, AuthzWorkload, PolicySetOptions, TrackedConnection } from './types.js';

const NO_ALLOW_POLICIES: AuthzDecision = Object.freeze({ allowed: true, reason: 'no allow policies' });
const NONE_ALLOWED: AuthzDecision = Object.freeze({ allowed: false, reason: 'allow policies exist, but none allowed' });
const INVALID_CONNECTION: AuthzDecision = Object.freeze({
  allowed: false,
  reason: 'invalid connection description (addresses must be 4 or 16 bytes, the port 0-65535); fail closed',
});

/** The policies of one index slot, each list ordered by key so the deciding policy is stable. */
class Bucket {
  readonly deny: CompiledPolicy[] = [];
  readonly allow: CompiledPolicy[] = [];
  readonly dryDeny: CompiledPolicy[] = [];
  readonly dryAllow: CompiledPolicy[] = [];

  private listOf(p: CompiledPolicy): CompiledPolicy[] {
    if (p.dryRun) return p.action === 'deny' ? this.dryDeny : this.dryAllow;
    return p.action === 'deny' ? this.deny : this.allow;
  }

  add(p: CompiledPolicy): void {
    const list = this.listOf(p);
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.key < p.key) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, p);
  }

  remove(p: CompiledPolicy): void {
    const list = this.listOf(p);
    const i = list.indexOf(p);
    if (i >= 0) list.splice(i, 1);
  }

  get empty(): boolean {
    return this.deny.length + this.allow.length + this.dryDeny.length + this.dryAllow.length === 0;
  }

  get hasDryRun(): boolean {
    return this.dryDeny.length + this.dryAllow.length > 0;
  }
}

const EMPTY_BUCKET = new Bucket();

function firstMatching(list: readonly CompiledPolicy[], s: Subject): CompiledPolicy | undefined {
  for (let i = 0; i < list.length; i++) if (policyMatches(list[i]!, s)) return list[i];
  return undefined;
}

export interface Denial<T> {
  connection: T;
  decision: AuthzDecision;
}

export class PolicySet {
  private readonly byKey = new Map<string, CompiledPolicy>();
  private readonly byNamespace = new Map<string, Bucket>();
  private readonly global = new Bucket();
  private readonly subject = new Subject();
  private readonly unknownDeny: boolean;
  private dryRunCount = 0;
  private changes = 0;

  constructor(policies: Iterable<Authorization> = [], opts: PolicySetOptions = {}) {
    this.unknownDeny = opts.unknownPolicy === 'deny';
    for (const a of policies) this.upsert(a);
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Counts changes, so a caller can tell whether open connections need a recheck. */
  get version(): number {
    return this.changes;
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  keys(): IterableIterator<string> {
    return this.byKey.keys();
  }

  /** What was malformed in the policy and how it is enforced instead; undefined if unknown. */
  problems(key: string): readonly string[] | undefined {
    return this.byKey.get(key)?.problems;
  }

  /**
   * Adds or replaces the policy `<namespace>/<name>`. Returns what was malformed in it (for the log);
   * a malformed policy is still installed, in its fail-closed form.
   */
  upsert(a: Authorization): readonly string[] {
    const p = compilePolicy(a);
    this.detach(p.key);
    this.byKey.set(p.key, p);
    const bucket = this.bucketFor(p, true);
    bucket?.add(p);
    if (p.dryRun) this.dryRunCount++;
    this.changes++;
    return p.problems;
  }

  /** Removes the policy of that xDS name; false when it was not there. */
  remove(key: string): boolean {
    if (!this.detach(key)) return false;
    this.changes++;
    return true;
  }

  /** Replaces everything (a full resync). */
  replaceAll(policies: Iterable<Authorization>): void {
    this.byKey.clear();
    this.byNamespace.clear();
    for (const list of [this.global.deny, this.global.allow, this.global.dryDeny, this.global.dryAllow]) list.length = 0;
    this.dryRunCount = 0;
    for (const a of policies) this.upsert(a);
    this.changes++;
  }

  check(conn: AuthzConnection, workload: AuthzWorkload): AuthzDecision {
    const s = this.subject;
    if (!s.load(conn)) return INVALID_CONNECTION;
    const ns = this.byNamespace.get(workload.namespace) ?? EMPTY_BUCKET;
    const names = workload.authorizationPolicies;
    const decision = this.evaluate(s, ns, names, false);
    if (this.dryRunCount === 0 || !this.dryRunApplies(ns, names)) return decision;
    return { ...decision, dryRun: this.evaluate(s, ns, names, true) };
  }

  /** The connections the current policies refuse, for the caller to close ("connection closed due to policy change"). */
  recheck<T extends TrackedConnection>(connections: Iterable<T>): Denial<T>[] {
    const out: Denial<T>[] = [];
    for (const c of connections) {
      const decision = this.check(c.conn, c.workload);
      if (!decision.allowed) out.push({ connection: c, decision });
    }
    return out;
  }

  private evaluate(s: Subject, ns: Bucket, names: readonly string[], dry: boolean): AuthzDecision {
    const g = this.global;
    let hit = firstMatching(ns.deny, s) ?? firstMatching(g.deny, s);
    if (!hit && dry) hit = firstMatching(ns.dryDeny, s) ?? firstMatching(g.dryDeny, s);
    if (hit) return hit.decision;
    for (let i = 0; i < names.length; i++) {
      const p = this.byKey.get(names[i]!);
      if (!p) {
        if (this.unknownDeny) return unknownPolicyDecision(names[i]!);
        continue;
      }
      if (p.action === 'deny' && (dry || !p.dryRun) && policyMatches(p, s)) return p.decision;
    }

    let allows = ns.allow.length + g.allow.length > 0 || (dry && ns.dryAllow.length + g.dryAllow.length > 0);
    hit = firstMatching(ns.allow, s) ?? firstMatching(g.allow, s);
    if (!hit && dry) hit = firstMatching(ns.dryAllow, s) ?? firstMatching(g.dryAllow, s);
    if (hit) return hit.decision;
    for (let i = 0; i < names.length; i++) {
      const p = this.byKey.get(names[i]!);
      if (!p || p.action !== 'allow' || (p.dryRun && !dry)) continue;
      allows = true;
      if (policyMatches(p, s)) return p.decision;
    }
    return allows ? NONE_ALLOWED : NO_ALLOW_POLICIES;
  }

  private dryRunApplies(ns: Bucket, names: readonly string[]): boolean {
    if (ns.hasDryRun || this.global.hasDryRun) return true;
    for (let i = 0; i < names.length; i++) if (this.byKey.get(names[i]!)?.dryRun) return true;
    return false;
  }

  /** The index slot for a policy; workload-scoped policies have none (only their key). */
  private bucketFor(p: CompiledPolicy, create: boolean): Bucket | undefined {
    if (p.reach === 'global') return this.global;
    if (p.reach === 'workload') return undefined;
    let b = this.byNamespace.get(p.namespace);
    if (!b && create) {
      b = new Bucket();
      this.byNamespace.set(p.namespace, b);
    }
    return b;
  }

  private detach(key: string): boolean {
    const old = this.byKey.get(key);
    if (!old) return false;
    this.byKey.delete(key);
    const bucket = this.bucketFor(old, false);
    if (bucket) {
      bucket.remove(old);
      if (bucket !== this.global && bucket.empty) this.byNamespace.delete(old.namespace);
    }
    if (old.dryRun) this.dryRunCount--;
    return true;
  }
}

function unknownPolicyDecision(name: string): AuthzDecision {
  return { allowed: false, policy: name, reason: `the workload lists policy ${name}, which has not been received (fail closed)` };
}
