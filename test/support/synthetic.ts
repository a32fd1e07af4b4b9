// Synthetic clusters for the model's equivalence test and the control plane benchmark: namespaces
// (ambient or not, some bound to waypoints), Deployments' pods with IPs and named ports, Services
// selecting them, selector-less services with EndpointSlices, AuthorizationPolicies of every
// scope, PeerAuthentications, waypoint Gateways and routes. Deterministic for a seed; mutations
// return a new view that shares every unchanged object, as the config sources do.

import type { ClusterView } from '../../mesh/config/view.js';
import { byKey, keyOf } from '../../mesh/config/view.js';
import type {
  AuthorizationPolicy,
  EndpointSlice,
  Gateway,
  GRPCRoute,
  HTTPRoute,
  Namespace,
  PeerAuthentication,
  Pod,
  Service,
} from '../../mesh/k8s/types.js';

/** A small fast PRNG (mulberry32): the same seed gives the same cluster and the same mutations. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SyntheticOptions {
  namespaces: number;
  pods: number;
  services: number;
  policies: number;
  nodes?: number;
  seed?: number;
}

const ROOT = 'istio-system';

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)]!;
}

function ip(n: number, base: number): string {
  return `10.${base}.${Math.floor(n / 250) % 250}.${(n % 250) + 2}`;
}

function created(i: number): string {
  return new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString();
}

export function namespaceName(i: number): string {
  return `ns-${i}`;
}

function makeNamespace(i: number): Namespace {
  const labels: Record<string, string> = {};
  if (i % 4 !== 3) labels['istio.io/dataplane-mode'] = 'ambient';
  if (i % 5 === 1) labels['istio.io/use-waypoint'] = 'waypoint';
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespaceName(i), labels } };
}

export function makePod(ns: string, app: string, index: number, podNumber: number, nodes: number, generation = 0): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `${app}-${index}`,
      namespace: ns,
      labels: { app, version: `v${generation % 3}` },
      annotations: { 'ambient.istio.io/redirection': 'enabled' },
      creationTimestamp: created(podNumber),
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${app}-5d8f9c7b4`, controller: true }],
    },
    spec: {
      nodeName: `node-${(podNumber % nodes) + 1}`,
      serviceAccountName: app,
      containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 + (podNumber % 2) }, { name: 'grpc', containerPort: 9090 }] }],
    },
    status: { phase: 'Running', podIP: ip(podNumber, 244), podIPs: [{ ip: ip(podNumber, 244) }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

function makeService(ns: string, app: string, n: number, selectorless: boolean): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: app, namespace: ns, creationTimestamp: created(n), ...(n % 7 === 2 ? { labels: { 'istio.io/use-waypoint': 'waypoint' } } : {}) },
    spec: {
      ...(selectorless ? {} : { selector: { app } }),
      clusterIP: ip(n, 96),
      clusterIPs: [ip(n, 96)],
      type: 'ClusterIP',
      ports: [
        { name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' },
        { name: 'grpc-api', port: 9090, targetPort: 9090, protocol: 'TCP', appProtocol: 'grpc' },
      ],
    },
  };
}

/** A slice of a selector-less service: some endpoints are bare addresses, some name pods (possibly in other namespaces). */
function makeSlice(ns: string, app: string, addresses: string[], pods: { key: string; ip: string }[] = [], suffix = 'abcde'): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${app}-${suffix}`, namespace: ns, labels: { 'kubernetes.io/service-name': app } },
    addressType: 'IPv4',
    endpoints: [
      ...addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
      ...pods.map((p) => ({ addresses: [p.ip], conditions: { ready: true }, targetRef: { kind: 'Pod', namespace: p.key.split('/')[0], name: p.key.split('/')[1] } })),
    ],
    ports: [{ name: 'http', port: 8080 + (suffix.length % 3), protocol: 'TCP' }],
  };
}

export function makePolicy(ns: string, i: number, app: string): AuthorizationPolicy {
  const kind = i % 6;
  const spec: AuthorizationPolicy['spec'] = {};
  if (kind !== 3) spec.selector = { matchLabels: { app } };
  if (kind === 4) spec.targetRefs = [{ kind: 'Service', group: '', name: app }];
  spec.action = kind === 1 ? 'DENY' : 'ALLOW';
  spec.rules = [
    {
      from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/client-${i % 3}`, `cluster.local/ns/${ns}/sa/*`] } }, { source: { namespaces: ['istio-system'] } }],
      to: [{ operation: { ports: ['8080'], ...(kind === 2 || kind === 4 ? { methods: ['GET'], paths: ['/api/*'] } : {}) } }],
      ...(kind === 5 ? { when: [{ key: 'source.ip', values: ['10.0.0.0/8'] }] } : {}),
    },
  ];
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: `policy-${i}`, namespace: ns, generation: 1, creationTimestamp: created(i) }, spec };
}

function makeGateway(ns: string, name: string): Gateway {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: ns, labels: { 'istio.io/waypoint-for': 'service' } },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  };
}

function makeRoute(ns: string, app: string, i: number): HTTPRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: `${app}-route`, namespace: ns, creationTimestamp: created(i) },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: app, port: 80 }],
      rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/v2' } }], backendRefs: [{ name: app, port: 80, weight: 90 }] }],
    },
  };
}

function makeWaypointPod(ns: string, gateway: string, n: number): Pod {
  const pod = makePod(ns, gateway, 0, n, 3);
  pod.metadata.labels = { 'gateway.networking.k8s.io/gateway-name': gateway, 'istio.io/dataplane-mode': 'none' };
  pod.spec.serviceAccountName = gateway;
  return pod;
}

function makeGrpcRoute(ns: string, app: string): GRPCRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name: `${app}-grpc`, namespace: ns, creationTimestamp: created(3) },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: app, port: 9090 }], rules: [{ matches: [{ method: { service: 'shop.Cart', method: 'Add' } }], backendRefs: [{ name: app, port: 9090 }] }] },
  };
}

function sortedView(parts: Omit<ClusterView, 'namespaces'> & { namespaces: Namespace[] }): ClusterView {
  return {
    namespaces: new Map(parts.namespaces.map((n) => [n.metadata.name, n])),
    pods: [...parts.pods].sort(byKey),
    services: [...parts.services].sort(byKey),
    endpointSlices: [...parts.endpointSlices].sort(byKey),
    authorizationPolicies: [...parts.authorizationPolicies].sort(byKey),
    peerAuthentications: [...parts.peerAuthentications].sort(byKey),
    gateways: [...parts.gateways].sort(byKey),
    httpRoutes: [...parts.httpRoutes].sort(byKey),
    grpcRoutes: [...parts.grpcRoutes].sort(byKey),
  };
}

/** A cluster of the given size: services spread over namespaces, pods spread over services. */
export function syntheticCluster(opts: SyntheticOptions): ClusterView {
  const nodes = opts.nodes ?? 10;
  const namespaces = [{ apiVersion: 'v1' as const, kind: 'Namespace' as const, metadata: { name: ROOT } }, ...Array.from({ length: opts.namespaces }, (_, i) => makeNamespace(i))];
  const pods: Pod[] = [];
  const services: Service[] = [];
  const slices: EndpointSlice[] = [];
  const apps: { ns: string; app: string }[] = [];
  for (let s = 0; s < opts.services; s++) {
    const ns = namespaceName(s % opts.namespaces);
    const app = `svc-${s}`;
    apps.push({ ns, app });
    const selectorless = s % 17 === 7;
    services.push(makeService(ns, app, s, selectorless));
  }
  for (let p = 0; p < opts.pods; p++) {
    const { ns, app } = apps[p % apps.length]!;
    pods.push(makePod(ns, app, Math.floor(p / apps.length), p, nodes));
  }
  for (const svc of services) {
    if (svc.spec.selector) continue;
    // Endpoints at bare addresses and at pods, one of them in another namespace.
    const n = services.indexOf(svc);
    const named = [pods[n % pods.length]!, pods[(n * 13 + 5) % pods.length]!].map((p) => ({ key: keyOf(p), ip: p.status!.podIP! }));
    slices.push(makeSlice(svc.metadata.namespace!, svc.metadata.name, [ip(n, 250), ip(n + 1, 250)], named));
  }
  const policies: AuthorizationPolicy[] = [];
  for (let i = 0; i < opts.policies; i++) {
    const { ns, app } = apps[(i * 7) % apps.length]!;
    policies.push(makePolicy(i % 25 === 0 ? ROOT : ns, i, app));
  }
  const peerAuthentications: PeerAuthentication[] = [
    { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'default', namespace: ROOT, creationTimestamp: created(0) }, spec: { mtls: { mode: 'STRICT' } } },
    { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'permissive', namespace: namespaceName(0), creationTimestamp: created(1) }, spec: { mtls: { mode: 'PERMISSIVE' } } },
  ];
  const gateways: Gateway[] = [];
  const httpRoutes: HTTPRoute[] = [];
  for (let i = 0; i < opts.namespaces; i++) {
    if (i % 5 === 1 || i % 7 === 2) {
      gateways.push(makeGateway(namespaceName(i), 'waypoint'));
      pods.push(makeWaypointPod(namespaceName(i), 'waypoint', 900_000 + i));
    }
  }
  if (gateways.length > 0) {
    const gw = gateways[0]!;
    policies.push({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'waypoint-l7', namespace: gw.metadata.namespace!, creationTimestamp: created(1) },
      spec: { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: gw.metadata.name }], action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] },
    });
  }
  for (let s = 2; s < opts.services; s += 7) httpRoutes.push(makeRoute(apps[s]!.ns, apps[s]!.app, s));
  const grpcRoutes: GRPCRoute[] = services.length > 3 ? [makeGrpcRoute(services[3]!.metadata.namespace!, services[3]!.metadata.name)] : [];
  return sortedView({ namespaces, pods, services, endpointSlices: slices, authorizationPolicies: policies, peerAuthentications, gateways, httpRoutes, grpcRoutes });
}

/** The view with one list's object replaced (or added, or removed with `undefined`); everything else shared. */
export function withObject<K extends Exclude<keyof ClusterView, 'namespaces'>>(view: ClusterView, list: K, key: string, obj: ClusterView[K][number] | undefined): ClusterView {
  const items = (view[list] as readonly { metadata: { name: string; namespace?: string } }[]).filter((o) => keyOf(o) !== key);
  if (obj) items.push(obj as { metadata: { name: string; namespace?: string } });
  return { ...view, [list]: items.sort(byKey) } as ClusterView;
}

export function withNamespace(view: ClusterView, ns: Namespace): ClusterView {
  const namespaces = new Map(view.namespaces);
  namespaces.set(ns.metadata.name, ns);
  return { ...view, namespaces };
}

/** One random change of the kind a cluster sees; returns the new view and what was done. */
export function mutate(view: ClusterView, r: () => number, step: number): { view: ClusterView; what: string } {
  const choice = Math.floor(r() * 24);
  switch (choice) {
    case 0: {
      const pod = pick(r, view.pods);
      const next = structuredClone(pod);
      next.metadata.labels = { ...next.metadata.labels, version: `v${step}` };
      return { view: withObject(view, 'pods', keyOf(pod), next), what: `relabel pod ${keyOf(pod)}` };
    }
    case 1: {
      const pod = pick(r, view.pods);
      const next = structuredClone(pod);
      next.status = { ...next.status, podIP: ip(100_000 + step, 245), podIPs: [{ ip: ip(100_000 + step, 245) }] };
      if (r() < 0.5) next.metadata.annotations = {};
      return { view: withObject(view, 'pods', keyOf(pod), next), what: `readdress pod ${keyOf(pod)}` };
    }
    case 2: {
      const pod = pick(r, view.pods);
      return { view: withObject(view, 'pods', keyOf(pod), undefined), what: `delete pod ${keyOf(pod)}` };
    }
    case 3: {
      const svc = pick(r, view.services);
      const app = svc.metadata.name;
      const pod = makePod(svc.metadata.namespace!, app, 1000 + step, 200_000 + step, 10, step);
      if (r() < 0.3) pod.metadata.labels = { ...pod.metadata.labels, 'istio.io/use-waypoint': 'waypoint' };
      return { view: withObject(view, 'pods', keyOf(pod), pod), what: `add pod ${keyOf(pod)}` };
    }
    case 4: {
      const svc = pick(r, view.services);
      const next = structuredClone(svc);
      if (r() < 0.5) next.spec.ports = [{ name: 'http', port: 8000 + (step % 10), targetPort: 'http', protocol: 'TCP' }];
      else next.metadata.labels = r() < 0.5 ? { 'istio.io/use-waypoint': 'waypoint' } : {};
      return { view: withObject(view, 'services', keyOf(svc), next), what: `change service ${keyOf(svc)}` };
    }
    case 5: {
      const svc = pick(r, view.services);
      return { view: withObject(view, 'services', keyOf(svc), undefined), what: `delete service ${keyOf(svc)}` };
    }
    case 6: {
      const names = [...view.namespaces.keys()].filter((n) => n !== ROOT);
      const ns = structuredClone(view.namespaces.get(pick(r, names))!);
      const labels = { ...ns.metadata.labels };
      if (labels['istio.io/use-waypoint']) delete labels['istio.io/use-waypoint'];
      else labels['istio.io/use-waypoint'] = 'waypoint';
      ns.metadata.labels = labels;
      return { view: withNamespace(view, ns), what: `relabel namespace ${ns.metadata.name}` };
    }
    case 7: {
      const pod = pick(r, view.pods);
      const policy = makePolicy(r() < 0.1 ? ROOT : pod.metadata.namespace!, 10_000 + step, pod.metadata.labels?.app ?? 'x');
      return { view: withObject(view, 'authorizationPolicies', keyOf(policy), policy), what: `add policy ${keyOf(policy)}` };
    }
    case 8: {
      if (view.authorizationPolicies.length === 0) return { view, what: 'nothing' };
      const policy = pick(r, view.authorizationPolicies);
      return { view: withObject(view, 'authorizationPolicies', keyOf(policy), undefined), what: `delete policy ${keyOf(policy)}` };
    }
    case 9: {
      const names = [...view.namespaces.keys()];
      const ns = pick(r, names);
      const modes = ['STRICT', 'PERMISSIVE', 'DISABLE', 'UNSET'] as const;
      const pa: PeerAuthentication = { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'default', namespace: ns, creationTimestamp: created(step) }, spec: { mtls: { mode: pick(r, modes) } } };
      if (r() < 0.4) {
        pa.metadata.name = `workload-${step}`;
        pa.spec.selector = { matchLabels: { app: pick(r, view.pods).metadata.labels?.app ?? 'x' } };
        pa.spec.portLevelMtls = { '8080': { mode: 'PERMISSIVE' } };
      }
      return { view: withObject(view, 'peerAuthentications', keyOf(pa), pa), what: `set PeerAuthentication ${keyOf(pa)}` };
    }
    case 10: {
      const ns = pick(r, [...view.namespaces.keys()].filter((n) => n !== ROOT));
      const existing = view.gateways.find((g) => g.metadata.namespace === ns);
      if (existing) return { view: withObject(view, 'gateways', keyOf(existing), undefined), what: `delete gateway ${keyOf(existing)}` };
      const gw = makeGateway(ns, 'waypoint');
      return { view: withObject(view, 'gateways', keyOf(gw), gw), what: `add gateway ${keyOf(gw)}` };
    }
    case 11: {
      const svc = pick(r, view.services);
      const route = makeRoute(svc.metadata.namespace!, svc.metadata.name, step);
      route.spec.rules![0]!.matches = [{ path: { type: 'Exact', value: `/s${step}` } }];
      return { view: withObject(view, 'httpRoutes', keyOf(route), route), what: `set route ${keyOf(route)}` };
    }
    case 12: {
      // A slice of a selector-less service re-pointed at other pods (any namespace) and addresses.
      const selectorless = view.services.filter((s) => !s.spec.selector);
      if (selectorless.length === 0) return { view, what: 'nothing' };
      const svc = pick(r, selectorless);
      const named = [pick(r, view.pods), pick(r, view.pods)].map((p) => ({ key: keyOf(p), ip: p.status?.podIP ?? '10.9.9.9' }));
      const slice = makeSlice(svc.metadata.namespace!, svc.metadata.name, [ip(300_000 + step, 250)], named, r() < 0.5 ? 'abcde' : 'fghij');
      return { view: withObject(view, 'endpointSlices', keyOf(slice), r() < 0.2 ? undefined : slice), what: `set slice ${keyOf(slice)}` };
    }
    case 13: {
      // A service loses or gains its selector, or becomes ExternalName.
      const svc = pick(r, view.services);
      const next = structuredClone(svc);
      const roll = r();
      if (roll < 0.4) {
        if (next.spec.selector) delete next.spec.selector;
        else next.spec.selector = { app: next.metadata.name };
      } else if (roll < 0.6) {
        next.spec.type = next.spec.type === 'ExternalName' ? 'ClusterIP' : 'ExternalName';
        next.spec.externalName = 'example.com';
      } else {
        next.metadata.annotations = { 'networking.istio.io/traffic-distribution': r() < 0.5 ? 'PreferClose' : 'Any' };
      }
      return { view: withObject(view, 'services', keyOf(svc), next), what: `reshape service ${keyOf(svc)}` };
    }
    case 14: {
      // A pod finishes, becomes host-network, or shares another pod's address.
      const pod = pick(r, view.pods);
      const next = structuredClone(pod);
      const roll = r();
      if (roll < 0.3) next.status = { ...next.status, phase: 'Succeeded' };
      else if (roll < 0.6) next.spec.hostNetwork = !next.spec.hostNetwork;
      else next.status = { ...next.status, podIP: pick(r, view.pods).status?.podIP ?? '10.9.9.9', podIPs: undefined };
      return { view: withObject(view, 'pods', keyOf(pod), next), what: `pod lifecycle ${keyOf(pod)}` };
    }
    case 15: {
      // A waypoint pod (the Gateway's own) appears, changes account, or goes.
      const gw = view.gateways.length ? pick(r, view.gateways) : undefined;
      if (!gw) return { view, what: 'nothing' };
      const pod = makeWaypointPod(gw.metadata.namespace!, gw.metadata.name, 950_000 + step);
      pod.metadata.name = `${gw.metadata.name}-wp`;
      if (r() < 0.5) pod.spec.serviceAccountName = `wp-${step}`;
      return { view: withObject(view, 'pods', keyOf(pod), r() < 0.25 ? undefined : pod), what: `waypoint pod ${keyOf(pod)}` };
    }
    case 16: {
      // Cross-namespace waypoint use, with the Gateway admitting or refusing it.
      const svc = pick(r, view.services);
      const gw = view.gateways.length ? pick(r, view.gateways) : undefined;
      if (!gw) return { view, what: 'nothing' };
      const next = structuredClone(svc);
      next.metadata.labels = { 'istio.io/use-waypoint': gw.metadata.name, 'istio.io/use-waypoint-namespace': gw.metadata.namespace! };
      let v = withObject(view, 'services', keyOf(svc), next);
      if (r() < 0.5) {
        const g = structuredClone(gw);
        g.spec.listeners = [{ name: 'mesh', port: 15008, protocol: 'HBONE', allowedRoutes: { namespaces: { from: r() < 0.5 ? 'All' : 'Same' } } }];
        v = withObject(v, 'gateways', keyOf(gw), g);
      }
      return { view: v, what: `cross-namespace waypoint for ${keyOf(svc)}` };
    }
    case 17: {
      // A Gateway changes what it is for.
      const gw = view.gateways.length ? pick(r, view.gateways) : undefined;
      if (!gw) return { view, what: 'nothing' };
      const g = structuredClone(gw);
      g.metadata.labels = { 'istio.io/waypoint-for': pick(r, ['service', 'workload', 'all', 'none']) };
      return { view: withObject(view, 'gateways', keyOf(gw), g), what: `waypoint-for ${keyOf(gw)}` };
    }
    case 18: {
      // A policy is edited in place: action, selector, or targets.
      if (view.authorizationPolicies.length === 0) return { view, what: 'nothing' };
      const policy = pick(r, view.authorizationPolicies);
      const next = structuredClone(policy);
      const roll = r();
      if (roll < 0.3) next.spec.action = next.spec.action === 'DENY' ? 'ALLOW' : 'DENY';
      else if (roll < 0.6) next.spec.selector = next.spec.selector ? undefined : { matchLabels: { app: pick(r, view.pods).metadata.labels?.app ?? 'x' } };
      else {
        // Often a selector-less service (its pods are named by slices, possibly in other namespaces).
        const candidates = view.services.filter((x) => x.metadata.namespace === policy.metadata.namespace);
        const selectorless = candidates.filter((x) => !x.spec.selector);
        const target = selectorless.length > 0 && r() < 0.5 ? pick(r, selectorless) : candidates.length > 0 ? pick(r, candidates) : pick(r, view.services);
        next.spec.targetRefs = [{ group: '', kind: 'Service', name: target.metadata.name }];
        if (r() < 0.5) delete next.spec.selector;
      }
      next.metadata.generation = (next.metadata.generation ?? 1) + 1;
      return { view: withObject(view, 'authorizationPolicies', keyOf(policy), next), what: `edit policy ${keyOf(policy)}` };
    }
    case 19: {
      if (view.peerAuthentications.length === 0) return { view, what: 'nothing' };
      const pa = pick(r, view.peerAuthentications);
      return { view: withObject(view, 'peerAuthentications', keyOf(pa), undefined), what: `delete PeerAuthentication ${keyOf(pa)}` };
    }
    case 20: {
      // A workload PeerAuthentication in the root namespace, or a namespace-wide one with ports.
      const pa: PeerAuthentication = {
        apiVersion: 'security.istio.io/v1',
        kind: 'PeerAuthentication',
        metadata: { name: `pa-${step}`, namespace: r() < 0.5 ? ROOT : pick(r, [...view.namespaces.keys()]), creationTimestamp: created(step % 3) },
        spec: { mtls: { mode: pick(r, ['STRICT', 'PERMISSIVE'] as const) }, ...(r() < 0.5 ? { selector: { matchLabels: { app: pick(r, view.pods).metadata.labels?.app ?? 'x' } } } : {}), portLevelMtls: { '9090': { mode: 'DISABLE' } } },
      };
      return { view: withObject(view, 'peerAuthentications', keyOf(pa), pa), what: `PeerAuthentication ${keyOf(pa)}` };
    }
    case 21: {
      // A namespace appears or goes (its objects stay, as on a real API server briefly).
      const name = `extra-${step % 4}`;
      const namespaces = new Map(view.namespaces);
      if (namespaces.has(name)) namespaces.delete(name);
      else namespaces.set(name, { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'istio.io/dataplane-mode': 'ambient' } } });
      return { view: { ...view, namespaces }, what: `namespace ${name}` };
    }
    case 22: {
      const routes = [...view.httpRoutes, ...view.grpcRoutes];
      if (routes.length === 0) return { view, what: 'nothing' };
      const route = pick(r, routes);
      const list = route.kind === 'GRPCRoute' ? 'grpcRoutes' : 'httpRoutes';
      return { view: withObject(view, list, keyOf(route), undefined), what: `delete ${route.kind} ${keyOf(route)}` };
    }
    default: {
      // A policy targeting a Gateway or the GatewayClass.
      const gw = view.gateways.length ? pick(r, view.gateways) : undefined;
      if (!gw) return { view, what: 'nothing' };
      const byClass = r() < 0.3;
      const policy: AuthorizationPolicy = {
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: `wp-${step}`, namespace: byClass ? ROOT : gw.metadata.namespace!, creationTimestamp: created(step) },
        spec: {
          targetRefs: [byClass ? { group: 'gateway.networking.k8s.io', kind: 'GatewayClass', name: 'istio-waypoint' } : { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: gw.metadata.name }],
          action: 'ALLOW',
          rules: [{ to: [{ operation: { methods: ['GET'] } }] }],
        },
      };
      return { view: withObject(view, 'authorizationPolicies', keyOf(policy), policy), what: `waypoint policy ${keyOf(policy)}` };
    }
  }
}
