// The model kept current as views arrive, recomputing only what a change can affect. Its snapshot
// always equals buildModel(view) for the latest view (a test checks that under random changes);
// what changes is the cost: a pod update re-translates that pod, not the cluster.
//
// What depends on what (the translation functions read through the ModelContext):
// - a Workload on its pod, the namespace, the services of its namespace, the EndpointSlices (of
//   selector-less services, in any namespace) naming it by targetRef, the selector
//   policies of its namespace and the root namespace, PeerAuthentications likewise, and the
//   waypoint Gateways;
// - a Service on itself, its namespace, the waypoint Gateways and the routes naming it;
// - an EndpointSlice's workloads on the slice, its service's ports and the pods it names;
// - a policy's translation and status on the policy, services, namespaces and Gateways;
// - a Waypoint on nearly everything: it is recomputed whenever anything but an unbound pod changes.
// Gateways are rare and change everything, so a Gateway change recomputes the whole model.

import type { ClusterView } from '../../mesh/config/view.js';
import { emptyView, keyOf } from '../../mesh/config/view.js';
import { SERVICE_NAME_LABEL, USE_WAYPOINT_LABEL } from '../../mesh/k8s/types.js';

/** Set by istiod (and Ambit's deployment) on a waypoint's own pods. */
const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
import type { AuthorizationPolicy, EndpointSlice, Gateway, Namespace, PeerAuthentication, Pod, Service } from '../../mesh/k8s/types.js';
import type { Workload, Service as WorkloadService } from '../../proto/gen/istio/workload/workload.js';
import type { Authorization } from '../../proto/gen/istio/security/authorization.js';
import type { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import { buildContext, type ModelContext } from './context.js';
import { authorizationName, guarded, ref, serviceResourceName, translatePolicyGuarded } from './build.js';
import { peerAuthenticationAuthorizations } from './peer-authentication.js';
import { serviceResource } from './services.js';
import { endpointSliceWorkloads, podWorkload } from './workloads.js';
import { waypointResource } from './waypoints.js';
import { DEFAULT_MODEL_OPTIONS, type ModelOptions, type ModelSnapshot, type PolicyStatus, type Problem } from './types.js';

/** Resource names (per type) and policy keys whose content may have changed in one update. */
export interface ModelChanges {
  workloads: Set<string>;
  services: Set<string>;
  authorizations: Set<string>;
  waypoints: Set<string>;
  /** AuthorizationPolicy keys whose status differs from before (or that were removed). */
  policyStatus: Set<string>;
  /** Whether the set of problems differs from before. */
  problems: boolean;
  /** How many input objects were re-translated: the cost of the update. */
  translated: number;
}

interface Output {
  names: string[];
  problems: Problem[];
}

type Keyed = { metadata: { name: string; namespace?: string } };

const NO_OUTPUT: Output = { names: [], problems: [] };

/** One input kind's translations: which resource names each object produced, and its problems. */
class Outputs {
  readonly byKey = new Map<string, Output>();

  /** Replaces the key's output; returns the names it no longer produces. */
  set(key: string, output: Output | undefined): string[] {
    const old = this.byKey.get(key) ?? NO_OUTPUT;
    if (output === undefined || (output.names.length === 0 && output.problems.length === 0)) this.byKey.delete(key);
    else this.byKey.set(key, output);
    const kept = new Set(output?.names ?? []);
    return old.names.filter((n) => !kept.has(n));
  }

  *problems(): Iterable<Problem> {
    for (const o of this.byKey.values()) yield* o.problems;
  }
}

/**
 * One input list, kept by key across updates. Objects that did not change keep their identity in
 * the next view (the sources' contract), so the changes are found by identity, and keys are
 * computed only for the objects that changed.
 */
class KeyedList<T extends Keyed> {
  private list: readonly T[] = [];
  private members = new Set<T>();
  byKey = new Map<string, T>();

  /** Moves to `next`; returns the map before, and the keys added, removed or replaced. */
  advance(next: readonly T[]): { before: ReadonlyMap<string, T>; changed: Set<string> } {
    const before = this.byKey;
    if (next === this.list) return { before, changed: new Set() };
    const members = new Set(next);
    const changed = new Set<string>();
    const after = new Map(before);
    for (const old of this.list) {
      if (members.has(old)) continue;
      const key = keyOf(old);
      changed.add(key);
      if (after.get(key) === old) after.delete(key);
    }
    for (const obj of next) {
      if (this.members.has(obj)) continue;
      const key = keyOf(obj);
      changed.add(key);
      after.set(key, obj);
    }
    this.list = next;
    this.members = members;
    this.byKey = after;
    return { before, changed };
  }
}

/** Keys whose value differs by reference between two maps (added, removed or replaced). */
function changedKeys<T>(before: ReadonlyMap<string, T>, after: ReadonlyMap<string, T>): Set<string> {
  const out = new Set<string>();
  if (before === after) return out;
  for (const [key, obj] of after) if (before.get(key) !== obj) out.add(key);
  for (const key of before.keys()) if (!after.has(key)) out.add(key);
  return out;
}

function namespaceOfKey(key: string): string {
  return key.slice(0, key.indexOf('/'));
}

/** `<namespace>/<name>` of the pods a slice's endpoints name by targetRef; tolerant of any shape (slices are input). */
function targetPods(slice: EndpointSlice): string[] {
  const out: string[] = [];
  const endpoints: unknown = slice.endpoints;
  if (!Array.isArray(endpoints)) return out;
  for (const e of endpoints as unknown[]) {
    const ref = typeof e === 'object' && e !== null ? (e as { targetRef?: unknown }).targetRef : undefined;
    if (typeof ref !== 'object' || ref === null) continue;
    const { kind, name, namespace } = ref as { kind?: unknown; name?: unknown; namespace?: unknown };
    if (kind === 'Pod' && typeof name === 'string') out.push(`${typeof namespace === 'string' ? namespace : slice.metadata.namespace ?? 'default'}/${name}`);
  }
  return out;
}

/** Slice keys by the `<namespace>/<name>` of the service they belong to. */
function slicesByService(list: readonly EndpointSlice[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const slice of list) {
    const service = slice.metadata.labels?.[SERVICE_NAME_LABEL];
    if (typeof service !== 'string') continue;
    const key = `${slice.metadata.namespace ?? 'default'}/${service}`;
    const set = out.get(key);
    if (set) set.add(keyOf(slice));
    else out.set(key, new Set([keyOf(slice)]));
  }
  return out;
}

/** A pod bound to a waypoint (label on it or its namespace), or one of a waypoint's own pods. */
function waypointRelated(pod: Pod | undefined, namespaces: ReadonlyMap<string, Namespace>): boolean {
  if (!pod) return false;
  const labels = pod.metadata.labels;
  return (
    labels?.[USE_WAYPOINT_LABEL] !== undefined ||
    labels?.[GATEWAY_NAME_LABEL] !== undefined ||
    namespaces.get(pod.metadata.namespace ?? 'default')?.metadata.labels?.[USE_WAYPOINT_LABEL] !== undefined
  );
}

export class IncrementalModel {
  private readonly opts: ModelOptions;
  private view: ClusterView = emptyView();
  private first = true;
  private ctx: ModelContext;

  // The inputs of the last update, by key, to diff the next view against.
  private readonly podList = new KeyedList<Pod>();
  private readonly serviceList = new KeyedList<Service>();
  private readonly sliceList = new KeyedList<EndpointSlice>();
  private readonly policyList = new KeyedList<AuthorizationPolicy>();
  private readonly peerAuthenticationList = new KeyedList<PeerAuthentication>();
  private readonly gatewayList = new KeyedList<Gateway>();
  private readonly httpRouteList = new KeyedList<Keyed>();
  private readonly grpcRouteList = new KeyedList<Keyed>();
  private sliceIndex: { list: readonly EndpointSlice[]; byService: Map<string, Set<string>> } | undefined;

  private readonly workloadMap = new Map<string, Workload>();
  private readonly serviceMap = new Map<string, WorkloadService>();
  private readonly authorizationMap = new Map<string, Authorization>();
  private readonly waypointMap = new Map<string, Waypoint>();
  private readonly statusMap = new Map<string, PolicyStatus>();
  private readonly statusText = new Map<string, string>();

  private readonly podOut = new Outputs();
  private readonly sliceOut = new Outputs();
  private readonly serviceOut = new Outputs();
  private readonly policyOut = new Outputs();
  private readonly peerAuthenticationOut = new Outputs();
  private readonly gatewayOut = new Outputs();
  private problemText = '';

  constructor(opts: ModelOptions = DEFAULT_MODEL_OPTIONS) {
    this.opts = opts;
    this.ctx = buildContext(this.view, opts);
  }

  snapshot(): ModelSnapshot {
    return {
      workloads: this.workloadMap,
      services: this.serviceMap,
      authorizations: this.authorizationMap,
      waypoints: this.waypointMap,
      policyStatus: this.statusMap,
      problems: this.problems(),
    };
  }

  update(view: ClusterView): ModelChanges {
    const ctx = buildContext(view, this.opts);
    const previousSlices = this.sliceList.byKey;
    const { before: oldPods, changed: podsChanged } = this.podList.advance(view.pods);
    const { before: oldServices, changed: servicesChanged } = this.serviceList.advance(view.services);
    const { before: oldSlices, changed: slicesChanged } = this.sliceList.advance(view.endpointSlices);
    const { before: oldPolicies, changed: policiesChanged } = this.policyList.advance(view.authorizationPolicies);
    const { changed: peerAuthenticationsChanged } = this.peerAuthenticationList.advance(view.peerAuthentications);
    const { before: oldGateways, changed: gatewaysChanged } = this.gatewayList.advance(view.gateways);
    const routesChanged = this.httpRouteList.advance(view.httpRoutes).changed.size + this.grpcRouteList.advance(view.grpcRoutes).changed.size;
    const namespacesChanged = changedKeys(this.view.namespaces, view.namespaces);
    const pods = this.podList.byKey;
    const services = this.serviceList.byKey;
    const slices = this.sliceList.byKey;
    const policies = this.policyList.byKey;
    const gateways = this.gatewayList.byKey;

    const dirty = {
      pods: new Set<string>(podsChanged),
      services: new Set<string>(servicesChanged),
      slices: new Set<string>(slicesChanged),
      policies: new Set<string>(policiesChanged),
    };
    let all = this.first || gatewaysChanged.size > 0;
    let allPolicies = false;
    let allGateways = routesChanged > 0;
    let peerAuthentication = peerAuthenticationsChanged.size > 0;
    const dirtyNamespaces = new Set<string>();
    const namespacePods = new Set<string>();
    const policyNamespaces = new Set<string>();

    for (const ns of namespacesChanged) {
      dirtyNamespaces.add(ns);
      allPolicies = true;
      allGateways = true;
    }
    for (const key of servicesChanged) {
      namespacePods.add(namespaceOfKey(key));
      allPolicies = true;
      allGateways = true;
    }
    // A service reports the routes attached to it that cannot take effect (no waypoint).
    if (routesChanged > 0) for (const key of services.keys()) dirty.services.add(key);
    // A slice's workloads read its service's ports.
    if (servicesChanged.size > 0) {
      const indexes = [this.slicesByServiceOf(previousSlices === slices ? view.endpointSlices : [...previousSlices.values()]), this.slicesByServiceOf(view.endpointSlices)];
      for (const key of servicesChanged) for (const byService of indexes) for (const slice of byService.get(key) ?? []) dirty.slices.add(slice);
    }
    for (const key of podsChanged) {
      // Waypoints list the pods bound to them, and the identities of their own pods.
      if (waypointRelated(oldPods.get(key), this.view.namespaces) || waypointRelated(pods.get(key), view.namespaces)) allGateways = true;
    }
    for (const key of policiesChanged) {
      allGateways = true;
      // Selector policies are listed by the workloads they select; targetRefs policies that fall
      // back to ztunnel by the workloads of the services they target (same namespace), which for
      // a selector-less service are the pods its EndpointSlices name, in any namespace.
      const ns = namespaceOfKey(key);
      if (ns === this.opts.rootNamespace) all = true;
      else policyNamespaces.add(ns);
    }
    for (const ns of policyNamespaces) {
      namespacePods.add(ns);
      for (const [k, slice] of [...slices, ...oldSlices]) if (namespaceOfKey(k) === ns) for (const pod of targetPods(slice)) dirty.pods.add(pod);
    }
    for (const key of peerAuthenticationsChanged) {
      const ns = namespaceOfKey(key);
      if (ns === this.opts.rootNamespace) all = true;
      else namespacePods.add(ns);
    }

    const changes: ModelChanges = {
      workloads: new Set(),
      services: new Set(),
      authorizations: new Set(),
      waypoints: new Set(),
      policyStatus: new Set(),
      problems: false,
      translated: 0,
    };

    if (all) {
      for (const key of [...pods.keys(), ...oldPods.keys()]) dirty.pods.add(key);
      for (const key of [...services.keys(), ...oldServices.keys()]) dirty.services.add(key);
      for (const key of [...slices.keys(), ...oldSlices.keys()]) dirty.slices.add(key);
      allPolicies = true;
      allGateways = true;
      peerAuthentication = true;
    } else {
      for (const ns of dirtyNamespaces) {
        namespacePods.add(ns);
        for (const key of [...services.keys(), ...oldServices.keys()]) if (namespaceOfKey(key) === ns) dirty.services.add(key);
        for (const key of [...slices.keys(), ...oldSlices.keys()]) if (namespaceOfKey(key) === ns) dirty.slices.add(key);
      }
      for (const ns of namespacePods) {
        for (const pod of ctx.podsByNamespace.get(ns) ?? []) dirty.pods.add(keyOf(pod));
      }
    }
    if (allPolicies) for (const key of [...policies.keys(), ...oldPolicies.keys()]) dirty.policies.add(key);
    // A pod's Workload lists the selector-less services whose EndpointSlices name it by targetRef,
    // in any namespace: every slice looked at again has its named pods looked at again.
    for (const key of dirty.slices) {
      for (const slice of [oldSlices.get(key), slices.get(key)]) {
        if (!slice) continue;
        for (const pod of targetPods(slice)) dirty.pods.add(pod);
      }
    }

    // Workloads
    for (const key of dirty.pods) {
      const pod = pods.get(key);
      const problems: Problem[] = [];
      const workload = pod ? guarded(problems, ref('Pod', pod), () => podWorkload(pod, ctx)) : undefined;
      if (workload) this.workloadMap.set(workload.uid, workload);
      this.replace(this.podOut, key, workload ? [workload.uid] : [], problems, this.workloadMap, changes.workloads);
      changes.translated++;
    }
    for (const key of dirty.slices) {
      const slice = slices.get(key);
      const problems: Problem[] = [];
      const workloads = slice ? (guarded(problems, ref('EndpointSlice', slice), () => endpointSliceWorkloads(slice, ctx)) ?? []) : [];
      for (const w of workloads) this.workloadMap.set(w.uid, w);
      this.replace(this.sliceOut, key, workloads.map((w) => w.uid), problems, this.workloadMap, changes.workloads);
      changes.translated++;
    }
    // Services
    for (const key of dirty.services) {
      const svc = services.get(key);
      const problems: Problem[] = [];
      const service = svc ? guarded(problems, ref('Service', svc), () => serviceResource(svc, ctx)) : undefined;
      const name = service ? serviceResourceName(service) : undefined;
      if (service && name) this.serviceMap.set(name, service);
      this.replace(this.serviceOut, key, name ? [name] : [], problems, this.serviceMap, changes.services);
      changes.translated++;
    }
    // Policies
    for (const key of dirty.policies) {
      const policy = policies.get(key);
      let names: string[] = [];
      let problems: Problem[] = [];
      if (policy) {
        const t = translatePolicyGuarded(policy, ctx);
        problems = t.problems;
        if (t.authorization) {
          const name = authorizationName(t.authorization);
          this.authorizationMap.set(name, t.authorization);
          names = [name];
        }
        this.setStatus(key, t.status, changes);
      } else {
        this.setStatus(key, undefined, changes);
      }
      this.replace(this.policyOut, key, names, problems, this.authorizationMap, changes.authorizations);
      changes.translated++;
    }
    if (peerAuthentication) {
      const problems: Problem[] = [];
      const authorizations = guarded(problems, { kind: 'PeerAuthentication', name: '*' }, () => peerAuthenticationAuthorizations(ctx)) ?? [];
      for (const a of authorizations) this.authorizationMap.set(authorizationName(a), a);
      this.replace(this.peerAuthenticationOut, '*', authorizations.map(authorizationName), problems, this.authorizationMap, changes.authorizations);
      changes.translated++;
    }
    // Waypoints
    if (allGateways) {
      for (const key of new Set([...gateways.keys(), ...oldGateways.keys()])) {
        const gateway = gateways.get(key);
        const problems: Problem[] = [];
        const waypoint = gateway ? guarded(problems, ref('Gateway', gateway), () => waypointResource(gateway, ctx)) : undefined;
        const name = waypoint ? `${waypoint.namespace}/${waypoint.name}` : undefined;
        if (waypoint && name) this.waypointMap.set(name, waypoint);
        this.replace(this.gatewayOut, key, name ? [name] : [], problems, this.waypointMap, changes.waypoints);
        changes.translated++;
      }
    }

    this.view = view;
    this.ctx = ctx;
    this.first = false;
    const text = JSON.stringify(this.problems());
    changes.problems = text !== this.problemText;
    this.problemText = text;
    return changes;
  }

  /** Slices by service for a slice list, kept for the list the last update saw (the "before" of the next). */
  private slicesByServiceOf(list: readonly EndpointSlice[]): Map<string, Set<string>> {
    if (this.sliceIndex?.list !== list) this.sliceIndex = { list, byService: slicesByService(list) };
    return this.sliceIndex.byService;
  }

  /** The context of the latest update (for callers that translate on demand, e.g. a debug endpoint). */
  context(): ModelContext {
    return this.ctx;
  }

  private replace<T>(outputs: Outputs, key: string, names: string[], problems: Problem[], map: Map<string, T>, changed: Set<string>): void {
    for (const gone of outputs.set(key, { names, problems })) {
      map.delete(gone);
      changed.add(gone);
    }
    for (const name of names) changed.add(name);
  }

  private setStatus(key: string, status: PolicyStatus | undefined, changes: ModelChanges): void {
    if (!status) {
      if (this.statusMap.delete(key)) {
        this.statusText.delete(key);
        changes.policyStatus.add(key);
      }
      return;
    }
    const text = JSON.stringify(status);
    this.statusMap.set(key, status);
    if (this.statusText.get(key) !== text) {
      this.statusText.set(key, text);
      changes.policyStatus.add(key);
    }
  }

  private problems(): Problem[] {
    return [
      ...this.podOut.problems(),
      ...this.sliceOut.problems(),
      ...this.serviceOut.problems(),
      ...this.policyOut.problems(),
      ...this.peerAuthenticationOut.problems(),
      ...this.gatewayOut.problems(),
    ];
  }
}
