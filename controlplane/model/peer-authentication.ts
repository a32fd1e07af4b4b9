// PeerAuthentication to the Authorization resources ztunnel enforces mTLS modes with
// (istio-ambient-spec.md §5.5; istiod ambient/authorization.go convertedSelectorPeerAuthentications
// and convertPeerAuthentication, ambient/policies.go).
//
// ztunnel has no notion of mTLS modes: HBONE is always mTLS, and plaintext arrives on 15006 with no
// peer identity. STRICT is therefore a DENY of connections without a principal: the shared
// `<root>/istio_converted_static_strict`, or, for a workload PeerAuthentication with port-level
// exceptions, a per-policy `converted_peer_authentication_<name>`. PERMISSIVE and DISABLE both
// allow plaintext (DISABLE cannot turn HBONE off).
//
// Resolution is istiod's: the mesh policy (root namespace, no selector), then the namespace's
// (no selector), then the workload's (selector); UNSET inherits; the oldest policy wins at each
// level. Where Ambit differs, it is towards STRICT:
// - policies at one level created at the same time (or without creation times, as from files): the
//   stricter wins, by the mode it has in effect (UNSET counts as the mode it inherits; STRICT >
//   PERMISSIVE > DISABLE > UNSET), then, for workload policies, the one with fewer plaintext ports,
//   then the name. istiod keeps whichever it saw first, so PERMISSIVE could beat STRICT;
// - an invalid mode (at the top or on a port) counts as STRICT: it only refuses plaintext, and
//   guessing PERMISSIVE could open what was meant to be closed;
// - istiod's port-level conversion has two precedence slips (a PERMISSIVE workload policy with a
//   STRICT port under a STRICT mesh, and an UNSET workload policy with PERMISSIVE ports under an
//   UNSET namespace policy and a STRICT mesh), where the workload lists a converted policy that is
//   never generated and the port falls back to plaintext; Ambit uses the effective parent mode;
// - a port-level DISABLE is a plaintext exception like PERMISSIVE in every branch (istiod ignores
//   it in one branch of the workload listing but not in the conversion);
// - a workload policy in the root namespace applies to the root namespace's pods (istiod ignores it);
// - portLevelMtls on a policy without a selector (Istio rejects that object) is ignored, except that
//   a STRICT (or unreadable) port makes the whole policy STRICT.

import { Action, Authorization, Scope, type Match, type Rule } from '../../proto/gen/istio/security/authorization.js';
import type { PeerAuthentication, Pod } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { perView } from './memo.js';
import { isRecord, labelsOf, show } from './labels.js';
import { pairsMatch, policySelector } from './policy-selector.js';
import type { Translation } from './translation.js';
import type { ObjectRef, Problem } from './types.js';
import { emptyMatch } from './ztunnel-policy.js';
import { CONVERTED_PEER_AUTHENTICATION_PREFIX, STATIC_STRICT_POLICY } from './policy-shape.js';

export { CONVERTED_PEER_AUTHENTICATION_PREFIX, STATIC_STRICT_POLICY };

type Mode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';
const MODES: readonly Mode[] = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];

interface ParsedPeerAuthentication {
  namespace: string;
  name: string;
  /** Milliseconds; -Infinity when absent (Go's zero time: the oldest). */
  created: number;
  /** `undefined`: namespace-wide (mesh-wide in the root namespace). */
  pairs: readonly (readonly [string, string])[] | undefined;
  mode: Mode;
  /** Valid port-level modes, by port, ascending. */
  ports: { port: number; mode: Mode }[];
  problems: Problem[];
  /** Left out of the resolution (its problems are still reported). */
  ignored?: boolean;
}

interface PeerAuthenticationIndex {
  mesh: ParsedPeerAuthentication | undefined;
  /** Oldest namespace-wide policy per namespace (the root namespace's is `mesh`). */
  namespaceWide: Map<string, ParsedPeerAuthentication>;
  /** Workload policies per namespace, oldest first: the first that selects a pod wins. */
  workload: Map<string, ParsedPeerAuthentication[]>;
  all: ParsedPeerAuthentication[];
  /** Conflicts at the mesh or namespace level, reported once. */
  conflicts: Problem[];
}

/**
 * Every Authorization that PeerAuthentications become: the static STRICT policy
 * `<root namespace>/istio_converted_static_strict` and the converted port-level policies, each
 * named `<namespace>/<name>`.
 */
export function peerAuthenticationAuthorizations(ctx: ModelContext): Translation<Authorization[]> {
  const index = peerAuthenticationIndex(ctx);
  const problems: Problem[] = [...index.conflicts];
  for (const pa of index.all) problems.push(...pa.problems);
  // As istiod: the static policy exists as soon as any PeerAuthentication does.
  if (index.all.length === 0) return { value: [], problems };
  const out: Authorization[] = [staticStrictPolicy(ctx.opts.rootNamespace)];
  for (const list of index.workload.values()) {
    for (const pa of list) {
      const converted = convertPortLevel(pa, parentMode(index, pa.namespace, ctx));
      if (converted) out.push(converted);
    }
  }
  return { value: out, problems };
}

/** The effective mTLS mode of a pod and the names of the converted policies that enforce it. */
export function podPeerAuthentication(pod: Pod, ctx: ModelContext): { mode: 'STRICT' | 'PERMISSIVE' | 'DISABLE'; policies: string[] } {
  const index = peerAuthenticationIndex(ctx);
  if (index.all.length === 0) return { mode: 'PERMISSIVE', policies: [] };
  const namespace = pod.metadata.namespace ?? 'default';
  const inherited = parentMode(index, namespace, ctx);
  const workload = selectingPolicy(index, namespace, pod);
  const mode = workload && workload.mode !== 'UNSET' ? workload.mode : inherited;
  const shown = mode === 'UNSET' ? 'PERMISSIVE' : mode;
  let strict = mode === 'STRICT';
  let converted = false;
  if (workload && workload.ports.length > 0) {
    const hasStrictPort = workload.ports.some((p) => p.mode === 'STRICT');
    const hasPlainPort = workload.ports.some((p) => p.mode === 'PERMISSIVE' || p.mode === 'DISABLE');
    if (strict && hasPlainPort) {
      // The converted policy carries STRICT for every other port; the static one would deny the exceptions.
      converted = true;
      strict = false;
    } else if (!strict && hasStrictPort) {
      converted = true;
    }
  }
  const policies: string[] = [];
  if (strict) policies.push(`${ctx.opts.rootNamespace}/${STATIC_STRICT_POLICY}`);
  if (converted && workload) policies.push(`${workload.namespace}/${CONVERTED_PEER_AUTHENTICATION_PREFIX}${workload.name}`);
  policies.sort();
  return { mode: shown, policies };
}

function staticStrictPolicy(rootNamespace: string): Authorization {
  return Authorization.fromPartial({
    name: STATIC_STRICT_POLICY,
    namespace: rootNamespace,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }] }] }] }],
  });
}

/**
 * The DENY that enforces a workload policy's port-level modes, or nothing when the static policy
 * (or no policy) says it all. Rule structure as istiod builds it: one rule per STRICT port
 * (`not_principals: presence` AND that port), and one rule whose clauses AND together "no
 * principal" with "not one of the plaintext ports".
 */
function convertPortLevel(pa: ParsedPeerAuthentication, inherited: Mode): Authorization | undefined {
  if (pa.pairs === undefined || pa.ports.length === 0) return undefined;
  const effective = pa.mode === 'UNSET' ? inherited : pa.mode;
  const rules: Rule[] = [];
  const clauses: Rule['clauses'] = [];
  if (pa.mode === 'STRICT') clauses.push({ matches: [noPrincipal()] });
  let plaintextPorts = false;
  for (const { port, mode } of pa.ports) {
    if (mode === 'STRICT') {
      // Already covered when the workload's effective mode is STRICT.
      if (effective === 'STRICT') continue;
      rules.push({ clauses: [{ matches: [{ ...noPrincipal(), destinationPorts: [port] }] }] });
    } else if (mode === 'PERMISSIVE' || mode === 'DISABLE') {
      // An exception only matters when the rest of the workload is STRICT.
      if (effective !== 'STRICT') continue;
      plaintextPorts = true;
      clauses.push({ matches: [{ ...emptyMatch(), notDestinationPorts: [port] }] });
    }
  }
  if (pa.mode === 'STRICT' && !plaintextPorts) return undefined;
  // Inherited STRICT with exceptions: the static policy is not listed, so this one carries STRICT.
  if (pa.mode === 'UNSET' && effective === 'STRICT' && plaintextPorts) clauses.push({ matches: [noPrincipal()] });
  if (plaintextPorts) rules.push({ clauses });
  if (rules.length === 0) return undefined;
  return Authorization.fromPartial({
    name: `${CONVERTED_PEER_AUTHENTICATION_PREFIX}${pa.name}`,
    namespace: pa.namespace,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules,
  });
}

function noPrincipal(): Match {
  return { ...emptyMatch(), notPrincipals: [{ presence: {} }] };
}

/** The mode a namespace's workloads inherit: the namespace policy's unless UNSET, else the mesh's. */
function parentMode(index: PeerAuthenticationIndex, namespace: string, ctx: ModelContext): Mode {
  const ns = namespace === ctx.opts.rootNamespace ? undefined : index.namespaceWide.get(namespace);
  if (ns && ns.mode !== 'UNSET') return ns.mode;
  return index.mesh?.mode ?? 'UNSET';
}

function selectingPolicy(index: PeerAuthenticationIndex, namespace: string, pod: Pod): ParsedPeerAuthentication | undefined {
  const list = index.workload.get(namespace);
  if (!list) return undefined;
  const labels = labelsOf(pod);
  return list.find((pa) => pa.pairs !== undefined && pairsMatch(pa.pairs, labels));
}

const peerAuthenticationIndex = perView((ctx: ModelContext): PeerAuthenticationIndex => buildIndex(ctx));

function buildIndex(ctx: ModelContext): PeerAuthenticationIndex {
  const all: ParsedPeerAuthentication[] = [];
  const conflicts: Problem[] = [];
  const namespaceWide = new Map<string, ParsedPeerAuthentication>();
  const workload = new Map<string, ParsedPeerAuthentication[]>();
  const root = ctx.opts.rootNamespace;
  const parsed = new Map<string, ParsedPeerAuthentication[]>();
  for (const [namespace, list] of ctx.peerAuthenticationsByNamespace) {
    const everything = list.map(parsePeerAuthentication);
    all.push(...everything);
    parsed.set(namespace, everything.filter((pa) => !pa.ignored));
  }
  // The mesh level first: a tie in a namespace is decided by the mode policies have in effect,
  // which for UNSET is the mesh's.
  const pick = (namespace: string, wide: ParsedPeerAuthentication[], inherited: Mode): ParsedPeerAuthentication | undefined => {
    const sorted = [...wide].sort(precedence(inherited));
    const winner = sorted[0];
    for (const loser of sorted.slice(1)) conflicts.push({ object: ref(loser), severity: 'warning', message: conflictMessage(winner!, loser, inherited, namespace === root ? 'mesh' : 'namespace') });
    return winner;
  };
  const mesh = pick(root, (parsed.get(root) ?? []).filter((pa) => pa.pairs === undefined), 'UNSET');
  const meshMode = mesh?.mode ?? 'UNSET';
  for (const [namespace, list] of parsed) {
    if (namespace !== root) {
      const winner = pick(namespace, list.filter((pa) => pa.pairs === undefined), meshMode);
      if (winner) namespaceWide.set(namespace, winner);
    }
    const selecting = list.filter((pa) => pa.pairs !== undefined);
    if (selecting.length === 0) continue;
    const nsMode = namespace === root ? 'UNSET' : namespaceWide.get(namespace)?.mode ?? 'UNSET';
    selecting.sort(precedence(nsMode !== 'UNSET' ? nsMode : meshMode));
    workload.set(namespace, selecting);
  }
  return { mesh, namespaceWide, workload, all, conflicts };
}

const RANK: Readonly<Record<Mode, number>> = { STRICT: 3, PERMISSIVE: 2, DISABLE: 1, UNSET: 0 };

/** The mode a policy has in effect where `inherited` is what UNSET falls back to. */
function effectiveMode(pa: ParsedPeerAuthentication, inherited: Mode): Mode {
  return pa.mode === 'UNSET' ? inherited : pa.mode;
}

function plaintextPorts(pa: ParsedPeerAuthentication): number {
  return pa.ports.filter((p) => p.mode === 'PERMISSIVE' || p.mode === 'DISABLE').length;
}

/**
 * Which of two policies at one level wins: the oldest (istiod); on a tie (equal or missing creation
 * times) the stricter in effect, then the one with fewer plaintext ports and more STRICT ones, then
 * the explicit mode, then the name (istiod: whichever it listed first).
 */
function precedence(inherited: Mode): (a: ParsedPeerAuthentication, b: ParsedPeerAuthentication) => number {
  return (a, b) => {
    if (a.created !== b.created) return a.created < b.created ? -1 : 1;
    const strictness = RANK[effectiveMode(b, inherited)] - RANK[effectiveMode(a, inherited)];
    if (strictness !== 0) return strictness;
    const plaintext = plaintextPorts(a) - plaintextPorts(b);
    if (plaintext !== 0) return plaintext;
    const strictPorts = b.ports.filter((p) => p.mode === 'STRICT').length - a.ports.filter((p) => p.mode === 'STRICT').length;
    if (strictPorts !== 0) return strictPorts;
    const explicit = RANK[b.mode] - RANK[a.mode];
    if (explicit !== 0) return explicit;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  };
}

function conflictMessage(winner: ParsedPeerAuthentication, loser: ParsedPeerAuthentication, inherited: Mode, level: 'mesh' | 'namespace'): string {
  const w = `${winner.namespace}/${winner.name}`;
  const head = `ignored: ${w} also applies to the whole ${level}`;
  if (winner.created !== loser.created) return `${head} and is older (the oldest PeerAuthentication wins)`;
  const when = Number.isFinite(winner.created) ? `was created at the same time (${new Date(winner.created).toISOString()})` : 'has no creation time either';
  const wm = effectiveMode(winner, inherited);
  const lm = effectiveMode(loser, inherited);
  const shown = (pa: ParsedPeerAuthentication, m: Mode): string => (pa.mode === 'UNSET' && m !== 'UNSET' ? `${m} (inherited, UNSET)` : m);
  const tie = RANK[wm] !== RANK[lm]
    ? `Ambit applies the stricter: ${shown(winner, wm)} over this one's ${shown(loser, lm)}`
    : RANK[winner.mode] !== RANK[loser.mode]
      ? `both are ${wm} in effect; Ambit applies the one that says so explicitly`
      : `both are ${wm}; the first by name applies`;
  return `${head} and ${when}; on such a tie ${tie} (istiod would keep whichever it listed first)`;
}

function ref(pa: { namespace: string; name: string }): ObjectRef {
  return { kind: 'PeerAuthentication', namespace: pa.namespace, name: pa.name };
}

function parsePeerAuthentication(obj: PeerAuthentication): ParsedPeerAuthentication {
  const namespace = obj.metadata.namespace ?? 'default';
  const name = obj.metadata.name;
  const problems: Problem[] = [];
  const object = ref({ namespace, name });
  const report = (severity: Problem['severity'], message: string): void => {
    problems.push({ object, severity, message });
  };
  const spec: Record<string, unknown> = isRecord(obj.spec) ? obj.spec : {};
  if (obj.spec !== undefined && obj.spec !== null && !isRecord(obj.spec)) report('error', `spec: ${show(obj.spec)} is not a map; treated as STRICT`);

  const created = creationTime(obj.metadata.creationTimestamp, report);
  let mode: Mode = isRecord(obj.spec) || obj.spec === undefined || obj.spec === null ? readMode(spec.mtls, 'spec.mtls', report) : 'STRICT';

  const selector = policySelector(obj);
  let pairs: readonly (readonly [string, string])[] | undefined;
  if (selector.kind === 'labels' && selector.pairs.length > 0) pairs = selector.pairs;

  const ports: { port: number; mode: Mode }[] = [];
  let strictUnplaced = false;
  const raw = spec.portLevelMtls;
  if (raw !== undefined && raw !== null) {
    if (!isRecord(raw)) {
      strictUnplaced = true;
      report('error', `spec.portLevelMtls: ${show(raw)} is not a map of port to mTLS mode; the whole policy is treated as STRICT`);
    } else {
      for (const [key, value] of Object.entries(raw)) {
        const portMode = readMode(value, `spec.portLevelMtls.${key}`, report);
        const port = /^[0-9]{1,5}$/.test(key) ? Number(key) : NaN;
        if (!(port >= 1 && port <= 65535)) {
          if (portMode === 'STRICT') {
            strictUnplaced = true;
            report('error', `spec.portLevelMtls: ${show(key)} is not a port number (1-65535); its STRICT mode is applied to the whole policy`);
          } else {
            report('error', `spec.portLevelMtls: ${show(key)} is not a port number (1-65535); the entry is ignored`);
          }
          continue;
        }
        if (portMode !== 'UNSET') ports.push({ port, mode: portMode });
      }
      ports.sort((a, b) => a.port - b.port);
    }
  }

  if (selector.kind === 'invalid') {
    // Which workloads it meant is unknown. Applying a STRICT to the whole namespace only refuses
    // plaintext; applying anything else could open what another policy closes.
    const failsStrict = mode === 'STRICT' || strictUnplaced || ports.some((p) => p.mode === 'STRICT');
    if (failsStrict) {
      report('error', `${selector.message}; applied as STRICT (without port exceptions) to every workload in the namespace`);
      return { namespace, name, created, pairs: [], mode: 'STRICT', ports: [], problems };
    }
    report('error', `${selector.message}; the policy is ignored (it does not require mTLS, so ignoring it cannot open anything)`);
    return { namespace, name, created, pairs: [], mode: 'UNSET', ports: [], problems, ignored: true };
  }

  if (pairs === undefined && (ports.length > 0 || strictUnplaced)) {
    const strictPort = strictUnplaced || ports.some((p) => p.mode === 'STRICT');
    report('error', `spec.portLevelMtls: only allowed with a selector (Istio rejects this PeerAuthentication); ${strictPort ? 'a port asks for STRICT, so the whole policy is treated as STRICT' : 'ignored'}`);
    if (strictPort) mode = 'STRICT';
    ports.length = 0;
  } else if (strictUnplaced) {
    mode = 'STRICT';
  }
  return { namespace, name, created, pairs, mode, ports, problems };
}

function readMode(mtls: unknown, path: string, report: (s: Problem['severity'], m: string) => void): Mode {
  if (mtls === undefined || mtls === null) return 'UNSET';
  if (!isRecord(mtls)) {
    report('error', `${path}: ${show(mtls)} is not a map with a mode; treated as STRICT`);
    return 'STRICT';
  }
  const mode = mtls.mode;
  if (mode === undefined || mode === null) return 'UNSET';
  if (typeof mode === 'string' && (MODES as readonly string[]).includes(mode)) return mode as Mode;
  report('error', `${path}.mode: ${show(mode)} is not one of ${MODES.join(', ')}; treated as STRICT`);
  return 'STRICT';
}

function creationTime(value: unknown, report: (s: Problem['severity'], m: string) => void): number {
  if (value === undefined || value === null) return -Infinity;
  const ms = value instanceof Date ? value.getTime() : typeof value === 'string' ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) {
    report('warning', `metadata.creationTimestamp: ${show(value)} is not a time; the policy counts as the oldest`);
    return -Infinity;
  }
  return ms;
}
