import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CidrExhaustedError, ConfigError } from '../../mesh/errors.js';
import { loadManifests, parseManifests } from '../../mesh/k8s/manifest.js';
import { hostVethName, netnsName, planLab, type LabPlan } from '../../lab/plan.js';

function fixture(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return join(dir, 'test', 'fixtures', name);
}

function twoNode(): LabPlan {
  const file = fixture('two-node.yaml');
  return planLab(loadManifests([file]), file);
}

const LAB = (nodes: string, extra = ''): string => `apiVersion: ambit.dev/v1alpha1\nkind: Lab\nmetadata: {name: t}\nspec:\n  nodes: ${nodes}\n${extra}`;
const NS = 'apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n';

function pod(name: string, opts: { node?: string; labels?: string; ports?: string } = {}): string {
  return [
    'apiVersion: v1',
    'kind: Pod',
    `metadata: {name: ${name}, namespace: demo${opts.labels ? `, labels: ${opts.labels}` : ''}}`,
    'spec:',
    ...(opts.node ? [`  nodeName: ${opts.node}`] : []),
    `  containers: [{name: c${opts.ports ? `, ports: ${opts.ports}` : ''}}]`,
    '',
  ].join('\n');
}

function plan(...docs: string[]): LabPlan {
  return planLab(parseManifests(docs.join('---\n'), 'lab.yaml'), 'lab.yaml');
}

test('nodes: pod CIDRs, fabric, gateway and ztunnel addresses, namespace names', () => {
  const p = twoNode();
  assert.equal(p.name, 'two-node');
  assert.equal(p.failMode, 'closed');
  assert.equal(p.serviceCIDR, '10.96.0.0/16');
  assert.deepEqual(p.fabric, { netns: 'ambit_two-node_fabric', bridge: 'br0', cidr: '172.30.0.0/24' });
  assert.deepEqual(p.nodes, [
    { name: 'node-1', index: 0, podCIDR: '10.244.1.0/24', fabricIP: '172.30.0.11', gatewayIP: '10.244.1.1', ztunnelIP: '10.244.1.2', netns: 'ambit_two-node_node_node-1', ztunnelNetns: 'ambit_two-node_zt_node-1' },
    { name: 'node-2', index: 1, podCIDR: '10.244.2.0/24', fabricIP: '172.30.0.12', gatewayIP: '10.244.2.1', ztunnelIP: '10.244.2.2', netns: 'ambit_two-node_node_node-2', ztunnelNetns: 'ambit_two-node_zt_node-2' },
  ]);
});

test('pods: pinned by nodeName, the rest spread; addresses from .3 in namespace/name order', () => {
  const p = twoNode();
  assert.deepEqual(p.pods.map((x) => [x.key, x.node, x.ip]), [
    ['mesh/client', 'node-1', '10.244.1.3'],
    // Pinned: node-1 has 3 pods, node-2 has 2; echo-0 goes to node-2, then the tie goes to node-1.
    ['mesh/echo-0', 'node-2', '10.244.2.3'],
    ['mesh/echo-1', 'node-1', '10.244.1.4'],
    ['mesh/optout', 'node-1', '10.244.1.5'],
    ['mesh/server', 'node-2', '10.244.2.4'],
    ['plain/client', 'node-1', '10.244.1.6'],
    ['plain/server', 'node-2', '10.244.2.5'],
  ]);
  const client = p.pods[0]!;
  assert.equal(client.netns, 'ambit_two-node_pod_mesh_client');
  assert.equal(client.hostVeth, hostVethName('mesh', 'client'));
  assert.match(client.hostVeth, /^amb[0-9a-f]{11}$/);
  assert.equal(client.pod.spec.nodeName, 'node-1');
  assert.equal(client.pod.status?.podIP, '10.244.1.3');
});

test('the plan is deterministic and does not mutate the manifest', () => {
  const file = fixture('two-node.yaml');
  const manifest = loadManifests([file]);
  const a = planLab(manifest, file);
  assert.equal(manifest.pods.find((x) => x.metadata.name === 'echo-0')!.spec.nodeName, undefined);
  assert.equal(manifest.pods[0]!.status, undefined);
  assert.deepEqual(planLab(manifest, file), a);
});

test('spreading: unpinned pods go to the least-loaded node, ties to the first', () => {
  const p = plan(LAB('[a, b, c]'), NS, pod('p1'), pod('p2'), pod('p3'), pod('p4'), pod('x', { node: 'c' }));
  assert.deepEqual(p.pods.map((x) => [x.name, x.node, x.ip]), [
    ['p1', 'a', '10.244.1.3'],
    ['p2', 'b', '10.244.2.3'],
    ['p3', 'a', '10.244.1.4'],
    ['p4', 'b', '10.244.2.4'],
    ['x', 'c', '10.244.3.3'],
  ]);
});

test('an unknown nodeName names the pod, its document and the field', () => {
  assert.throws(() => plan(LAB('[a, b]'), NS, pod('web', { node: 'node-9' })), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, 'lab.yaml: document 3 (Pod demo/web): spec.nodeName: unknown node "node-9" (the lab\'s nodes: a, b)');
    return true;
  });
});

test('hostNetwork pods are refused: the lab has no host network', () => {
  const doc = pod('web').replace('spec:\n', 'spec:\n  hostNetwork: true\n');
  assert.throws(() => plan(LAB('[a]'), NS, doc), { name: 'ConfigError', message: /^lab\.yaml: document 3 \(Pod demo\/web\): spec\.hostNetwork: the lab has no host network/ });
});

test('an exhausted pod CIDR names the node, the CIDR, its capacity and the pods placed', () => {
  const pods = ['p1', 'p2', 'p3', 'p4', 'p5'].map((n) => pod(n, { node: 'small' }));
  assert.throws(() => plan(LAB('[{name: small, podCIDR: 10.9.0.0/29}]'), NS, ...pods), (err: unknown) => {
    assert.ok(err instanceof CidrExhaustedError);
    assert.equal(err.code, 'AMBIT_CIDR_EXHAUSTED');
    assert.match(err.message, /node small's pod CIDR 10\.9\.0\.0\/29 has 4 addresses for pods \(from host \.3\), but 5 pods are placed on it/);
    assert.match(err.message, /^lab\.yaml: document 1 \(Lab t\): spec\.nodes\[0\]\.podCIDR: /);
    return true;
  });
  // Four fit exactly: .3 to .6.
  const p = plan(LAB('[{name: small, podCIDR: 10.9.0.0/29}]'), NS, ...pods.slice(0, 4));
  assert.deepEqual(p.pods.map((x) => x.ip), ['10.9.0.3', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
});

test('overlapping address ranges are refused with the field to fix', () => {
  assert.throws(() => plan(LAB('[a, {name: b, podCIDR: 10.244.1.128/25}]')), {
    message: "lab.yaml: document 1 (Lab t): spec.nodes[1].podCIDR: 10.244.1.128/25 overlaps node a's pod CIDR 10.244.1.0/24",
  });
  assert.throws(() => plan(LAB('[a]', '  serviceCIDR: 10.244.0.0/16\n')), {
    message: 'lab.yaml: document 1 (Lab t): spec.nodes[0].podCIDR: the default pod CIDR 10.244.1.0/24 overlaps spec.serviceCIDR 10.244.0.0/16',
  });
  assert.throws(() => plan(LAB('[a, b, c, d, e]', '  fabricCIDR: 10.0.0.0/28\n')), {
    message: /spec\.nodes: 5 nodes do not fit spec\.fabricCIDR 10\.0\.0\.0\/28, which has room for 4/,
  });
});

test('exactly one Lab document', () => {
  assert.throws(() => plan(NS), { name: 'ConfigError', message: /^lab\.yaml: no Lab document/ });
  const second = LAB('[b]').replace('name: t', 'name: u');
  assert.throws(() => plan(LAB('[a]'), second), { name: 'ConfigError', message: /^lab\.yaml: 2 Lab documents \(lab\.yaml: document 1 \(Lab t\), lab\.yaml: document 2 \(Lab u\)\)/ });
});

test('services: allocated VIPs from .10, fixed cluster IPs honoured, headless has none', () => {
  const svc = (name: string, spec: string): string => `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: demo}\nspec:\n${spec}`;
  const p = plan(
    LAB('[a]'),
    NS,
    svc('b', '  ports: [{port: 80}]\n'),
    svc('a', '  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n'),
    svc('c', '  ports: [{port: 80}]\n'),
    svc('h', '  clusterIP: None\n  selector: {app: web}\n'),
  );
  assert.deepEqual(p.services.map((s) => [s.key, s.vip, s.headless]), [
    ['demo/a', '10.96.0.10', false],
    ['demo/b', '10.96.0.11', false],
    ['demo/c', '10.96.0.12', false],
    ['demo/h', null, true],
  ]);
  assert.throws(() => plan(LAB('[a]'), NS, svc('a', '  clusterIP: 10.0.0.1\n  ports: [{port: 80}]\n')), {
    message: "lab.yaml: document 3 (Service demo/a): spec.clusterIP: 10.0.0.1 is not a usable address of the lab's serviceCIDR 10.96.0.0/16",
  });
  assert.throws(() => plan(LAB('[a]'), NS, svc('a', '  clusterIP: 10.96.0.50\n  ports: [{port: 80}]\n'), svc('b', '  clusterIP: 10.96.0.50\n  ports: [{port: 80}]\n')), {
    message: 'lab.yaml: document 4 (Service demo/b): spec.clusterIP: 10.96.0.50 is already the cluster IP of Service demo/a',
  });
  const many = Array.from({ length: 6 }, (_, i) => svc(`s${i}`, '  ports: [{port: 80}]\n'));
  assert.throws(() => plan(LAB('[a]', '  serviceCIDR: 10.96.0.0/28\n'), NS, ...many), (err: unknown) => err instanceof CidrExhaustedError && /serviceCIDR 10\.96\.0\.0\/28 has 5 addresses/.test(err.message));
});

test('endpoints: selector in the same namespace; named target ports resolved per pod', () => {
  const p = twoNode();
  const echo = p.services.find((s) => s.key === 'mesh/echo')!;
  assert.equal(echo.vip, '10.96.0.10');
  assert.deepEqual(echo.ports, [{
    name: 'http', port: 80, protocol: 'TCP',
    endpoints: [
      { pod: 'mesh/echo-0', node: 'node-2', ip: '10.244.2.3', port: 8080 },
      { pod: 'mesh/echo-1', node: 'node-1', ip: '10.244.1.4', port: 8080 },
    ],
  }]);

  const svc = `apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  selector: {app: web}\n  ports:\n    - {name: named, port: 80, targetPort: web}\n    - {name: number, port: 81, targetPort: 9000}\n    - {name: unset, port: 82}\n    - {name: udp, port: 83, targetPort: web, protocol: UDP}\n`;
  const q = plan(
    LAB('[a]'),
    NS,
    pod('one', { labels: '{app: web}', ports: '[{name: web, containerPort: 8080}]' }),
    pod('two', { labels: '{app: web}', ports: '[{name: other, containerPort: 8081}]' }),
    pod('three', { labels: '{app: web, extra: x}', ports: '[{name: web, containerPort: 9090, protocol: UDP}]' }),
    pod('nolabel', { ports: '[{name: web, containerPort: 8080}]' }),
    svc,
  );
  const ports = Object.fromEntries(q.services[0]!.ports.map((pt) => [pt.name, pt.endpoints.map((e) => `${e.pod}:${e.port}`)]));
  assert.deepEqual(ports, {
    // two lacks a port named web; three's web is UDP: neither is an endpoint of the TCP port.
    named: ['demo/one:8080'],
    number: ['demo/one:9000', 'demo/three:9000', 'demo/two:9000'],
    unset: ['demo/one:82', 'demo/three:82', 'demo/two:82'],
    udp: ['demo/three:9090'],
  });
  assert.deepEqual(q.services[0]!.selected.map((s) => s.pod), ['demo/one', 'demo/three', 'demo/two']);
});

test('services without a selector, or in another namespace than the pods, have no endpoints', () => {
  const p = plan(
    LAB('[a]'),
    NS,
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n',
    pod('one', { labels: '{app: web}' }),
    'apiVersion: v1\nkind: Service\nmetadata: {name: manual, namespace: demo}\nspec: {ports: [{port: 80}]}\n',
    'apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: other}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n',
  );
  for (const s of p.services) assert.deepEqual(s.ports[0]!.endpoints, [], s.key);
});

test('long pod namespace names are truncated with a hash, staying unique', () => {
  const long = 'x'.repeat(240);
  const a = netnsName('lab', 'pod', 'ns', `${long}a`);
  const b = netnsName('lab', 'pod', 'ns', `${long}b`);
  assert.equal(a.length, 200);
  assert.notEqual(a, b);
  assert.match(a, /^ambit_lab_pod_ns_x+_[0-9a-f]{12}$/);
  assert.equal(netnsName('lab', 'pod', 'ns', 'web'), 'ambit_lab_pod_ns_web');
  assert.equal(hostVethName('ns', 'web').length, 14);
});
