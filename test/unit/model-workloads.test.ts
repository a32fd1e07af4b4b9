// The workload and service translations' rules most likely to regress, asserted one by one
// (the golden cases show whole outputs; these say which field must be what, and why).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { viewFromObjects } from '../../mesh/config/kinds.js';
import { buildContext, type ModelContext } from '../../controlplane/model/context.js';
import { buildModel } from '../../controlplane/model/build.js';
import { DEFAULT_MODEL_OPTIONS } from '../../controlplane/model/types.js';
import { endpointSliceWorkloads, podWorkload } from '../../controlplane/model/workloads.js';
import { serviceResource } from '../../controlplane/model/services.js';
import { waypointResource } from '../../controlplane/model/waypoints.js';
import { ipBytes } from '../../mesh/ip-text.js';
import { appProtocolOf } from '../../controlplane/model/ports.js';
import { durationMs } from '../../controlplane/model/routes.js';
import { AppProtocol, WorkloadStatus } from '../../proto/gen/istio/workload/workload.js';
import type { EndpointSlice, Pod, Service } from '../../mesh/k8s/types.js';

function ctxOf(objects: unknown[]): ModelContext {
  const { view, rejected } = viewFromObjects(objects);
  assert.deepEqual(rejected, []);
  return buildContext(view, DEFAULT_MODEL_OPTIONS);
}

function pod(name: string, labels: Record<string, string>, ports: { name: string; containerPort: number; protocol?: string }[], ip: string, extra: Record<string, unknown> = {}): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'ns', labels },
    spec: { nodeName: 'n1', containers: [{ name: 'c', ports }] },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
    ...extra,
  };
}

function service(name: string, selector: unknown, ports: unknown[], namespace = 'ns'): unknown {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { selector, clusterIP: '10.96.0.1', ports } };
}

function podNamed(ctx: ModelContext, name: string): Pod {
  return ctx.view.pods.find((p) => p.metadata.name === name)!;
}

test('a named target port resolves through each pod\'s own container ports; a pod without it leaves the port out', () => {
  const ctx = ctxOf([
    service('web', { app: 'web' }, [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'admin', port: 81, targetPort: 'admin' }]),
    pod('a', { app: 'web' }, [{ name: 'http', containerPort: 8080 }, { name: 'admin', containerPort: 9000 }], '10.0.0.1'),
    pod('b', { app: 'web' }, [{ name: 'http', containerPort: 8081 }], '10.0.0.2'),
    pod('c', { app: 'web' }, [{ name: 'http', containerPort: 8082, protocol: 'UDP' }], '10.0.0.3'),
  ]);
  const key = 'ns/web.ns.svc.cluster.local';
  assert.deepEqual(podWorkload(podNamed(ctx, 'a'), ctx).value!.services[key]!.ports.map((p) => [p.servicePort, p.targetPort]), [[80, 8080], [81, 9000]]);
  assert.deepEqual(podWorkload(podNamed(ctx, 'b'), ctx).value!.services[key]!.ports.map((p) => [p.servicePort, p.targetPort]), [[80, 8081]]);
  // Only TCP container ports resolve a name (istiod's FindPortName).
  assert.deepEqual(podWorkload(podNamed(ctx, 'c'), ctx).value!.services[key]!.ports, []);
  // The Service resource says "named" with target port 0.
  assert.deepEqual(serviceResource(ctx.view.services[0]!, ctx).value!.ports.map((p) => p.targetPort), [0, 0]);
});

test('selectors are Kubernetes equality selectors: every pair must match, extra pod labels do not matter, empty selects nothing', () => {
  const ctx = ctxOf([
    service('both', { app: 'web', tier: 'front' }, [{ port: 80 }]),
    service('empty', {}, [{ port: 80 }]),
    service('none', undefined, [{ port: 80 }]),
    service('wrong-value', { app: 'api' }, [{ port: 80 }]),
    service('bad', { app: 5 }, [{ port: 80 }]),
    service('elsewhere', { app: 'web' }, [{ port: 80 }], 'other'),
    pod('full', { app: 'web', tier: 'front', extra: 'x' }, [], '10.0.0.1'),
    pod('partial', { app: 'web' }, [], '10.0.0.2'),
  ]);
  assert.deepEqual(Object.keys(podWorkload(podNamed(ctx, 'full'), ctx).value!.services), ['ns/both.ns.svc.cluster.local']);
  assert.deepEqual(Object.keys(podWorkload(podNamed(ctx, 'partial'), ctx).value!.services), []);
  const bad = serviceResource(ctx.view.services.find((s) => s.metadata.name === 'bad')!, ctx);
  assert.ok(bad.problems.some((p) => p.severity === 'error' && p.message.startsWith('spec.selector:')));
});

test('selector-less services reach pods named by their EndpointSlices\' targetRefs; other endpoints become workloads, even at a pod\'s address (as istiod)', () => {
  const ctx = ctxOf([
    service('ext', undefined, [{ name: 'http', port: 80 }]),
    pod('p', {}, [], '10.0.0.1'),
    pod('q', {}, [], '10.0.0.2'),
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'ext-1', namespace: 'ns', labels: { 'kubernetes.io/service-name': 'ext' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 9000, protocol: 'TCP' }],
      endpoints: [
        { addresses: ['10.0.0.1'], targetRef: { kind: 'Pod', name: 'p', namespace: 'ns' } },
        { addresses: ['10.0.0.2'] },
        { addresses: ['192.168.1.1'], conditions: { ready: false } },
      ],
    },
  ]);
  const key = 'ns/ext.ns.svc.cluster.local';
  assert.deepEqual(podWorkload(podNamed(ctx, 'p'), ctx).value!.services[key]!.ports.map((p) => [p.servicePort, p.targetPort]), [[80, 9000]]);
  assert.equal(podWorkload(podNamed(ctx, 'q'), ctx).value!.services[key], undefined, 'an address alone does not make the pod an endpoint');
  const slice = ctx.view.endpointSlices[0] as EndpointSlice;
  const workloads = endpointSliceWorkloads(slice, ctx).value!;
  assert.deepEqual(workloads.map((w) => w.uid), ['Kubernetes/discovery.k8s.io/EndpointSlice/ns/ext-1/10.0.0.2', 'Kubernetes/discovery.k8s.io/EndpointSlice/ns/ext-1/192.168.1.1']);
  assert.equal(workloads[0]!.status, WorkloadStatus.HEALTHY);
  assert.equal(workloads[1]!.status, WorkloadStatus.UNHEALTHY);
});

test('finished and address-less pods are no workloads; terminating ones are, unhealthy', () => {
  const ctx = ctxOf([
    pod('done', {}, [], '10.0.0.1', { status: { phase: 'Succeeded', podIP: '10.0.0.1' } }),
    pod('failed', {}, [], '10.0.0.2', { status: { phase: 'Failed', podIP: '10.0.0.2' } }),
    pod('new', {}, [], '', { status: { phase: 'Pending' } }),
    { ...(pod('leaving', {}, [], '10.0.0.3') as Record<string, unknown>), metadata: { name: 'leaving', namespace: 'ns', deletionTimestamp: '2026-01-01T00:00:00Z' } },
  ]);
  for (const name of ['done', 'failed', 'new']) assert.equal(podWorkload(podNamed(ctx, name), ctx).value, undefined, name);
  assert.equal(podWorkload(podNamed(ctx, 'leaving'), ctx).value!.status, WorkloadStatus.UNHEALTHY);
});

test('ip text: plain IPv4 and IPv6 only', () => {
  assert.equal(ipBytes('10.1.2.3')!.toString('hex'), '0a010203');
  assert.equal(ipBytes('::ffff:10.1.2.3')!.toString('hex'), '00000000000000000000ffff0a010203');
  assert.equal(ipBytes('fd00::1')!.toString('hex'), 'fd000000000000000000000000000001');
  for (const bad of ['10.1.2.300', '010.1.2.3', '10.0.0.0/8', 'fe80::1%eth0', '', 'x', 5, null]) assert.equal(ipBytes(bad), undefined, String(bad));
});

test('app protocol: appProtocol first, then the port name prefix, as Istio', () => {
  assert.equal(appProtocolOf({ name: 'tcp-x', appProtocol: 'kubernetes.io/h2c' }), AppProtocol.HTTP2);
  assert.equal(appProtocolOf({ name: 'http-x' }), AppProtocol.HTTP11);
  assert.equal(appProtocolOf({ name: 'grpc' }), AppProtocol.GRPC);
  assert.equal(appProtocolOf({ name: 'https' }), AppProtocol.TLS);
  assert.equal(appProtocolOf({ name: 'http', protocol: 'UDP' }), AppProtocol.UNKNOWN);
  assert.equal(appProtocolOf({ name: 'db', port: 3306 }), AppProtocol.TCP);
  assert.equal(appProtocolOf({ name: 'web' }), AppProtocol.UNKNOWN);
});

test('Gateway API durations', () => {
  assert.equal(durationMs('10s'), 10_000);
  assert.equal(durationMs('500ms'), 500);
  assert.equal(durationMs('1h2m'), 3_720_000);
  assert.equal(durationMs('1h2m3s4ms'), 3_723_004);
  assert.equal(durationMs('0s'), 0);
  for (const bad of ['10', '10 s', '1.5s', '1d', '-1s', '1h2m3s4ms5ms', '123456s', '', 10]) assert.equal(durationMs(bad), undefined, String(bad));
});

test('garbage in any field never throws: the object is translated as far as it goes, with problems', () => {
  const junk: unknown[] = [null, 7, 'x', [], {}, [null], { a: null }, true, -1, 1e9, '10.0.0.300'];
  const objects: unknown[] = [];
  let n = 0;
  for (const value of junk) {
    n++;
    objects.push(
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: `p${n}`, namespace: 'ns', labels: value, annotations: value, ownerReferences: value, generateName: value }, spec: value, status: value },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: `q${n}`, namespace: 'ns', labels: { app: 'x' } }, spec: { containers: value, hostNetwork: value, serviceAccountName: value }, status: { podIP: '10.0.0.1', podIPs: value, conditions: value, phase: value } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: `s${n}`, namespace: 'ns', labels: value }, spec: { selector: value, ports: value, clusterIP: value, clusterIPs: value, ipFamilies: value, type: value } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: `t${n}`, namespace: 'ns' }, spec: { selector: { app: 'x' }, ports: [value, { port: value, targetPort: value, name: value, appProtocol: value, protocol: value }] } },
      { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: `e${n}`, namespace: 'ns', labels: { 'kubernetes.io/service-name': `t${n}` } }, addressType: value, ports: value, endpoints: [value, { addresses: value, targetRef: value, conditions: value }] },
      { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: `g${n}`, namespace: 'ns', labels: value }, spec: { gatewayClassName: 'istio-waypoint', listeners: value }, status: { addresses: value } },
      { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: `r${n}`, namespace: 'ns', creationTimestamp: value }, spec: { parentRefs: [{ group: '', kind: 'Service', name: `t${n}`, port: value, sectionName: value }], hostnames: value, rules: [value, { matches: value, filters: value, backendRefs: value, timeouts: value }, { matches: [{ path: value, headers: [value], queryParams: value, method: value }], filters: [{ type: 'RequestRedirect', requestRedirect: value }, { type: 'URLRewrite', urlRewrite: { path: value } }], backendRefs: [{ name: value, port: value, weight: value, namespace: value }] }] } },
      { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: `r${n}`, namespace: 'ns' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: `t${n}` }], rules: [{ matches: [{ method: value, headers: value }], filters: [{ type: 'RequestMirror', requestMirror: value }] }] } },
    );
  }
  objects.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns', labels: { 'istio.io/use-waypoint': 'g2' } } });
  const ctx = ctxOf(objects);
  for (const p of ctx.view.pods) podWorkload(p, ctx);
  for (const s of ctx.view.services) serviceResource(s as Service, ctx);
  for (const e of ctx.view.endpointSlices) endpointSliceWorkloads(e, ctx);
  for (const g of ctx.view.gateways) waypointResource(g, ctx);
  // And through buildModel, whose guard would turn a throw into an "internal error" problem.
  const snapshot = buildModel(ctx.view);
  assert.deepEqual(snapshot.problems.filter((p) => p.message.includes('internal error') && p.object.kind !== 'AuthorizationPolicy'), []);
});

test('10,000 pods, 1,000 services and their slices, routes and waypoints all translate', () => {
  const objects: unknown[] = [];
  for (let ns = 0; ns < 20; ns++) {
    objects.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns${ns}`, labels: ns % 2 ? { 'istio.io/use-waypoint': 'waypoint' } : {} } });
    objects.push({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: `ns${ns}` }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } });
    for (let s = 0; s < 50; s++) {
      objects.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `svc${s}`, namespace: `ns${ns}` }, spec: { selector: { app: `app${s}`, tier: 'x' }, clusterIP: `10.96.${ns}.${s}`, ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'grpc', port: 90 }] } });
      objects.push({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: `route${s}`, namespace: `ns${ns}` }, spec: { parentRefs: [{ group: '', kind: 'Service', name: `svc${s}` }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/v2' } }], backendRefs: [{ name: `svc${(s + 1) % 50}`, port: 80 }] }] } });
      for (let p = 0; p < 10; p++) {
        objects.push({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: `pod${s}-${p}`, namespace: `ns${ns}`, labels: { app: `app${s}`, tier: 'x', version: 'v1', 'pod-template-hash': 'abc' } },
          spec: { nodeName: 'n', containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
          status: { phase: 'Running', podIP: `10.${ns}.${s}.${p + 1}`, conditions: [{ type: 'Ready', status: 'True' }] },
        });
      }
    }
  }
  const { view } = viewFromObjects(objects);
  assert.equal(view.pods.length, 10_000);
  // How long this takes is measured by `npm run bench -- controlplane`, not asserted here.
  const snapshot = buildModel(view);
  assert.equal(snapshot.workloads.size, 10_000);
  assert.equal(snapshot.services.size, 1_000);
  assert.equal(snapshot.waypoints.get('ns1/waypoint')!.services.length, 50);
});
