import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { KubernetesSource } from '../../mesh/config/sources/kubernetes.js';
import type { NodeView } from '../../mesh/config/source.js';
import { REDIRECTION_ANNOTATION, type Pod } from '../../mesh/k8s/types.js';
import { FakeApiServer, NAMESPACES, PODS, type ApiObject } from '../support/fake-apiserver.js';

const NODE = 'node-a';
const log = pino({ level: 'silent' });
const fastBackoff = { initialMs: 20, maxMs: 200 };

function pod(name: string, nodeName: string, namespace = 'apps', extra: Partial<ApiObject['metadata']> = {}): ApiObject {
  return {
    metadata: { name, namespace, labels: { app: name }, ...extra },
    spec: { nodeName, containers: [{ name: 'echo', ports: [{ containerPort: 8080, protocol: 'TCP' }] }] },
    status: { phase: 'Running', podIP: `10.0.0.${name.length}` },
  };
}

function podNames(view: NodeView): string[] {
  return view.pods.map((p) => `${p.metadata.namespace}/${p.metadata.name}`);
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

describe('KubernetesSource against a fake API server', { timeout: 30_000 }, () => {
  let api: FakeApiServer;
  let source: KubernetesSource;
  let changes: NodeView[];
  let errors: Error[];

  beforeEach(async () => {
    api = await FakeApiServer.start();
    api.upsert(NAMESPACES, { metadata: { name: 'default' } });
    api.upsert(NAMESPACES, { metadata: { name: 'apps' } });
    api.upsert(PODS, pod('a1', NODE));
    api.upsert(PODS, pod('a2', NODE));
    api.upsert(PODS, pod('b1', 'node-b'));
    api.upsert(PODS, pod('pending', ''));
    source = new KubernetesSource({ kubeConfig: api.kubeConfig(), node: NODE, log, backoff: fastBackoff });
    changes = [];
    errors = [];
    source.onChange((view) => changes.push(view));
    source.onError((err) => errors.push(err));
  });

  afterEach(async () => {
    await source.close();
    await api.close();
  });

  it('lists all namespaces and only its node\'s pods, asking the server with a field selector', async () => {
    await source.start();
    const view = source.current();
    assert.deepEqual(podNames(view), ['apps/a1', 'apps/a2']);
    assert.deepEqual([...view.namespaces.keys()].sort(), ['apps', 'default']);
    const a1 = view.pods[0] as Pod;
    assert.equal(a1.kind, 'Pod', 'list items get their kind back');
    assert.equal(a1.apiVersion, 'v1');
    assert.equal(a1.spec.containers[0]?.ports?.[0]?.containerPort, 8080);
    assert.equal(a1.status?.podIP, '10.0.0.2');

    const podLists = api.requestsMatching({ method: 'GET', path: '/api/v1/pods', watch: false });
    assert.equal(podLists.length, 1);
    assert.equal(podLists[0]?.query.get('fieldSelector'), `spec.nodeName=${NODE}`);
    await waitFor('both watches', () => api.watchCount(PODS) === 1 && api.watchCount(NAMESPACES) === 1);
    const podWatch = api.requestsMatching({ method: 'GET', path: '/api/v1/pods', watch: true })[0];
    assert.equal(podWatch?.query.get('fieldSelector'), `spec.nodeName=${NODE}`);
    assert.ok(Number(podWatch?.query.get('resourceVersion')) > 0, 'the watch resumes from the list\'s resourceVersion');
    assert.equal(podWatch?.query.get('allowWatchBookmarks'), 'true');
    assert.ok(Number(podWatch?.query.get('timeoutSeconds')) >= 300, 'a server-side timeout bounds every watch');
    assert.equal(errors.length, 0);
  });

  it('passes a namespace label change, a new pod and a deleted pod to onChange', async () => {
    await source.start();
    await waitFor('watches', () => api.watchCount() === 2);

    api.upsert(NAMESPACES, { metadata: { name: 'apps', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
    const labelled = await waitFor('namespace label', () =>
      changes.find((v) => v.namespaces.get('apps')?.metadata.labels?.['istio.io/dataplane-mode'] === 'ambient'),
    );
    assert.deepEqual(podNames(labelled), ['apps/a1', 'apps/a2']);

    api.bookmark();
    api.upsert(PODS, pod('a3', NODE));
    api.upsert(PODS, pod('b2', 'node-b'));
    await waitFor('a3 added', () => podNames(source.current()).includes('apps/a3'));

    api.remove(PODS, 'a2', 'apps');
    const after = await waitFor('a2 deleted', () => changes.find((v) => !podNames(v).includes('apps/a2')));
    assert.deepEqual(podNames(after), ['apps/a1', 'apps/a3']);
    assert.deepEqual(podNames(labelled), ['apps/a1', 'apps/a2'], 'a view handed out earlier does not change');
    assert.equal(errors.length, 0);
  });

  it('coalesces a burst of events into few changes', async () => {
    await source.start();
    await waitFor('watches', () => api.watchCount() === 2);
    for (let i = 0; i < 50; i++) api.upsert(PODS, pod(`burst-${i}`, NODE));
    await waitFor('all burst pods', () => source.current().pods.length === 52);
    assert.ok(changes.length < 10, `${changes.length} change notifications for 50 events`);
  });

  for (const mode of ['event', 'status'] as const) {
    it(`relists after 410 Gone (${mode === 'event' ? 'ERROR event' : 'HTTP status'}) and recovers the view`, async () => {
      await source.start();
      await waitFor('watches', () => api.watchCount() === 2);
      // Changes whose events are lost: only a relist can find them.
      api.remove(PODS, 'a1', 'apps', { notify: false });
      api.upsert(PODS, pod('a9', NODE), { notify: false });
      api.upsert(NAMESPACES, { metadata: { name: 'late' } }, { notify: false });
      api.expireWatches(mode);
      await waitFor('relisted view', () => {
        const names = podNames(source.current());
        return names.includes('apps/a9') && !names.includes('apps/a1') && source.current().namespaces.has('late');
      });
      assert.deepEqual(podNames(source.current()), ['apps/a2', 'apps/a9']);
      assert.equal(api.requestsMatching({ method: 'GET', path: '/api/v1/pods', watch: false }).length, 2, 'pods were listed again');
      await waitFor('watches again', () => api.watchCount() === 2);
      api.upsert(PODS, pod('a10', NODE));
      await waitFor('events flow after the relist', () => podNames(source.current()).includes('apps/a10'));
      assert.equal(errors.length, 0, '410 is part of the protocol, not an error');
    });
  }

  it('reports a failing watch, keeps the last view, and restarts with backoff', async () => {
    await source.start();
    await waitFor('watches', () => api.watchCount() === 2);
    api.failRequests({ pathPrefix: '/api/v1/pods', watch: true, status: 500, times: 2 });
    api.endWatches();
    await waitFor('two reported failures', () => errors.length >= 2);
    assert.match(errors[0]?.message ?? '', /pods informer/);
    assert.deepEqual(podNames(source.current()), ['apps/a1', 'apps/a2'], 'the last good view stays');
    await waitFor('pod watch back', () => api.watchCount(PODS) === 1);
    api.upsert(PODS, pod('a4', NODE));
    await waitFor('events after the restart', () => podNames(source.current()).includes('apps/a4'));
  });

  it('keeps retrying a failing first list and resolves start() once it succeeds', async () => {
    api.failRequests({ method: 'GET', pathPrefix: '/api/v1/namespaces', watch: false, status: 503, times: 3 });
    await source.start();
    assert.equal(errors.length, 3);
    assert.deepEqual([...source.current().namespaces.keys()].sort(), ['apps', 'default']);
  });

  it('records redirection as a merge patch of the annotation, skips no-ops, and removes it with null', async () => {
    await source.start();
    await waitFor('watches', () => api.watchCount() === 2);
    const a1 = source.current().pods[0] as Pod;
    await source.recordRedirection(a1, 'enabled');
    const patches = api.requestsMatching({ method: 'PATCH' });
    assert.equal(patches.length, 1);
    assert.equal(patches[0]?.path, '/api/v1/namespaces/apps/pods/a1');
    assert.equal(patches[0]?.headers['content-type'], 'application/merge-patch+json');
    assert.deepEqual(JSON.parse(patches[0]?.body ?? ''), { metadata: { annotations: { [REDIRECTION_ANNOTATION]: 'enabled' } } });
    assert.equal(api.get(PODS, 'a1', 'apps')?.metadata.annotations?.[REDIRECTION_ANNOTATION], 'enabled');

    const updated = await waitFor('annotation in the view', () =>
      source.current().pods.find((p) => p.metadata.name === 'a1' && p.metadata.annotations?.[REDIRECTION_ANNOTATION] === 'enabled'),
    );
    await source.recordRedirection(updated, 'enabled');
    await source.recordRedirection(a1, 'enabled');
    assert.equal(api.requestsMatching({ method: 'PATCH' }).length, 1, 'no patch when the pod already has the value');

    await source.recordRedirection(updated, null);
    const removal = api.requestsMatching({ method: 'PATCH' })[1];
    assert.deepEqual(JSON.parse(removal?.body ?? ''), { metadata: { annotations: { [REDIRECTION_ANNOTATION]: null } } });
    assert.equal(api.get(PODS, 'a1', 'apps')?.metadata.annotations?.[REDIRECTION_ANNOTATION], undefined);
    assert.deepEqual(api.get(PODS, 'a1', 'apps')?.metadata.labels, { app: 'a1' }, 'a merge patch leaves the rest alone');
  });

  it('retries a failed annotation write in the background without throwing, the latest state winning', async () => {
    await source.start();
    const a2 = source.current().pods[1] as Pod;
    api.failRequests({ method: 'PATCH', status: 500, times: 2 });
    await source.recordRedirection(a2, 'pending');
    await source.recordRedirection(a2, 'enabled');
    await waitFor('annotation written', () => api.get(PODS, 'a2', 'apps')?.metadata.annotations?.[REDIRECTION_ANNOTATION] === 'enabled');
    const patches = api.requestsMatching({ method: 'PATCH' });
    assert.equal(patches.length, 3);
    assert.equal(JSON.parse(patches[2]?.body ?? '').metadata.annotations[REDIRECTION_ANNOTATION], 'enabled');

    // A pod that is gone: resolved and dropped, not retried.
    await source.recordRedirection({ ...a2, metadata: { ...a2.metadata, name: 'ghost' } }, 'enabled');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(api.requestsMatching({ method: 'PATCH', path: '/api/v1/namespaces/apps/pods/ghost' }).length, 1);
  });

  it('close() before the first view rejects start() and leaves nothing running', async () => {
    api.failRequests({ pathPrefix: '/api/v1/pods', watch: false, status: 500, times: 1000 });
    const started = source.start();
    await waitFor('a failure', () => errors.length > 0);
    await source.close();
    await assert.rejects(started, /closed before its first view/);
  });
});

describe('KubernetesSource without a node (the control plane\'s cluster-wide view)', { timeout: 30_000 }, () => {
  let api: FakeApiServer;
  let source: KubernetesSource;

  beforeEach(async () => {
    api = await FakeApiServer.start();
    api.upsert(NAMESPACES, { metadata: { name: 'apps' } });
    api.upsert(PODS, pod('a1', NODE));
    api.upsert(PODS, pod('b1', 'node-b'));
    api.upsert(PODS, pod('pending', ''));
    source = new KubernetesSource({ kubeConfig: api.kubeConfig(), log, backoff: fastBackoff });
  });

  afterEach(async () => {
    await source.close();
    await api.close();
  });

  it('lists and watches every pod of every node, unscheduled ones included, with no field selector', async () => {
    await source.start();
    assert.deepEqual(podNames(source.current()), ['apps/a1', 'apps/b1', 'apps/pending']);
    await waitFor('pod watch', () => api.watchCount(PODS) === 1);
    for (const request of api.requestsMatching({ method: 'GET', path: '/api/v1/pods' })) {
      assert.equal(request.query.get('fieldSelector'), null, 'no field selector on the list or the watch');
    }

    // Scheduling a pod and moving between nodes keep it in the view; deleting it removes it.
    api.upsert(PODS, pod('pending', 'node-c'));
    api.upsert(PODS, pod('c1', 'node-c'));
    await waitFor('new pod on another node', () => podNames(source.current()).includes('apps/c1'));
    assert.equal(source.current().pods.find((p) => p.metadata.name === 'pending')?.spec.nodeName, 'node-c');
    api.remove(PODS, 'b1', 'apps');
    await waitFor('b1 deleted', () => !podNames(source.current()).includes('apps/b1'));
    assert.deepEqual(podNames(source.current()), ['apps/a1', 'apps/c1', 'apps/pending']);
  });
});
