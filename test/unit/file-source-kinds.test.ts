// The file source as the control plane uses it: every kind from the lab's YAML, the lab's
// placements (pod addresses, service cluster IPs), the agents' redirection records, object
// identity across re-reads, and the policy status file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KINDS } from '../../mesh/config/kinds.js';
import type { ClusterView } from '../../mesh/config/view.js';
import { FileSource, type PlacementFile, type RedirectionRecord, type StatusFile } from '../../mesh/config/sources/file.js';
import { ConfigError } from '../../mesh/errors.js';
import { REDIRECTION_ANNOTATION, podKey, type StatusCondition } from '../../mesh/k8s/types.js';

function fixture(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return join(dir, 'test', 'fixtures', name);
}

const LAB = readFileSync(fixture('two-node.yaml'), 'utf8');

const POLICIES = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: mesh}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [plain]}}]}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: legacy, namespace: mesh, generation: 5, creationTimestamp: "2019-05-01T00:00:00Z"}
spec: {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: mesh}
spec: {mtls: {mode: STRICT}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: mesh, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: external-1, namespace: mesh, labels: {kubernetes.io/service-name: external}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.10]}]
ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: mesh}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http, port: 80, appProtocol: http}]
  trafficDistribution: PreferClose
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored, namespace: mesh}
data: {a: b}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: everywhere}
spec: {action: ALLOW}
`;

const PLACEMENTS: PlacementFile = {
  pods: {
    'mesh/client': { nodeName: 'node-1', podIP: '10.244.1.3' },
    'mesh/echo-0': { nodeName: 'node-2', podIP: '10.244.2.3' },
    'mesh/echo-1': { nodeName: 'node-1', podIP: '10.244.1.4' },
    'mesh/optout': { nodeName: 'node-1', podIP: '10.244.1.5' },
    'mesh/server': { nodeName: 'node-2', podIP: '10.244.2.4' },
    'plain/client': { nodeName: 'node-1', podIP: '10.244.1.6' },
    'plain/server': { nodeName: 'node-2', podIP: '10.244.2.5' },
  },
  services: { 'mesh/echo': { clusterIP: '10.96.0.10' }, 'mesh/external': { clusterIP: '10.96.0.99' } },
};

/** A lab directory in tmp: the lab file, a file of policies and routes, the lab's state files. */
class Harness {
  readonly dir = mkdtempSync(join(tmpdir(), 'ambit-file-source-kinds-'));
  readonly labFile = join(this.dir, 'lab.yaml');
  readonly policyFile = join(this.dir, 'policies.yaml');
  readonly podStatusFile = join(this.dir, 'state', 'pods.json');
  readonly statusFile = join(this.dir, 'state', 'controlplane', 'status.json');
  readonly records = [join(this.dir, 'state', 'redirection-node-1.json'), join(this.dir, 'state', 'redirection-node-2.json')];
  readonly changes: ClusterView[] = [];
  readonly errors: Error[] = [];
  private readonly sources: FileSource[] = [];

  constructor(policies = POLICIES) {
    writeFileSync(this.labFile, LAB);
    writeFileSync(this.policyFile, policies);
    mkdirSync(dirname(this.podStatusFile), { recursive: true });
    this.replace(this.podStatusFile, JSON.stringify(PLACEMENTS));
  }

  /** The control plane's source: every kind, no node. `kinds: 'node'`: the agent's default. */
  async start(opts: { kinds?: 'all' | 'node' } = {}): Promise<FileSource> {
    const source = new FileSource({
      paths: [this.labFile, this.policyFile],
      ...(opts.kinds !== 'node' && { kinds: KINDS }),
      podStatusFile: this.podStatusFile,
      redirectionFiles: this.records,
      statusFile: this.statusFile,
      debounceMs: 30,
      pollIntervalMs: 250,
    });
    source.onChange((view) => this.changes.push(view));
    source.onError((err) => this.errors.push(err));
    this.sources.push(source);
    await source.start();
    return source;
  }

  /** Replaces the file the way editors and the lab do: a temporary file renamed over it. */
  replace(file: string, text: string): void {
    writeFileSync(`${file}.swp`, text);
    renameSync(`${file}.swp`, file);
  }

  async cleanup(): Promise<void> {
    for (const source of this.sources) await source.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
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
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function names(objects: readonly { metadata: { name: string; namespace?: string } }[]): string[] {
  return objects.map((o) => `${o.metadata.namespace}/${o.metadata.name}`);
}

test('every kind is read from the files, with the lab\'s placements, creation times in file order and generation 1', async () => {
  const h = new Harness();
  try {
    const view = (await h.start()).current();
    assert.deepEqual([...view.namespaces.keys()].sort(), ['mesh', 'plain']);
    assert.equal(view.pods.length, 7);
    assert.deepEqual(names(view.services), ['mesh/echo', 'mesh/external']);
    assert.deepEqual(names(view.authorizationPolicies), ['default/everywhere', 'mesh/deny', 'mesh/legacy']);
    assert.deepEqual(names(view.peerAuthentications), ['mesh/strict']);
    assert.deepEqual(names(view.gateways), ['mesh/waypoint']);
    assert.deepEqual(names(view.httpRoutes), ['mesh/echo']);
    assert.deepEqual(names(view.grpcRoutes), ['mesh/grpc']);
    assert.deepEqual(names(view.endpointSlices), ['mesh/external-1']);

    const legacy = view.authorizationPolicies.find((p) => p.metadata.name === 'legacy')!;
    assert.equal(legacy.apiVersion, 'security.istio.io/v1beta1', 'a policy keeps the version it was written at');
    assert.equal(view.httpRoutes[0]?.kind, 'HTTPRoute');
    assert.equal(view.endpointSlices[0]?.endpoints[0]?.addresses[0], '192.0.2.10');

    // Creation times: one second per document, in reading order across the files; given ones stay.
    assert.equal(view.namespaces.get('mesh')?.metadata.creationTimestamp, '2024-01-01T00:00:01Z', 'lab.yaml document 2');
    const deny = view.authorizationPolicies.find((p) => p.metadata.name === 'deny')!;
    assert.equal(deny.metadata.creationTimestamp, '2024-01-01T00:00:10Z', 'policies.yaml document 1, after lab.yaml\'s 10');
    assert.equal(legacy.metadata.creationTimestamp, '2019-05-01T00:00:00Z');
    assert.equal(deny.metadata.generation, 1);
    assert.equal(legacy.metadata.generation, 5);
    const echo0 = view.pods.find((p) => podKey(p) === 'mesh/echo-0')!;
    assert.equal(echo0.metadata.creationTimestamp, '2024-01-01T00:00:03Z', 'a Deployment\'s pods date from its document');

    // Placed pods run: node, address, phase and readiness.
    assert.equal(echo0.spec.nodeName, 'node-2');
    assert.deepEqual(echo0.status, { phase: 'Running', podIP: '10.244.2.3', podIPs: [{ ip: '10.244.2.3' }], conditions: [{ type: 'Ready', status: 'True' }] });
    // A service without a cluster IP gets the lab's; one with its own keeps it, with its other fields.
    const [echoSvc, external] = view.services;
    assert.equal(echoSvc?.spec.clusterIP, '10.96.0.10');
    assert.deepEqual(echoSvc?.spec.clusterIPs, ['10.96.0.10']);
    assert.equal(external?.spec.clusterIP, '10.96.0.50');
    assert.equal(external?.spec.ports[0]?.appProtocol, 'http');
    assert.equal(external?.spec.trafficDistribution, 'PreferClose');

    // The node agent's default kinds: the same files give namespaces and pods only.
    const agentView = (await h.start({ kinds: 'node' })).current();
    assert.equal(agentView.pods.length, 7);
    assert.deepEqual([agentView.services.length, agentView.authorizationPolicies.length, agentView.httpRoutes.length], [0, 0, 0]);
    assert.equal(h.errors.length, 0);
  } finally {
    await h.cleanup();
  }
});

test('an unsupported version of a kind read, or an unusable object, is an error naming the document', async () => {
  const old = POLICIES.replace('apiVersion: security.istio.io/v1\nkind: PeerAuthentication', 'apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication');
  const h = new Harness(old);
  try {
    await assert.rejects(h.start(), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, `${h.policyFile}: document 3 (PeerAuthentication mesh/strict): apiVersion: security.istio.io/v1alpha1 is not a version of PeerAuthentication Ambit reads (use security.istio.io/v1 or security.istio.io/v1beta1)`);
      return true;
    });
    // The node agent does not read PeerAuthentication: the same files are fine for it.
    await h.start({ kinds: 'node' });

    // At a re-read: reported, and the last good view stays.
    h.replace(h.policyFile, POLICIES);
    const source = await h.start();
    const good = source.current();
    h.replace(h.policyFile, POLICIES.replace('spec: {mtls: {mode: STRICT}}', 'spec: [STRICT]'));
    await waitFor('the error', () => h.errors.length > 0);
    assert.equal(h.errors[0]?.message, `${h.policyFile}: document 3 (PeerAuthentication mesh/strict): spec: must be a map, got a list`);
    assert.equal(source.current(), good);
    assert.equal(h.changes.length, 0);
  } finally {
    await h.cleanup();
  }
});

test('a re-read hands out the same object for everything unchanged', async () => {
  const h = new Harness();
  try {
    const source = await h.start();
    const before = source.current();
    h.replace(h.policyFile, POLICIES.replace('namespaces: [plain]', 'namespaces: [plain, other]'));
    const after = await waitFor('the edited policy', () => h.changes[0]);
    const deny = (v: ClusterView) => v.authorizationPolicies.find((p) => p.metadata.name === 'deny')!;
    assert.deepEqual(deny(after).spec.rules?.[0]?.from?.[0]?.source?.namespaces, ['plain', 'other']);
    assert.notEqual(deny(after), deny(before));
    for (const name of ['legacy', 'everywhere']) {
      assert.equal(after.authorizationPolicies.find((p) => p.metadata.name === name), before.authorizationPolicies.find((p) => p.metadata.name === name), `${name} is the same object`);
    }
    // Lists and maps without a change are the previous view's.
    for (const list of ['pods', 'services', 'endpointSlices', 'peerAuthentications', 'gateways', 'httpRoutes', 'grpcRoutes'] as const) {
      assert.equal(after[list], before[list], `${list} unchanged`);
    }
    assert.equal(after.namespaces, before.namespaces);

    // Moving one pod: only that pod is a new object.
    h.replace(h.podStatusFile, JSON.stringify({ ...PLACEMENTS, pods: { ...PLACEMENTS.pods, 'mesh/optout': { nodeName: 'node-1', podIP: '10.244.1.9' } } }));
    const moved = await waitFor('the moved pod', () => h.changes[1]);
    for (const [i, pod] of moved.pods.entries()) {
      if (podKey(pod) === 'mesh/optout') assert.equal(pod.status?.podIP, '10.244.1.9');
      else assert.equal(pod, after.pods[i], `${podKey(pod)} is the same object`);
    }
    assert.equal(moved.authorizationPolicies, after.authorizationPolicies);
    assert.equal(h.errors.length, 0);
  } finally {
    await h.cleanup();
  }
});

test('the agents\' redirection records annotate pods at their current address; a record of another address is stale', async () => {
  const h = new Harness();
  const record = (node: string, pods: RedirectionRecord['pods']): string => JSON.stringify({ node, updated: new Date().toISOString(), pods } satisfies RedirectionRecord);
  try {
    h.replace(h.records[0]!, record('node-1', {
      'mesh/client': { state: 'enabled', ip: '10.244.1.3' },
      'mesh/optout': { state: 'pending', ip: '10.244.9.9' },
    }));
    const source = await h.start();
    const annotation = (v: ClusterView, key: string) => v.pods.find((p) => podKey(p) === key)?.metadata.annotations?.[REDIRECTION_ANNOTATION];
    const first = source.current();
    assert.equal(annotation(first, 'mesh/client'), 'enabled');
    assert.equal(annotation(first, 'mesh/optout'), undefined, 'a stale record is ignored');
    assert.equal(annotation(first, 'mesh/server'), undefined, 'node-2 has written nothing yet');

    // node-2's agent writes its record later, in the watched directory.
    h.replace(h.records[1]!, record('node-2', { 'mesh/server': { state: 'pending', ip: '10.244.2.4' } }));
    const second = await waitFor('node-2\'s record', () => h.changes[0]);
    assert.equal(annotation(second, 'mesh/server'), 'pending');
    assert.equal(second.pods.find((p) => podKey(p) === 'mesh/client'), first.pods.find((p) => podKey(p) === 'mesh/client'), 'other pods keep their object');

    // A malformed record is reported; the record's last good content stays.
    h.replace(h.records[1]!, '{"pods": ');
    await waitFor('the error', () => h.errors.length > 0);
    assert.match(h.errors[0]!.message, /redirection-node-2\.json: the redirection record is not valid JSON/);
    assert.equal(annotation(source.current(), 'mesh/server'), 'pending');
  } finally {
    await h.cleanup();
  }
});

test('recordStatus writes the status file atomically, skips no-ops, keeps transition times, and drops policies that are gone', async () => {
  const h = new Harness();
  const target = (name: string, namespace = 'mesh') => ({ kind: 'AuthorizationPolicy' as const, namespace, name });
  const accepted: StatusCondition = { type: 'ZtunnelAccepted', status: 'True', reason: 'Accepted', message: 'enforced by ztunnel' };
  const read = (): StatusFile => JSON.parse(readFileSync(h.statusFile, 'utf8')) as StatusFile;
  try {
    const source = await h.start();
    await Promise.all([
      source.recordStatus(target('deny'), [accepted]),
      source.recordStatus(target('legacy'), [{ ...accepted, status: 'False', reason: 'Invalid', message: 'bad' }]),
      source.recordStatus(target('nowhere'), [accepted]),
    ]);
    const first = read();
    assert.deepEqual(Object.keys(first), ['AuthorizationPolicy mesh/deny', 'AuthorizationPolicy mesh/legacy'], 'a policy not in the view is not recorded');
    const stamped = first['AuthorizationPolicy mesh/deny']!.conditions[0]!;
    assert.deepEqual({ ...stamped, lastTransitionTime: undefined }, { ...accepted, lastTransitionTime: undefined });
    assert.match(stamped.lastTransitionTime ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.deepEqual(readdirSync(dirname(h.statusFile)), ['status.json'], 'no temporary file is left');

    // The same conditions: no write at all.
    const { ino, mtimeMs } = statSync(h.statusFile);
    await source.recordStatus(target('deny'), [{ ...accepted }]);
    await sleep(60);
    assert.deepEqual([statSync(h.statusFile).ino, statSync(h.statusFile).mtimeMs], [ino, mtimeMs]);

    // Same status, new message: written, with the transition time kept.
    await sleep(1000);
    await source.recordStatus(target('deny'), [{ ...accepted, message: 'enforced by ztunnel; 1 rule dropped' }]);
    const second = read()['AuthorizationPolicy mesh/deny']!.conditions[0]!;
    assert.equal(second.message, 'enforced by ztunnel; 1 rule dropped');
    assert.equal(second.lastTransitionTime, stamped.lastTransitionTime);
    // A new status: a new transition time.
    await source.recordStatus(target('deny'), [{ ...accepted, status: 'False', reason: 'Invalid' }]);
    assert.notEqual(read()['AuthorizationPolicy mesh/deny']!.conditions[0]!.lastTransitionTime, stamped.lastTransitionTime);

    // The policy is deleted from the files: its entry leaves the status file.
    const legacyDocument = 'apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: legacy, namespace: mesh, generation: 5, creationTimestamp: "2019-05-01T00:00:00Z"}\nspec: {}\n---\n';
    assert.ok(POLICIES.includes(legacyDocument));
    h.replace(h.policyFile, POLICIES.replace(legacyDocument, ''));
    await waitFor('legacy gone from the view', () => h.changes[0] && !h.changes[0].authorizationPolicies.some((p) => p.metadata.name === 'legacy'));
    await waitFor('legacy gone from the file', () => !('AuthorizationPolicy mesh/legacy' in read()));
    assert.deepEqual(Object.keys(read()), ['AuthorizationPolicy mesh/deny']);
    assert.deepEqual(source.statusRecord(), read());
  } finally {
    await h.cleanup();
  }
});

test('a pod keeps the creation time and owners its file gives; a malformed one names the field', async () => {
  const pod = (meta: string) => `---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pasted\n  namespace: mesh\n${meta}spec:\n  nodeName: node-1\n  containers: [{name: c}]\n`;
  const given = '  creationTimestamp: "2023-06-01T10:00:00Z"\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d4f, uid: abc, controller: true}]\n';
  const h = new Harness(POLICIES + pod(given));
  try {
    const view = (await h.start()).current();
    const pasted = view.pods.find((p) => podKey(p) === 'mesh/pasted')!;
    assert.equal(pasted.metadata.creationTimestamp, '2023-06-01T10:00:00Z');
    assert.deepEqual(pasted.metadata.ownerReferences, [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-5d4f', uid: 'abc', controller: true }]);
  } finally {
    await h.cleanup();
  }
  const bad = new Harness(POLICIES + pod('  creationTimestamp: yesterday\n'));
  try {
    await assert.rejects(bad.start(), { name: 'ConfigError', message: /document 11 \(Pod mesh\/pasted\): metadata\.creationTimestamp: must be an RFC 3339 time such as 2024-01-31T12:00:00Z, got "yesterday"$/ });
  } finally {
    await bad.cleanup();
  }
});
