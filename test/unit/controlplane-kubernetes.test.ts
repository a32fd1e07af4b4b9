// The whole control plane against a Kubernetes API (the list/watch fake, so the real client
// library runs): informers for every kind, the model, delta xDS to a ztunnel's client
// authenticated by TokenReview of its service account token, and policy status written back to
// the API server's status subresource.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ControlPlane } from '../../controlplane/controlplane.js';
import { DirectoryRootStore } from '../../controlplane/ca/root-store.js';
import { TokenReviewAuthenticator } from '../../controlplane/ca/kubernetes-auth.js';
import { KubernetesSource } from '../../mesh/config/sources/kubernetes.js';
import { KINDS } from '../../mesh/config/kinds.js';
import { ZtunnelDiscovery } from '../../agent/ztunnel/discovery.js';
import { XdsClient } from '../../mesh/xds/client.js';
import { WAYPOINT_TYPE } from '../../mesh/xds/types.js';
import { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { StatusCondition } from '../../mesh/k8s/types.js';
import { FakeApiServer, NAMESPACES, PODS, SERVICES, type ApiObject, type ResourceRef } from '../support/fake-apiserver.js';

const log = pino({ level: process.env.AMBIT_TEST_LOG ?? 'silent' });
const AUTHORIZATION_POLICIES: ResourceRef = { groupVersion: 'security.istio.io/v1', plural: 'authorizationpolicies' };
const GATEWAYS: ResourceRef = { groupVersion: 'gateway.networking.k8s.io/v1', plural: 'gateways' };
const HTTPROUTES: ResourceRef = { groupVersion: 'gateway.networking.k8s.io/v1', plural: 'httproutes' };

function pod(name: string, ip: string, node: string, labels: Record<string, string> = {}, namespace = 'shop'): ApiObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, uid: `uid-${name}`, labels, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
    spec: { nodeName: node, serviceAccountName: name, containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

async function until<T>(what: string, fn: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('control plane on the Kubernetes API: informers to xDS, status back', { timeout: 60_000 }, () => {
  let api: FakeApiServer;
  let cp: ControlPlane;
  let ztunnel: ZtunnelDiscovery;
  let waypoint: XdsClient;
  let dir: string;

  before(async () => {
    api = await FakeApiServer.start();
    for (const [ref, kind] of [[AUTHORIZATION_POLICIES, 'AuthorizationPolicy'], [GATEWAYS, 'Gateway'], [HTTPROUTES, 'HTTPRoute']] as const) api.serve(ref, kind);
    api.upsert(NAMESPACES, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
    api.upsert(PODS, pod('web', '10.244.1.3', 'node-1', { app: 'web' }));
    api.upsert(NAMESPACES, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ambit-system' } });
    const ztunnelPod = pod('ztunnel-node-1', '10.244.1.2', 'node-1', {}, 'ambit-system');
    (ztunnelPod.spec as { serviceAccountName: string }).serviceAccountName = 'ztunnel';
    api.upsert(PODS, ztunnelPod);
    api.upsert(SERVICES, { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop', labels: { 'istio.io/use-waypoint': 'waypoint' } }, spec: { selector: { app: 'web' }, clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 'http' }] } });
    api.upsert(GATEWAYS, { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'shop' }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } });
    // The ztunnel's projected service account token, as TokenReview reports it.
    api.tokens.set('ztunnel-token', {
      user: { username: 'system:serviceaccount:ambit-system:ztunnel', groups: ['system:serviceaccounts'], extra: { 'authentication.kubernetes.io/pod-name': ['ztunnel-node-1'], 'authentication.kubernetes.io/pod-uid': ['uid-ztunnel-node-1'], 'authentication.kubernetes.io/node-name': ['node-1'] } },
      audiences: ['istio-ca'],
    });
    dir = mkdtempSync(join(tmpdir(), 'ambit-cp-k8s-'));
    const source = new KubernetesSource({ kubeConfig: api.kubeConfig(), kinds: KINDS, log });
    cp = await ControlPlane.start({
      stateDir: dir,
      trustDomain: 'cluster.local',
      clusterId: 'Kubernetes',
      host: '127.0.0.1',
      port: 0,
      healthPort: 0,
      servingNames: [],
      servingIPs: ['127.0.0.1'],
      source,
      authenticator: new TokenReviewAuthenticator({ kubeConfig: api.kubeConfig(), pods: () => source.current().pods, trustDomain: 'cluster.local', trustedNodeAccounts: ['ambit-system/ztunnel'], log }),
      rootStore: new DirectoryRootStore(join(dir, 'ca')),
      log,
    });
    const address = `127.0.0.1:${cp.port}`;
    const rootCert = cp.authority.trustBundle;
    ztunnel = new ZtunnelDiscovery({ address, rootCert, token: () => 'ztunnel-token', clusterId: 'Kubernetes', node: 'node-1', instanceIp: '10.244.1.2', podName: 'ztunnel-node-1', podNamespace: 'ambit-system', log });
    ztunnel.start();
    waypoint = new XdsClient({ address, rootCert, token: () => 'ztunnel-token', node: { id: 'waypoint~10.244.1.9~waypoint.shop~shop.svc.cluster.local' }, types: [{ typeUrl: WAYPOINT_TYPE, decode: (b) => Waypoint.decode(b), names: ['shop/waypoint'] }], log });
    waypoint.start();
    await until('both clients to have their initial state', () => ztunnel.client.isReady() && waypoint.isReady(), 15_000);
  });

  after(async () => {
    ztunnel?.close();
    waypoint?.close();
    await cp?.stop();
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the initial state from the API reaches the ztunnel: workloads, services with their waypoint', () => {
    const dump = ztunnel.dump();
    const web = dump.workloads.find((w) => w.name === 'web');
    assert.ok(web, 'the web pod is a workload');
    assert.equal(web.protocol, 'HBONE');
    assert.deepEqual(web.services, { 'shop/web.shop.svc.cluster.local': { '80': 8080 } });
    const svc = dump.services.find((s) => s.name === 'web');
    assert.equal(svc?.waypoint, 'shop/waypoint.shop.svc.cluster.local:15008');
  });

  test('a pod created through the API reaches the ztunnel; its deletion too', async () => {
    api.upsert(PODS, pod('web-2', '10.244.2.3', 'node-2', { app: 'web' }));
    await until('web-2 at the ztunnel', () => ztunnel.dump().workloads.find((w) => w.name === 'web-2'));
    api.remove(PODS, 'web-2', 'shop');
    await until('web-2 gone', () => !ztunnel.dump().workloads.some((w) => w.name === 'web-2'));
  });

  test('a policy reaches the ztunnel and its status is patched into the API object', async () => {
    api.upsert(AUTHORIZATION_POLICIES, {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'web-get', namespace: 'shop' },
      spec: { selector: { matchLabels: { app: 'web' } }, rules: [{ to: [{ operation: { methods: ['GET'], ports: ['8080'] } }] }] },
    });
    const policy = await until('the policy at the ztunnel', () => ztunnel.dump().policies.find((p) => p.name === 'web-get'));
    assert.deepEqual(policy.rules, [], 'its only rule needs HTTP: dropped from the ALLOW');
    const stored = await until('the status in the API', () => (api.get(AUTHORIZATION_POLICIES, 'web-get', 'shop')?.status as { conditions?: StatusCondition[] } | undefined)?.conditions);
    assert.equal(stored[0]!.type, 'ZtunnelAccepted');
    assert.equal(stored[0]!.reason, 'UnsupportedValue');
    assert.match(stored[0]!.message, /methods/);
    const patches = api.requestsMatching({ method: 'PATCH', path: '/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/web-get/status' });
    assert.equal(patches.length, 1, 'written once: our own status update does not loop');
  });

  test('a route and a waypoint policy reach the waypoint that subscribed to its own resource by name', async () => {
    api.upsert(HTTPROUTES, { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web' }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/v2' } }], backendRefs: [{ name: 'web', port: 80 }] }] } });
    api.upsert(AUTHORIZATION_POLICIES, { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'web-l7', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] } });
    const w = await until('route and policy at the waypoint', () => {
      const r = waypoint.get<Waypoint>(WAYPOINT_TYPE, 'shop/waypoint');
      return r && r.services[0]?.routes.length === 1 && r.policies.length === 1 ? r : undefined;
    });
    assert.equal(w.services[0]!.hostname, 'web.shop.svc.cluster.local');
    assert.equal(w.services[0]!.routes[0]!.rules[0]!.matches[0]!.path?.value, '/v2');
    assert.equal(w.policies[0]!.action, 'DENY');
    assert.ok(!ztunnel.dump().policies.some((p) => p.name === 'web-l7'), 'a targetRefs policy is never sent to ztunnel');
    const status = await until('WaypointAccepted in the API', () => (api.get(AUTHORIZATION_POLICIES, 'web-l7', 'shop')?.status as { conditions?: StatusCondition[] } | undefined)?.conditions);
    assert.equal(status[0]!.type, 'WaypointAccepted');
    assert.equal(status[0]!.status, 'True');
  });

  test('after the watch history is compacted (410 Gone), the relist brings the changes made meanwhile', async () => {
    api.upsert(PODS, pod('web-3', '10.244.2.4', 'node-2', { app: 'web' }), { notify: false });
    api.expireWatches();
    await until('web-3 after the relist', () => ztunnel.dump().workloads.find((w) => w.name === 'web-3'));
  });
});
