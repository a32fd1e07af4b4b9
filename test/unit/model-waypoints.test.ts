// Waypoint binding and the Waypoint resource: the rules that decide where traffic goes, asserted
// one by one. The fail-closed rule is Ambit's own (Istio skips a missing waypoint).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { viewFromObjects } from '../../mesh/config/kinds.js';
import { buildContext, type ModelContext } from '../../controlplane/model/context.js';
import { DEFAULT_MODEL_OPTIONS } from '../../controlplane/model/types.js';
import { podWaypoint, serviceWaypoint, waypointResource } from '../../controlplane/model/waypoints.js';
import { serviceResource } from '../../controlplane/model/services.js';
import { ipText } from '../../controlplane/model/render.js';
import { hbonePort } from '../../controlplane/model/waypoint-binding.js';
import type { Gateway, Pod, Service } from '../../mesh/k8s/types.js';

function ctxOf(objects: unknown[]): ModelContext {
  const { view, rejected } = viewFromObjects(objects);
  assert.deepEqual(rejected, []);
  return buildContext(view, DEFAULT_MODEL_OPTIONS);
}

function namespace(name: string, labels: Record<string, string> = {}): unknown {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

function gateway(name: string, ns: string, opts: { labels?: Record<string, string>; className?: string; listeners?: unknown[]; status?: unknown } = {}): unknown {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: ns, labels: opts.labels ?? {} },
    spec: { gatewayClassName: opts.className ?? 'istio-waypoint', listeners: opts.listeners ?? [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    ...(opts.status ? { status: opts.status } : {}),
  };
}

function service(name: string, ns: string, labels: Record<string, string> = {}): unknown {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns, labels }, spec: { selector: { app: name }, clusterIP: '10.96.0.9', ports: [{ name: 'http', port: 80 }] } };
}

function pod(name: string, ns: string, labels: Record<string, string> = {}): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels },
    spec: { nodeName: 'n1', serviceAccountName: name, containers: [{ name: 'c' }] },
    status: { phase: 'Running', podIP: '10.244.0.9', conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

const svcOf = (ctx: ModelContext, name: string): Service => ctx.view.services.find((s) => s.metadata.name === name)!;
const podOf = (ctx: ModelContext, name: string): Pod => ctx.view.pods.find((p) => p.metadata.name === name)!;
const gwOf = (ctx: ModelContext, name: string): Gateway => ctx.view.gateways.find((g) => g.metadata.name === name)!;

test('a label naming a Gateway that does not exist fails closed: the hostname address stays, with an error naming label and Gateway', () => {
  const ctx = ctxOf([namespace('a'), service('web', 'a', { 'istio.io/use-waypoint': 'ghost' })]);
  const t = serviceWaypoint(svcOf(ctx, 'web'), ctx);
  assert.equal(t.value?.key, 'a/ghost');
  assert.equal(t.value?.gateway, undefined);
  assert.deepEqual(t.value?.address.hostname, { namespace: 'a', hostname: 'ghost.a.svc.cluster.local' });
  assert.equal(t.value?.address.hboneMtlsPort, 15008);
  assert.equal(t.problems.length, 1);
  assert.equal(t.problems[0]!.severity, 'error');
  assert.match(t.problems[0]!.message, /istio\.io\/use-waypoint="ghost".*Gateway a\/ghost does not exist/);
  // And the Service resource carries it to ztunnel.
  assert.equal(serviceResource(svcOf(ctx, 'web'), ctx).value?.waypoint?.hostname?.hostname, 'ghost.a.svc.cluster.local');
});

test('a label naming a Gateway that is not a waypoint fails closed too', () => {
  const ctx = ctxOf([namespace('a'), gateway('ingress', 'a', { className: 'istio' }), pod('p', 'a', { 'istio.io/use-waypoint': 'ingress' })]);
  const t = podWaypoint(podOf(ctx, 'p'), ctx);
  assert.equal(t.value?.address.hostname?.hostname, 'ingress.a.svc.cluster.local');
  assert.match(t.problems[0]!.message, /not a waypoint/);
});

test('a namespace label naming a missing waypoint fails closed for pods as well, reported once by the services', () => {
  const ctx = ctxOf([namespace('a', { 'istio.io/use-waypoint': 'ghost' }), service('web', 'a'), pod('p', 'a'), pod('q', 'a')]);
  assert.equal(podWaypoint(podOf(ctx, 'p'), ctx).value?.key, 'a/ghost');
  assert.deepEqual(podWaypoint(podOf(ctx, 'p'), ctx).problems, []);
  const s = serviceWaypoint(svcOf(ctx, 'web'), ctx);
  assert.equal(s.value?.key, 'a/ghost');
  assert.match(s.problems[0]!.message, /on namespace a: Gateway a\/ghost does not exist; its traffic and that of the namespace's pods is refused/);
});

test('`none` on the object opts out of its namespace\'s waypoint; `none` on the namespace leaves objects\' own labels', () => {
  const ctx = ctxOf([
    namespace('a', { 'istio.io/use-waypoint': 'wp' }),
    namespace('b', { 'istio.io/use-waypoint': 'none' }),
    gateway('wp', 'a', { labels: { 'istio.io/waypoint-for': 'all' } }),
    gateway('wp', 'b'),
    service('out', 'a', { 'istio.io/use-waypoint': 'none' }),
    service('in', 'a'),
    pod('out', 'a', { 'istio.io/use-waypoint': 'none' }),
    service('quiet', 'b'),
    service('own', 'b', { 'istio.io/use-waypoint': 'wp' }),
  ]);
  const svc = (ns: string, name: string): Service => ctx.view.services.find((s) => s.metadata.namespace === ns && s.metadata.name === name)!;
  assert.equal(serviceWaypoint(svc('a', 'out'), ctx).value, undefined);
  assert.equal(serviceWaypoint(svc('a', 'in'), ctx).value?.key, 'a/wp');
  assert.equal(podWaypoint(podOf(ctx, 'out'), ctx).value, undefined);
  assert.equal(serviceWaypoint(svc('b', 'quiet'), ctx).value, undefined);
  assert.equal(serviceWaypoint(svc('b', 'own'), ctx).value?.key, 'b/wp');
});

test('waypoint-for: an object\'s own label on a waypoint that refuses its kind of traffic fails closed; the namespace\'s label and waypoint-for none bind nothing', () => {
  const ctx = ctxOf([
    namespace('a', { 'istio.io/use-waypoint': 'svc-only' }),
    gateway('svc-only', 'a'),
    gateway('wl-only', 'a', { labels: { 'istio.io/waypoint-for': 'workload' }, listeners: [{ name: 'mesh', port: 15009, protocol: 'HBONE' }] }),
    gateway('nothing', 'a', { labels: { 'istio.io/waypoint-for': 'none' } }),
    gateway('odd', 'a', { labels: { 'istio.io/waypoint-for': 'everything' } }),
    service('web', 'a'),
    service('pinned', 'a', { 'istio.io/use-waypoint': 'wl-only' }),
    service('quiet', 'a', { 'istio.io/use-waypoint': 'nothing' }),
    pod('p', 'a'),
    pod('pinned', 'a', { 'istio.io/use-waypoint': 'wl-only' }),
    pod('svc-bound', 'a', { 'istio.io/use-waypoint': 'svc-only' }),
    pod('mis', 'a', { 'istio.io/use-waypoint': 'nothing' }),
    pod('odd', 'a', { 'istio.io/use-waypoint': 'odd' }),
  ]);
  assert.equal(serviceWaypoint(svcOf(ctx, 'web'), ctx).value?.key, 'a/svc-only');
  // The namespace's service waypoint leaves its pods alone: designed, no problem.
  assert.deepEqual(podWaypoint(podOf(ctx, 'p'), ctx), { value: undefined, problems: [] });
  // A service pinned to a workload-only waypoint: hostname address, no usable gateway, error.
  const s = serviceWaypoint(svcOf(ctx, 'pinned'), ctx);
  assert.equal(s.value?.key, 'a/wl-only');
  assert.equal(s.value?.gateway, undefined);
  assert.equal(s.value?.unusable, 'has istio.io/waypoint-for=workload and does not take service traffic');
  assert.deepEqual(s.value?.address.hostname, { namespace: 'a', hostname: 'wl-only.a.svc.cluster.local' });
  assert.equal(s.value?.address.hboneMtlsPort, 15009);
  assert.equal(s.problems.length, 1);
  assert.equal(s.problems[0]!.severity, 'error');
  assert.deepEqual(s.problems[0]!.object, { kind: 'Service', namespace: 'a', name: 'pinned' });
  assert.match(s.problems[0]!.message, /label istio\.io\/use-waypoint="wl-only": waypoint a\/wl-only has istio\.io\/waypoint-for=workload and does not take service traffic; its traffic is refused/);
  assert.equal(serviceResource(svcOf(ctx, 'pinned'), ctx).value?.waypoint?.hostname?.hostname, 'wl-only.a.svc.cluster.local');
  // A pod pinned to a service-only waypoint: the same.
  const sb = podWaypoint(podOf(ctx, 'svc-bound'), ctx);
  assert.equal(sb.value?.gateway, undefined);
  assert.equal(sb.value?.address.hostname?.hostname, 'svc-only.a.svc.cluster.local');
  assert.match(sb.problems[0]!.message, /waypoint-for=service and does not take workload \(pod\) traffic/);
  assert.equal(podWaypoint(podOf(ctx, 'pinned'), ctx).value?.gateway?.metadata.name, 'wl-only');
  // waypoint-for none: no waypoint (as Istio), an error for the own label.
  assert.equal(podWaypoint(podOf(ctx, 'mis'), ctx).value, undefined);
  assert.equal(podWaypoint(podOf(ctx, 'mis'), ctx).problems.length, 1);
  assert.equal(serviceWaypoint(svcOf(ctx, 'quiet'), ctx).value, undefined);
  // An unknown waypoint-for value is a mistake: fail closed.
  const odd = podWaypoint(podOf(ctx, 'odd'), ctx);
  assert.equal(odd.value?.gateway, undefined);
  assert.match(odd.problems[0]!.message, /an unknown istio\.io\/waypoint-for value "everything"/);
  // The Waypoint resources do not list what they refuse.
  const wl = waypointResource(gwOf(ctx, 'wl-only'), ctx).value!;
  assert.deepEqual(wl.services, []);
  assert.deepEqual(wl.workloads, ['Kubernetes//Pod/a/pinned']);
  const so = waypointResource(gwOf(ctx, 'svc-only'), ctx).value!;
  assert.deepEqual(so.services.map((x) => x.name), ['web']);
  assert.deepEqual(so.workloads, []);
});

test('a waypoint\'s own pods and service are never bound, even to their namespace\'s waypoint', () => {
  const ctx = ctxOf([
    namespace('a', { 'istio.io/use-waypoint': 'waypoint' }),
    gateway('waypoint', 'a', { labels: { 'istio.io/waypoint-for': 'all' } }),
    service('waypoint', 'a', { 'gateway.istio.io/managed': 'istio.io-mesh-controller', 'gateway.networking.k8s.io/gateway-name': 'waypoint' }),
    pod('waypoint-x', 'a', { 'gateway.networking.k8s.io/gateway-name': 'waypoint', 'istio.io/dataplane-mode': 'none' }),
  ]);
  assert.deepEqual(serviceWaypoint(svcOf(ctx, 'waypoint'), ctx), { value: undefined, problems: [] });
  assert.deepEqual(podWaypoint(podOf(ctx, 'waypoint-x'), ctx), { value: undefined, problems: [] });
});

test('use-waypoint-namespace binds across namespaces only where the HBONE listener admits the namespace; a refused one fails closed', () => {
  const ctx = ctxOf([
    namespace('infra'),
    namespace('blue', { team: 'blue' }),
    namespace('green', { 'istio.io/use-waypoint': 'closed', 'istio.io/use-waypoint-namespace': 'infra' }),
    gateway('open', 'infra', { listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE', allowedRoutes: { namespaces: { from: 'All' } } }] }),
    gateway('closed', 'infra', { labels: { 'istio.io/waypoint-for': 'all' } }),
    gateway('picky', 'infra', { listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE', allowedRoutes: { namespaces: { from: 'Selector', selector: { matchExpressions: [{ key: 'team', operator: 'In', values: ['blue'] }] } } } }] }),
    service('a', 'blue', { 'istio.io/use-waypoint': 'open', 'istio.io/use-waypoint-namespace': 'infra' }),
    service('b', 'blue', { 'istio.io/use-waypoint': 'closed', 'istio.io/use-waypoint-namespace': 'infra' }),
    service('c', 'blue', { 'istio.io/use-waypoint': 'picky', 'istio.io/use-waypoint-namespace': 'infra' }),
    service('g', 'green'),
    pod('g-0', 'green'),
  ]);
  assert.deepEqual(serviceWaypoint(svcOf(ctx, 'a'), ctx).value?.address.hostname, { namespace: 'infra', hostname: 'open.infra.svc.cluster.local' });
  const b = serviceWaypoint(svcOf(ctx, 'b'), ctx);
  assert.equal(b.value?.key, 'infra/closed');
  assert.equal(b.value?.gateway, undefined);
  assert.deepEqual(b.value?.address.hostname, { namespace: 'infra', hostname: 'closed.infra.svc.cluster.local' });
  assert.match(b.problems[0]!.message, /does not admit namespace blue/);
  assert.match(b.problems[0]!.message, /refused/);
  assert.equal(serviceWaypoint(svcOf(ctx, 'c'), ctx).value?.key, 'infra/picky');
  // The namespace's label refused: services report it, pods fail closed silently.
  assert.equal(serviceWaypoint(svcOf(ctx, 'g'), ctx).value?.gateway, undefined);
  assert.equal(serviceWaypoint(svcOf(ctx, 'g'), ctx).problems.length, 1);
  assert.deepEqual(podWaypoint(podOf(ctx, 'g-0'), ctx).value?.address.hostname, { namespace: 'infra', hostname: 'closed.infra.svc.cluster.local' });
  assert.deepEqual(podWaypoint(podOf(ctx, 'g-0'), ctx).problems, []);
  assert.deepEqual(waypointResource(gwOf(ctx, 'closed'), ctx).value!.services, []);
  assert.deepEqual(waypointResource(gwOf(ctx, 'closed'), ctx).value!.workloads, []);
});

test('hbonePort: the HBONE listener on 15008 if there is one, else the first HBONE listener, else 15008', () => {
  const cases: [unknown[], number][] = [
    [[{ name: 'mesh', port: 15008, protocol: 'HBONE' }], 15008],
    [[{ name: 'x', port: 15010, protocol: 'HBONE' }, { name: 'mesh', port: 15008, protocol: 'HBONE' }], 15008],
    [[{ name: 'x', port: 15010, protocol: 'HBONE' }, { name: 'y', port: 15011, protocol: 'HBONE' }], 15010],
    [[{ name: 'http', port: 80, protocol: 'HTTP' }, { name: 'bad', port: 'x', protocol: 'HBONE' }, { name: 'y', port: 15011, protocol: 'HBONE' }], 15011],
    [[{ name: 'http', port: 80, protocol: 'HTTP' }], 15008],
    [[], 15008],
  ];
  for (const [listeners, want] of cases) {
    const ctx = ctxOf([gateway('w', 'a', { listeners })]);
    assert.equal(hbonePort(gwOf(ctx, 'w')), want, JSON.stringify(listeners));
    assert.equal(waypointResource(gwOf(ctx, 'w'), ctx).value!.hbonePort, want);
  }
});

test('the address: status Hostname first, then status IPAddress, else the service hostname; the HBONE listener\'s port', () => {
  const ctx = ctxOf([
    namespace('a'),
    gateway('h', 'a', { status: { addresses: [{ type: 'IPAddress', value: '10.96.0.5' }, { type: 'Hostname', value: 'h.a.svc.example' }] } }),
    gateway('i', 'a', { status: { addresses: [{ type: 'IPAddress', value: '10.96.0.6' }] }, listeners: [{ name: 'x', port: 80, protocol: 'HTTP' }, { name: 'mesh', port: 15010, protocol: 'HBONE' }] }),
    gateway('n', 'a'),
    service('h', 'a', { 'istio.io/use-waypoint': 'h' }),
    service('i', 'a', { 'istio.io/use-waypoint': 'i' }),
    service('n', 'a', { 'istio.io/use-waypoint': 'n' }),
  ]);
  assert.equal(serviceWaypoint(svcOf(ctx, 'h'), ctx).value?.address.hostname?.hostname, 'h.a.svc.example');
  const i = serviceWaypoint(svcOf(ctx, 'i'), ctx).value!.address;
  assert.equal(ipText(i.address!.address), '10.96.0.6');
  assert.equal(i.hboneMtlsPort, 15010);
  assert.equal(serviceWaypoint(svcOf(ctx, 'n'), ctx).value?.address.hostname?.hostname, 'n.a.svc.cluster.local');
});

test('the Waypoint resource lists what is bound to it; other Gateway classes have none', () => {
  const ctx = ctxOf([
    namespace('a', { 'istio.io/use-waypoint': 'wp' }),
    gateway('wp', 'a', { labels: { 'istio.io/waypoint-for': 'all' } }),
    gateway('ingress', 'a', { className: 'istio' }),
    service('web', 'a'),
    pod('p', 'a'),
    pod('wp-1', 'a', { 'gateway.networking.k8s.io/gateway-name': 'wp' }),
  ]);
  const w = waypointResource(gwOf(ctx, 'wp'), ctx).value!;
  assert.deepEqual(w.services.map((s) => s.hostname), ['web.a.svc.cluster.local']);
  assert.deepEqual(w.workloads, ['Kubernetes//Pod/a/p']);
  assert.deepEqual(w.identities, ['cluster.local/ns/a/sa/wp', 'cluster.local/ns/a/sa/wp-1']);
  assert.equal(w.trafficType, 'all');
  assert.equal(waypointResource(gwOf(ctx, 'ingress'), ctx).value, undefined);
});

test('routes: attached to a service without a waypoint is a warning; a consumer route is left out with an error', () => {
  const route = (name: string, ns: string, parent: Record<string, unknown>): unknown => ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: ns },
    spec: { parentRefs: [{ group: '', kind: 'Service', ...parent }], rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] },
  });
  const ctx = ctxOf([
    namespace('a', { 'istio.io/use-waypoint': 'wp' }),
    namespace('b'),
    gateway('wp', 'a'),
    service('web', 'a'),
    service('plain', 'b'),
    route('mine', 'a', { name: 'web' }),
    route('theirs', 'b', { name: 'web', namespace: 'a' }),
    route('useless', 'b', { name: 'plain' }),
  ]);
  const w = waypointResource(gwOf(ctx, 'wp'), ctx).value!;
  assert.deepEqual(w.services[0]!.routes.map((r) => `${r.namespace}/${r.name}`), ['a/mine']);
  const webProblems = serviceResource(svcOf(ctx, 'web'), ctx).problems;
  assert.deepEqual(webProblems.map((p) => [p.object.name, p.severity]), [['theirs', 'error']]);
  assert.match(webProblems[0]!.message, /consumer routes \(GAMMA\) are not supported yet/);
  const plain = serviceResource(svcOf(ctx, 'plain'), ctx).problems;
  assert.deepEqual(plain.map((p) => [p.object.name, p.severity]), [['useless', 'warning']]);
  assert.match(plain[0]!.message, /has no waypoint.*no effect until it has one/);
});

test('a route rule with a filter Ambit does not support keeps its matches and answers them with 500, so they never fall through to a less specific rule', () => {
  const route = {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'r', namespace: 'a' },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'web' }],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/admin' } }], filters: [{ type: 'ExtensionRef', extensionRef: { group: 'example.com', kind: 'Auth', name: 'sso' } }], backendRefs: [{ name: 'web', port: 80 }] },
        { matches: [{ path: { type: 'PathPrefix', value: '/beta' } }], filters: [{ type: 'Teleport' }], backendRefs: [{ name: 'web', port: 80 }] },
        { matches: [{ path: { type: 'Exact', value: '/x' } }], backendRefs: [{ name: 'web', port: 80, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'a', value: 'b' }] } }] }] },
        { backendRefs: [{ name: 'web', port: 80 }] },
      ],
    },
  };
  const ctx = ctxOf([namespace('a', { 'istio.io/use-waypoint': 'wp' }), gateway('wp', 'a'), service('web', 'a'), route]);
  const w = waypointResource(gwOf(ctx, 'wp'), ctx).value!;
  const rules = w.services[0]!.routes[0]!.rules;
  assert.equal(rules.length, 4);
  assert.deepEqual(rules[0]!.matches[0]!.path, { type: 'PathPrefix', value: '/admin' });
  assert.deepEqual([rules[0]!.filters, rules[0]!.backends], [[], []]);
  assert.match(rules[0]!.invalidReason, /^spec\.rules\[0\]\.filters\[0\]\.type: filter ExtensionRef \("Auth" "sso"\) is not supported by Ambit/);
  assert.match(rules[1]!.invalidReason, /"Teleport" is not a filter type Ambit supports/);
  // A per-backend filter: the backend fails (500 for its share), never silently unfiltered.
  assert.equal(rules[2]!.invalidReason, '');
  assert.match(rules[2]!.backends[0]!.invalidReason, /filters on a backendRef are not supported/);
  assert.equal(rules[3]!.invalidReason, '');
  const problems = waypointResource(gwOf(ctx, 'wp'), ctx).problems.filter((p) => p.object.kind === 'HTTPRoute');
  assert.deepEqual(problems.map((p) => p.severity), ['error', 'error', 'error']);
  assert.match(problems[0]!.message, /ExtensionRef.*the rule is kept for its matches, which the waypoint answers with HTTP 500/);
});
