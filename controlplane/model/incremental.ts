// The model kept current as views arrive, recomputing only what a change can affect. Its snapshot
// always equals buildModel(view) for the latest view (a test checks that under random changes);
// what changes is the cost: a pod update re-translates that pod, not the cluster.
//
// What depends on what (the translation functions read through the ModelContext):
// - a Workload on its pod, the namespace, the services of its namespace, the EndpointSlices (of
//   selector-less services, in any namespace) naming it by targetRef or address, the selector
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
import type { AuthorizationPolicy, EndpointSlice, Gateway, Namespace, PeerAuthentication, Pod, Service } from '../../mesh/k8s/types.js';
import type { Workload, Service as WorkloadService } from '../../proto/gen/istio/workload/workload.js';
import type { Authorization } from '../../proto/gen/istio/security/authorization.js';
import type { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import { buildContext, podAddresses, type ModelContext } from './context.js';
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

function toMap<T extends Keyed>(list: readonly T[]): Map<string, T> {
  const out = new Map<string, T>();
  for (const obj of list) out.set(keyOf(obj), obj);
  return out;
}

/** Keys whose object differs by reference between two maps (added, removed or replaced). */
function changedKeys<T>(before: ReadonlyMap<string, T>, after: ReadonlyMap<string, T>): Set<string> {
  const out = new Set<string>();
  for (const [key, obj] of after) if (before.get(key) !== obj) out.add(key);
  for (const key of before.keys()) if (!after.has(key)) out.add(key);
  return out;
}

function namespaceOfKey(key: string): string {
  return key.slice(0, key.indexOf('/'));
}

interface EndpointRef {
  /** `<namespace>/<name>` of a Pod targetRef. */
  pod: string | undefined;
  addresses: string[];
}

/** What each endpoint of a slice points at; tolerant of any shape (slices are input). */
function endpointRefs(slice: EndpointSlice): EndpointRef[] {
  const out: EndpointRef[] = [];
  const endpoints: unknown = slice.endpoints;
  if (!Array.isArray(endpoints)) return out;
  for (const e of endpoints as unknown[]) {
    if (typeof e !== 'object' || e === null) continue;
    const { targetRef, addresses } = e as { targetRef?: unknown; addresses?: unknown };
    let pod: string | undefined;
    if (typeof targetRef === 'object' && targetRef !== null) {
      const ref = targetRef as { kind?: unknown; name?: unknown; namespace?: unknown };
      if (ref.kind === 'Pod' && typeof ref.name === 'string') pod = `${typeof ref.namespace === 'string' ? ref.namespace : slice.metadata.namespace ?? 'default'}/${ref.name}`;
    }
    out.push({ pod, addresses: Array.isArray(addresses) ? addresses.filter((a): a is string => typeof a === 'string') : [] });
  }
  return out;
}

/** Slice keys by the pods, addresses and services they refer to. */
function sliceReferences(list: readonly EndpointSlice[]): { byPod: Map<string, Set<string>>; byAddress: Map<string, Set<string>>; byService: Map<string, Set<string>> } {
  const byPod = new Map<string, Set<string>>();
  const byAddress = new Map<string, Set<string>>();
  const byService = new Map<string, Set<string>>();
  const add = (map: Map<string, Set<string>>, k: string, v: string): void => {
    const set = map.get(k);
    if (set) set.add(v);
    else map.set(k, new Set([v]));
  };
  for (const slice of list) {
    const key = keyOf(slice);
    const service = slice.metadata.labels?.[SERVICE_NAME_LABEL];
    if (typeof service === 'string') add(byService, `${slice.metadata.namespace ?? 'default'}/${service}`, key);
    for (const ref of endpointRefs(slice)) {
      if (ref.pod !== undefined) add(byPod, ref.pod, key);
      for (const ip of ref.addresses) add(byAddress, ip, key);
    }
  }
  return { byPod, byAddress, byService };
}

function bindsWaypoint(pod: Pod | undefined, namespaces: ReadonlyMap<string, Namespace>): boolean {
  if (!pod) return false;
  return pod.metadata.labels?.[USE_WAYPOINT_LABEL] !== undefined || namespaces.get(pod.metadata.namespace ?? 'default')?.metadata.labels?.[USE_WAYPOINT_LABEL] !== undefined;
}

function hasSelector(obj: { spec?: { selector?: unknown } } | undefined): boolean {
  return obj?.spec?.selector !== undefined && obj.spec.selector !== null;
}

export class IncrementalModel {
  private readonly opts: ModelOptions;
  private view: ClusterView = emptyView();
  private first = true;
  private ctx: ModelContext;

  // The inputs of the last update, by key, to diff the next view against.
  private pods = new Map<string, Pod>();
  private services = new Map<string, Service>();
  private slices = new Map<string, EndpointSlice>();
  private policies = new Map<string, AuthorizationPolicy>();
  private peerAuthentications = new Map<string, PeerAuthentication>();
  private gateways = new Map<string, Gateway>();
  private routes = new Map<string, Keyed>();

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
    const pods = toMap(view.pods);
    const services = toMap(view.services);
    const slices = toMap(view.endpointSlices);
    const policies = toMap(view.authorizationPolicies);
    const peerAuthentications = toMap(view.peerAuthentications);
    const gateways = toMap(view.gateways);
    const routes = new Map<string, Keyed>([
      ...[...toMap(view.httpRoutes)].map(([k, v]) => [`HTTPRoute ${k}`, v] as const),
      ...[...toMap(view.grpcRoutes)].map(([k, v]) => [`GRPCRoute ${k}`, v] as const),
    ]);

    const podsChanged = changedKeys(this.pods, pods);
    const servicesChanged = changedKeys(this.services, services);
    const slicesChanged = changedKeys(this.slices, slices);
    const policiesChanged = changedKeys(this.policies, policies);
    const peerAuthenticationsChanged = changedKeys(this.peerAuthentications, peerAuthentications);
    const gatewaysChanged = changedKeys(this.gateways, gateways);
    const routesChanged = changedKeys(this.routes, routes);
    const namespacesChanged = changedKeys(this.view.namespaces, view.namespaces);

    const dirty = {
      pods: new Set<string>(podsChanged),
      services: new Set<string>(servicesChanged),
      slices: new Set<string>(slicesChanged),
      policies: new Set<string>(policiesChanged),
    };
    let all = this.first || gatewaysChanged.size > 0;
    let allPolicies = false;
    let allGateways = routesChanged.size > 0;
    let peerAuthentication = peerAuthenticationsChanged.size > 0;
    const dirtyNamespaces = new Set<string>();
    const namespacePods = new Set<string>();

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
    if (routesChanged.size > 0) for (const key of services.keys()) dirty.services.add(key);
    // EndpointSlices of selector-less services tie pods (by targetRef or address, in any namespace)
    // and slices together both ways; a slice also reads its service's ports.
    if (podsChanged.size > 0 || slicesChanged.size > 0 || servicesChanged.size > 0) {
      const refs = sliceReferences([...this.slices.values(), ...slices.values()]);
      for (const key of podsChanged) {
        for (const pod of [this.pods.get(key), pods.get(key)]) {
          if (!pod) continue;
          for (const slice of refs.byPod.get(key) ?? []) dirty.slices.add(slice);
          for (const ip of podAddresses(pod)) for (const slice of refs.byAddress.get(ip) ?? []) dirty.slices.add(slice);
        }
      }
      for (const key of servicesChanged) for (const slice of refs.byService.get(key) ?? []) dirty.slices.add(slice);
      for (const key of slicesChanged) {
        for (const slice of [this.slices.get(key), slices.get(key)]) {
          if (!slice) continue;
          for (const ref of endpointRefs(slice)) {
            if (ref.pod !== undefined) dirty.pods.add(ref.pod);
            for (const ip of ref.addresses) {
              for (const pod of [this.ctx.podsByIp.get(ip), ctx.podsByIp.get(ip)]) if (pod) dirty.pods.add(keyOf(pod));
            }
          }
        }
      }
    }
    for (const key of podsChanged) {
      if (bindsWaypoint(this.pods.get(key), this.view.namespaces) || bindsWaypoint(pods.get(key), view.namespaces)) allGateways = true;
    }
    for (const key of policiesChanged) {
      allGateways = true;
      if (hasSelector(this.policies.get(key)) || hasSelector(policies.get(key))) {
        const ns = namespaceOfKey(key);
        if (ns === this.opts.rootNamespace) all = true;
        else namespacePods.add(ns);
      }
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
      for (const key of [...pods.keys(), ...this.pods.keys()]) dirty.pods.add(key);
      for (const key of [...services.keys(), ...this.services.keys()]) dirty.services.add(key);
      for (const key of [...slices.keys(), ...this.slices.keys()]) dirty.slices.add(key);
      allPolicies = true;
      allGateways = true;
      peerAuthentication = true;
    } else {
      for (const ns of dirtyNamespaces) {
        namespacePods.add(ns);
        for (const key of [...services.keys(), ...this.services.keys()]) if (namespaceOfKey(key) === ns) dirty.services.add(key);
        for (const key of [...slices.keys(), ...this.slices.keys()]) if (namespaceOfKey(key) === ns) dirty.slices.add(key);
      }
      for (const ns of namespacePods) {
        for (const pod of ctx.podsByNamespace.get(ns) ?? []) dirty.pods.add(keyOf(pod));
      }
    }
    if (allPolicies) for (const key of [...policies.keys(), ...this.policies.keys()]) dirty.policies.add(key);

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
      for (const key of new Set([...gateways.keys(), ...this.gateways.keys()])) {
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
    this.pods = pods;
    this.services = services;
    this.slices = slices;
    this.policies = policies;
    this.peerAuthentications = peerAuthentications;
    this.gateways = gateways;
    this.routes = routes;
    const text = JSON.stringify(this.problems());
    changes.problems = text !== this.problemText;
    this.problemText = text;
    return changes;
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
