// The Kubernetes source reading every kind the control plane needs, against a local API server
// that speaks list/watch (so the real client library runs): Istio and Gateway API CRDs found by
// version negotiation, the watch protocol per kind, object identity across views, and policy
// status written back through the status subresource.

import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino, type Logger } from 'pino';
import { KINDS } from '../../mesh/config/kinds.js';
import type { ClusterView } from '../../mesh/config/view.js';
import { KubernetesSource } from '../../mesh/config/sources/kubernetes.js';
import type { StatusCondition } from '../../mesh/k8s/types.js';
import { ENDPOINTSLICES, FakeApiServer, NAMESPACES, SERVICES, type ApiObject, type ResourceRef } from '../support/fake-apiserver.js';

const fastBackoff = { initialMs: 20, maxMs: 200 };
const REPROBE_MS = 100;

const AP_V1: ResourceRef = { groupVersion: 'security.istio.io/v1', plural: 'authorizationpolicies' };
const AP_V1BETA1: ResourceRef = { groupVersion: 'security.istio.io/v1beta1', plural: 'authorizationpolicies' };
const HTTPROUTES: ResourceRef = { groupVersion: 'gateway.networking.k8s.io/v1', plural: 'httproutes' };
const AP_STATUS = '/apis/security.istio.io/v1/namespaces/apps/authorizationpolicies/deny/status';

function policy(name: string, extra: Partial<ApiObject> = {}): ApiObject {
  return {
    metadata: { name, namespace: 'apps' },
    spec: { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'] } }] }] },
    ...extra,
  };
}

function route(name: string, backend = 'web'): ApiObject {
  return {
    metadata: { name, namespace: 'apps' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ backendRefs: [{ name: backend, port: 80 }] }] },
  };
}

function slice(name: string, ip: string): ApiObject {
  return {
    metadata: { name, namespace: 'apps', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready: true } }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

function service(name: string): ApiObject {
  return { metadata: { name, namespace: 'apps' }, spec: { selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort: 8080 }], clusterIP: '10.96.0.10' } };
}

function names(objects: readonly { metadata: { name: string; namespace?: string } }[]): string[] {
  return objects.map((o) => `${o.metadata.namespace}/${o.metadata.name}`);
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A logger whose lines the test can read. */
function capturingLog(): { log: Logger; lines: () => { msg: string; kind?: string }[] } {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  return { log, lines: () => lines.map((l) => JSON.parse(l) as { msg: string; kind?: string }) };
}

describe('KubernetesSource with every kind', { timeout: 30_000 }, () => {
  let api: FakeApiServer;
  let source: KubernetesSource;
  let changes: ClusterView[];
  let errors: Error[];
  let logs: ReturnType<typeof capturingLog>;

  beforeEach(async () => {
    api = await FakeApiServer.start();
    // Istio's v1 and the Gateway API's HTTPRoute are installed; PeerAuthentication, Gateway and GRPCRoute are not.
    api.serve(AP_V1, 'AuthorizationPolicy');
    api.serve(HTTPROUTES, 'HTTPRoute');
    api.upsert(NAMESPACES, { metadata: { name: 'apps' } });
    api.upsert(SERVICES, service('web'));
    api.upsert(ENDPOINTSLICES, slice('web-1', '10.244.1.3'));
    api.upsert(ENDPOINTSLICES, slice('web-2', '10.244.2.3'));
    api.upsert(AP_V1, policy('deny'));
    api.upsert(AP_V1, policy('other'));
    api.upsert(HTTPROUTES, route('web-route'));
    changes = [];
    errors = [];
    logs = capturingLog();
    source = new KubernetesSource({ kubeConfig: api.kubeConfig(), kinds: KINDS, log: logs.log, backoff: fastBackoff, reprobeIntervalMs: REPROBE_MS });
    source.onChange((view) => changes.push(view));
    source.onError((err) => errors.push(err));
  });

  afterEach(async () => {
    await source.close();
    await api.close();
  });

  async function started(): Promise<ClusterView> {
    await source.start();
    // Namespace, Pod, Service, EndpointSlice, AuthorizationPolicy and HTTPRoute are served.
    await waitFor('the watches of the served kinds', () => api.watchCount() === 6);
    return source.current();
  }

  it('lists every served kind with apiVersion and kind set, and reads unserved CRDs as empty', async () => {
    const view = await started();
    assert.deepEqual(names(view.authorizationPolicies), ['apps/deny', 'apps/other']);
    assert.deepEqual(names(view.httpRoutes), ['apps/web-route']);
    assert.deepEqual(names(view.endpointSlices), ['apps/web-1', 'apps/web-2']);
    assert.deepEqual(names(view.services), ['apps/web']);
    assert.deepEqual([view.peerAuthentications.length, view.gateways.length, view.grpcRoutes.length], [0, 0, 0]);
    // List items come without apiVersion and kind; the view's objects have them.
    assert.equal(view.authorizationPolicies[0]?.apiVersion, 'security.istio.io/v1');
    assert.equal(view.authorizationPolicies[0]?.kind, 'AuthorizationPolicy');
    assert.equal(view.httpRoutes[0]?.apiVersion, 'gateway.networking.k8s.io/v1');
    assert.equal(view.httpRoutes[0]?.kind, 'HTTPRoute');
    assert.equal(view.endpointSlices[0]?.apiVersion, 'discovery.k8s.io/v1');
    assert.equal(view.endpointSlices[0]?.kind, 'EndpointSlice');
    assert.equal(view.endpointSlices[0]?.endpoints[0]?.addresses[0], '10.244.1.3');
    assert.equal(view.services[0]?.kind, 'Service');
    assert.equal(view.authorizationPolicies[0]?.spec.action, 'DENY');

    // Each listed once, at the version served; unserved versions were tried in preference order.
    const lists = (path: string) => api.requestsMatching({ method: 'GET', path, watch: false }).length;
    assert.equal(lists('/apis/security.istio.io/v1/authorizationpolicies'), 1);
    assert.equal(lists('/apis/security.istio.io/v1beta1/authorizationpolicies'), 0, 'v1 is served: v1beta1 is not asked for');
    assert.equal(lists('/apis/security.istio.io/v1/peerauthentications'), 1);
    assert.equal(lists('/apis/security.istio.io/v1beta1/peerauthentications'), 1);
    assert.equal(lists('/apis/discovery.k8s.io/v1/endpointslices'), 1);
    assert.equal(api.watchCount(AP_V1), 1);
    assert.equal(api.watchCount(ENDPOINTSLICES), 1);
    const missing = logs.lines().filter((l) => l.msg.includes('not served'));
    assert.deepEqual(missing.map((l) => l.kind).sort(), ['GRPCRoute', 'Gateway', 'PeerAuthentication']);
    assert.equal(errors.length, 0, 'a missing CRD is not an error');
  });

  it('passes ADDED, MODIFIED and DELETED of each kind to the view, keeping unchanged objects and lists', async () => {
    const before = await started();
    api.upsert(AP_V1, policy('added'));
    api.upsert(HTTPROUTES, route('web-route', 'web-v2'));
    api.remove(ENDPOINTSLICES, 'web-2', 'apps');
    const after = await waitFor('all three events', () => {
      const v = source.current();
      return v.authorizationPolicies.length === 3 && v.endpointSlices.length === 1 && v.httpRoutes[0]?.spec.rules?.[0]?.backendRefs?.[0]?.name === 'web-v2' && v;
    });
    assert.deepEqual(names(after.authorizationPolicies), ['apps/added', 'apps/deny', 'apps/other']);
    assert.deepEqual(names(after.endpointSlices), ['apps/web-1']);
    assert.equal(after.authorizationPolicies[1], before.authorizationPolicies[0], 'an unchanged policy is the same object');
    assert.equal(after.endpointSlices[0], before.endpointSlices[0], 'an unchanged slice is the same object');
    assert.notEqual(after.httpRoutes[0], before.httpRoutes[0], 'a changed route is a new object');
    assert.equal(after.services, before.services, 'an unchanged kind keeps its list');
    assert.equal(after.namespaces, before.namespaces);
    assert.deepEqual(names(before.authorizationPolicies), ['apps/deny', 'apps/other'], 'a view handed out earlier does not change');
    assert.equal(errors.length, 0);
  });

  it('advances the resourceVersion on a BOOKMARK without changing the view', async () => {
    const view = await started();
    // Changes whose events never reach the watch: only the bookmark's resourceVersion moves on.
    api.upsert(AP_V1, policy('unseen'), { notify: false });
    api.upsert(NAMESPACES, { metadata: { name: 'unseen' } }, { notify: false });
    const bookmarkRv = api.resourceVersion;
    api.bookmark();
    await sleep(50);
    api.endWatches();
    await waitFor('re-watch', () => api.requestsMatching({ path: AP_V1_PATH, watch: true }).length === 2 && api.watchCount(AP_V1) === 1);
    const rewatch = api.requestsMatching({ path: AP_V1_PATH, watch: true })[1];
    assert.equal(rewatch?.query.get('resourceVersion'), bookmarkRv, 'the watch resumes from the bookmark');
    assert.equal(api.requestsMatching({ path: AP_V1_PATH, watch: false }).length, 1, 'no relist');
    await sleep(50);
    assert.equal(changes.length, 0, 'a bookmark is not a change');
    assert.equal(source.current(), view);
  });

  for (const mode of ['event', 'status'] as const) {
    it(`relists every kind after 410 Gone (${mode === 'event' ? 'ERROR event' : 'HTTP status'}), finding the changes made meanwhile`, async () => {
      const before = await started();
      api.upsert(AP_V1, policy('late'), { notify: false });
      api.remove(AP_V1, 'other', 'apps', { notify: false });
      api.remove(ENDPOINTSLICES, 'web-1', 'apps', { notify: false });
      api.upsert(HTTPROUTES, route('web-route', 'web-v3'), { notify: false });
      api.expireWatches(mode);
      const after = await waitFor('the relisted view', () => {
        const v = source.current();
        return names(v.authorizationPolicies).join() === 'apps/deny,apps/late' && names(v.endpointSlices).join() === 'apps/web-2' && v.httpRoutes[0]?.spec.rules?.[0]?.backendRefs?.[0]?.name === 'web-v3' && v;
      });
      assert.equal(api.requestsMatching({ path: AP_V1_PATH, watch: false }).length, 2, 'policies were listed again');
      assert.equal(after.authorizationPolicies[0], before.authorizationPolicies[0], 'a policy the relist found unchanged is the same object');
      assert.equal(after.endpointSlices[0], before.endpointSlices[1]);
      await waitFor('watches again', () => api.watchCount() === 6);
      api.upsert(AP_V1, policy('after'));
      await waitFor('events flow after the relist', () => names(source.current().authorizationPolicies).includes('apps/after'));
      assert.equal(errors.length, 0, '410 is part of the protocol, not an error');
    });
  }

  it('reports a malformed object by kind and name, leaves it out, and keeps the rest', async () => {
    api.upsert(AP_V1, policy('broken', { spec: ['not', 'a', 'map'] }));
    api.upsert(ENDPOINTSLICES, { ...slice('', '10.244.1.9'), metadata: { name: '', namespace: 'apps' } });
    const view = await started();
    assert.deepEqual(names(view.authorizationPolicies), ['apps/deny', 'apps/other']);
    assert.deepEqual(names(view.endpointSlices), ['apps/web-1', 'apps/web-2']);
    assert.deepEqual(errors.map((e) => e.message).sort(), [
      'AuthorizationPolicy apps/broken: spec: must be a map, got a list; left out of the view',
      'EndpointSlice apps/<no name>: metadata.name: is required; left out of the view',
    ]);

    // A malformed update: reported, and the last good version stays (as a refused update would leave it).
    const good = view.httpRoutes[0];
    api.upsert(HTTPROUTES, { metadata: { name: 'web-route', namespace: 'apps' }, spec: 'x' });
    api.upsert(AP_V1, policy('fine'));
    await waitFor('the next policy', () => names(source.current().authorizationPolicies).includes('apps/fine'));
    await waitFor('the third error', () => errors.length === 3);
    assert.match(errors[2]?.message ?? '', /^HTTPRoute apps\/web-route: spec: must be a map, got "x"/);
    assert.equal(source.current().httpRoutes[0], good);
  });

  describe('policy status', () => {
    const accepted: StatusCondition = { type: 'ZtunnelAccepted', status: 'True', reason: 'Accepted', message: 'enforced by ztunnel' };

    function patches(path = AP_STATUS) {
      return api.requestsMatching({ method: 'PATCH', path });
    }

    it('merge-patches the status subresource once, and not again while the conditions are the same', async () => {
      const view = await started();
      const started_ = Date.now();
      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [accepted]);
      assert.equal(patches().length, 1);
      assert.equal(patches()[0]?.headers['content-type'], 'application/merge-patch+json');
      const body = JSON.parse(patches()[0]?.body ?? '') as { status: { conditions: StatusCondition[] } };
      assert.deepEqual(Object.keys(body), ['status'], 'only the status is patched');
      const written = body.status.conditions[0]!;
      assert.deepEqual({ ...written, lastTransitionTime: undefined }, { ...accepted, lastTransitionTime: undefined });
      assert.ok(Math.abs(Date.parse(written.lastTransitionTime!) - started_) < 2000, 'a new condition is dated now');
      assert.deepEqual(api.get(AP_V1, 'deny', 'apps')?.status, { conditions: [written] });
      assert.deepEqual(api.get(AP_V1, 'deny', 'apps')?.spec, policy('deny').spec, 'the spec is untouched');

      // Our own write comes back as a MODIFIED event: the view keeps its object. A later event on
      // the same watch shows the MODIFIED one was processed.
      api.upsert(AP_V1, policy('marker'));
      const after = await waitFor('the marker', () => source.current().authorizationPolicies.find((p) => p.metadata.name === 'marker') && source.current());
      assert.equal(after.authorizationPolicies.find((p) => p.metadata.name === 'deny'), view.authorizationPolicies[0], 'a status write is not a change of the view');
      assert.equal(changes.length, 1, 'one change: the marker');

      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [{ ...accepted }]);
      assert.equal(patches().length, 1, 'the same conditions are not written again');
    });

    it('keeps lastTransitionTime while a condition\'s status stays, and dates a change of status', async () => {
      const old = { ...accepted, lastTransitionTime: '2020-01-01T00:00:00Z' };
      api.upsert(AP_V1, policy('deny', { status: { conditions: [old] } }));
      await started();
      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [accepted]);
      assert.equal(patches().length, 0, 'the policy already has these conditions');

      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [{ ...accepted, message: 'enforced by ztunnel; 1 rule dropped' }]);
      assert.equal(patches().length, 1);
      const kept = (JSON.parse(patches()[0]?.body ?? '') as { status: { conditions: StatusCondition[] } }).status.conditions[0];
      assert.equal(kept?.lastTransitionTime, '2020-01-01T00:00:00Z', 'same status: the transition time stays');
      assert.equal(kept?.message, 'enforced by ztunnel; 1 rule dropped');

      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [{ ...accepted, status: 'False', reason: 'Invalid' }]);
      assert.equal(patches().length, 2);
      const flipped = (JSON.parse(patches()[1]?.body ?? '') as { status: { conditions: StatusCondition[] } }).status.conditions[0];
      assert.ok(Date.parse(flipped?.lastTransitionTime ?? '') > Date.parse('2024-01-01T00:00:00Z'), `a new status is dated now, got ${flipped?.lastTransitionTime}`);
    });

    it('retries a failed write with backoff, the latest conditions winning; a deleted policy or a refused write ends it', async () => {
      await started();
      api.failRequests({ method: 'PATCH', status: 500, times: 2 });
      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [accepted]);
      const latest = { ...accepted, message: 'latest' };
      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [latest]);
      await waitFor('the latest status written', () => (api.get(AP_V1, 'deny', 'apps')?.status as { conditions?: StatusCondition[] } | undefined)?.conditions?.[0]?.message === 'latest');
      assert.equal(patches().length, 3);

      // Deleted meanwhile: one attempt, then nothing.
      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'ghost' }, [accepted]);
      // Refused as invalid: logged and dropped, not retried.
      api.failRequests({ method: 'PATCH', pathPrefix: '/apis/security.istio.io/v1/namespaces/apps/authorizationpolicies/other', status: 422 });
      await source.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'other' }, [accepted]);
      await sleep(150);
      assert.equal(patches('/apis/security.istio.io/v1/namespaces/apps/authorizationpolicies/ghost/status').length, 1);
      assert.equal(patches('/apis/security.istio.io/v1/namespaces/apps/authorizationpolicies/other/status').length, 1);
    });
  });
});

const AP_V1_PATH = '/apis/security.istio.io/v1/authorizationpolicies';

describe('KubernetesSource version negotiation', { timeout: 30_000 }, () => {
  let api: FakeApiServer;
  let source: KubernetesSource | undefined;

  beforeEach(async () => {
    api = await FakeApiServer.start();
    api.upsert(NAMESPACES, { metadata: { name: 'apps' } });
  });

  afterEach(async () => {
    await source?.close();
    source = undefined;
    await api.close();
  });

  function start(log: Logger = pino({ level: 'silent' })): KubernetesSource {
    source = new KubernetesSource({ kubeConfig: api.kubeConfig(), kinds: KINDS, log, backoff: fastBackoff, reprobeIntervalMs: REPROBE_MS });
    return source;
  }

  it('uses v1beta1 when v1 is not served, and writes status there', async () => {
    api.serve(AP_V1BETA1, 'AuthorizationPolicy');
    api.upsert(AP_V1BETA1, policy('deny'));
    const s = start();
    await s.start();
    const view = s.current();
    assert.deepEqual(names(view.authorizationPolicies), ['apps/deny']);
    assert.equal(view.authorizationPolicies[0]?.apiVersion, 'security.istio.io/v1beta1');
    assert.equal(api.requestsMatching({ method: 'GET', path: AP_V1_PATH }).length, 1, 'v1 was asked for first');
    await waitFor('the v1beta1 watch', () => api.watchCount(AP_V1BETA1) === 1);
    api.upsert(AP_V1BETA1, policy('second'));
    await waitFor('a watched policy', () => s.current().authorizationPolicies.length === 2);

    await s.recordStatus({ kind: 'AuthorizationPolicy', namespace: 'apps', name: 'deny' }, [{ type: 'ZtunnelAccepted', status: 'True', reason: 'Accepted', message: 'ok' }]);
    assert.equal(api.requestsMatching({ method: 'PATCH', path: '/apis/security.istio.io/v1beta1/namespaces/apps/authorizationpolicies/deny/status' }).length, 1);
  });

  it('is ready with no version served, says so once, and picks the CRD up when it is installed; a removed CRD empties the kind', async () => {
    const logs = capturingLog();
    const s = start(logs.log);
    const errors: Error[] = [];
    s.onError((err) => errors.push(err));
    await s.start();
    assert.deepEqual(s.current().authorizationPolicies, []);
    await sleep(REPROBE_MS * 4);
    assert.ok(api.requestsMatching({ method: 'GET', path: AP_V1_PATH }).length >= 3, 're-probed periodically');
    const said = logs.lines().filter((l) => l.kind === 'AuthorizationPolicy' && l.msg.includes('not served'));
    assert.equal(said.length, 1, 'logged once, not at every re-probe');

    api.serve(AP_V1, 'AuthorizationPolicy');
    api.upsert(AP_V1, policy('deny'));
    await waitFor('the policy of the new CRD', () => s.current().authorizationPolicies.length === 1);
    await waitFor('its watch', () => api.watchCount(AP_V1) === 1);
    api.upsert(AP_V1, policy('watched'));
    await waitFor('a watched policy', () => s.current().authorizationPolicies.length === 2);

    // The CRD is deleted: its objects are gone from the view, and it is looked for again.
    api.unserve(AP_V1);
    await waitFor('the kind emptied', () => s.current().authorizationPolicies.length === 0);
    api.serve(AP_V1BETA1, 'AuthorizationPolicy');
    api.upsert(AP_V1BETA1, policy('again'));
    await waitFor('the kind back at v1beta1', () => s.current().authorizationPolicies[0]?.apiVersion === 'security.istio.io/v1beta1');
    assert.equal(errors.length, 0, 'a CRD coming and going is not an error');
  });
});
