import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../../mesh/errors.js';
import {
  DEFAULT_FABRIC_CIDR,
  DEFAULT_SERVICE_CIDR,
  loadManifests,
  OWNER_ANNOTATION,
  parseIpv4Cidr,
  parseManifests,
} from '../../mesh/k8s/manifest.js';

/** The fixture, whether the test runs compiled (dist/test/unit) or from source (test/unit). */
function fixture(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return join(dir, 'test', 'fixtures', name);
}

const NS = 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n';

function pod(body: string, name = 'web', namespace = 'demo'): string {
  return `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\n${body}`;
}

/** Asserts a ConfigError with exactly this message. */
function rejects(text: string, message: string | RegExp, source = 'lab.yaml'): void {
  assert.throws(() => parseManifests(text, source), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'AMBIT_CONFIG_INVALID');
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

test('the two-node fixture parses into typed objects, Deployment replicas expanded to Pods', () => {
  const m = loadManifests([fixture('two-node.yaml')]);
  assert.deepEqual(m.namespaces.map((n) => n.metadata.name), ['mesh', 'plain']);
  assert.equal(m.namespaces[0]!.metadata.labels?.['istio.io/dataplane-mode'], 'ambient');
  assert.deepEqual(
    m.pods.map((p) => `${p.metadata.namespace}/${p.metadata.name}`),
    ['mesh/client', 'mesh/server', 'mesh/optout', 'plain/client', 'plain/server', 'mesh/echo-0', 'mesh/echo-1'],
  );
  const echo0 = m.pods.find((p) => p.metadata.name === 'echo-0')!;
  assert.deepEqual(echo0.metadata.labels, { app: 'echo' });
  assert.equal(echo0.metadata.annotations?.[OWNER_ANNOTATION], 'Deployment/echo');
  assert.deepEqual(echo0.spec.containers[0]!.ports, [{ name: 'http', containerPort: 8080 }]);
  assert.equal(m.services[0]!.spec.ports[0]!.targetPort, 'http');
  assert.equal(m.labs.length, 1);
  assert.deepEqual(m.labs[0]!.spec, {
    nodes: [{ name: 'node-1' }, { name: 'node-2' }],
    serviceCIDR: DEFAULT_SERVICE_CIDR,
    fabricCIDR: DEFAULT_FABRIC_CIDR,
    failMode: 'closed',
    trustDomain: 'cluster.local',
    ztunnelWorkers: 1,
  });
});

test('expanded replicas are independent copies of the template', () => {
  const m = loadManifests([fixture('two-node.yaml')]);
  const [a, b] = m.pods.filter((p) => p.metadata.name.startsWith('echo-'));
  a!.spec.containers[0]!.name = 'changed';
  a!.metadata.labels!.app = 'changed';
  assert.equal(b!.spec.containers[0]!.name, 'echo');
  assert.equal(m.deployments[0]!.spec.template.metadata?.labels?.app, 'echo');
});

test('a bad field names the file, the document, the object and the field path', () => {
  const text = [
    NS,
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n',
    pod('spec:\n  containers:\n    - name: web\n      ports:\n        - containerPort: http\n'),
  ].join('---\n');
  rejects(text, 'lab.yaml: document 3 (Pod demo/web): spec.containers[0].ports[0].containerPort: must be an integer 1-65535, got "http"');
});

test('YAML syntax errors name the document and the line', () => {
  rejects(`${NS}---\napiVersion: v1\nkind: Pod\nmetadata: {name: web}}\n`, 'lab.yaml: document 2: YAML syntax error: Unexpected flow-map-end token in YAML stream: "}" at line 8, column 22');
  rejects(`${NS}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n namespace: demo\n`, 'lab.yaml: document 2: YAML syntax error: All mapping items must start at the same column at line 10, column 1');
  rejects(`${NS}labels:\n  a: 1\n  a: 2\n`, 'lab.yaml: document 1: YAML syntax error: Map keys must be unique at line 7, column 3');
});

test('empty documents are skipped but still count in document numbers', () => {
  const m = parseManifests(`---\n# just a comment\n---\n${NS}---\n---\n`, 'x.yaml');
  assert.equal(m.namespaces.length, 1);
  rejects(`${NS}---\n---\napiVersion: v1\nkind: 3\n`, 'lab.yaml: document 3: kind: must be a string, got 3');
});

test('apiVersion and kind are required strings, and a known kind needs its own apiVersion', () => {
  rejects('kind: Pod\nmetadata: {name: x}\n', 'lab.yaml: document 1: apiVersion: is required');
  rejects('apiVersion: v1\nmetadata: {name: x}\n', 'lab.yaml: document 1: kind: is required');
  rejects('- a\n- b\n', 'lab.yaml: document 1: must be a Kubernetes object (a map with apiVersion, kind and metadata), got a list');
  rejects('apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n', 'lab.yaml: document 1 (Deployment default/x): apiVersion: must be "apps/v1" for kind Deployment, got "v1"');
});

test('names follow Kubernetes: subdomains for pods, labels for namespaces and services', () => {
  rejects(pod('spec: {containers: [{name: web}]}\n', 'Web_1'), /^lab\.yaml: document 1 \(Pod demo\/Web_1\): metadata\.name: must be a DNS-1123 subdomain .*got "Web_1"$/);
  rejects('apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n', /^lab\.yaml: document 1 \(Namespace a\.b\): metadata\.name: must be a DNS-1123 label/);
  rejects('apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: a}]}\n', 'lab.yaml: document 1 (Pod): metadata.name: is required');
  // Dots are fine in pod names.
  const m = parseManifests(`${NS}---\n${pod('spec: {containers: [{name: web}]}\n', 'web.v1')}`, 'lab.yaml');
  assert.equal(m.pods[0]!.metadata.name, 'web.v1');
});

test('labels and annotations must be maps of strings with valid keys', () => {
  rejects(`${NS}---\n${pod('  labels:\n    version: 1\nspec: {containers: [{name: web}]}\n')}`,
    'lab.yaml: document 2 (Pod demo/web): metadata.labels["version"]: must be a string (quote it), got 1');
  rejects(`${NS}---\n${pod('  annotations: [a]\nspec: {containers: [{name: web}]}\n')}`,
    'lab.yaml: document 2 (Pod demo/web): metadata.annotations: must be a map, got a list');
  rejects(`${NS}---\n${pod('  labels:\n    "bad key!": x\nspec: {containers: [{name: web}]}\n')}`, /metadata\.labels: key "bad key!" is not a valid Kubernetes key/);
  rejects(`${NS}---\n${pod('  labels:\n    app: "has space"\nspec: {containers: [{name: web}]}\n')}`, /metadata\.labels\["app"\]: label values must be/);
});

test('containers: non-empty, named, unique; ports and protocols checked', () => {
  const doc = (spec: string): string => `${NS}---\n${pod(spec)}`;
  rejects(doc('spec:\n  containers: []\n'), 'lab.yaml: document 2 (Pod demo/web): spec.containers: must list at least one container');
  rejects(doc('spec: {}\n'), 'lab.yaml: document 2 (Pod demo/web): spec.containers: is required');
  rejects(doc('spec:\n  containers:\n    - image: x\n'), 'lab.yaml: document 2 (Pod demo/web): spec.containers[0].name: is required');
  rejects(doc('spec:\n  containers: [{name: a}, {name: a}]\n'), 'lab.yaml: document 2 (Pod demo/web): spec.containers[1].name: duplicate container name "a" (also spec.containers[0])');
  rejects(doc('spec:\n  containers:\n    - name: a\n      ports: [{containerPort: 70000}]\n'), 'lab.yaml: document 2 (Pod demo/web): spec.containers[0].ports[0].containerPort: must be an integer 1-65535, got 70000');
  rejects(doc('spec:\n  containers:\n    - name: a\n      ports: [{containerPort: 80, protocol: tcp}]\n'), 'lab.yaml: document 2 (Pod demo/web): spec.containers[0].ports[0].protocol: must be TCP, UDP or SCTP, got "tcp"');
  rejects(doc('spec:\n  containers:\n    - name: a\n      ports: [{containerPort: 80, name: HTTP}]\n'), /spec\.containers\[0\]\.ports\[0\]\.name: must be an IANA service name/);
  rejects(doc('spec:\n  hostNetwork: "yes"\n  containers: [{name: a}]\n'), 'lab.yaml: document 2 (Pod demo/web): spec.hostNetwork: must be true or false, got "yes"');
});

test('a pasted status is ignored, as the API server ignores it on create', () => {
  const m = parseManifests(`${NS}---\n${pod('spec: {containers: [{name: web}]}\nstatus: {podIP: 10.1.2.3}\n')}`, 'lab.yaml');
  assert.equal(m.pods[0]!.status, undefined);
});

test('Service ports: port, targetPort number or name, names required with several ports', () => {
  const svc = (spec: string): string => `${NS}---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n${spec}`;
  rejects(svc('  ports: [{port: 80, targetPort: "8080"}]\n'), /^lab\.yaml: document 2 \(Service demo\/web\): spec\.ports\[0\]\.targetPort: must be an IANA service name .*got "8080"$/);
  rejects(svc('  ports: [{port: 80, targetPort: 0}]\n'), 'lab.yaml: document 2 (Service demo/web): spec.ports[0].targetPort: must be an integer 1-65535, got 0');
  rejects(svc('  ports: [{port: 80, targetPort: [1]}]\n'), 'lab.yaml: document 2 (Service demo/web): spec.ports[0].targetPort: must be a port number 1-65535 or the name of a container port, got a list');
  rejects(svc('  ports: [{port: 80, name: a}, {port: 81}]\n'), 'lab.yaml: document 2 (Service demo/web): spec.ports[1].name: is required when a service has more than one port');
  rejects(svc('  ports: []\n'), 'lab.yaml: document 2 (Service demo/web): spec.ports: must list at least one port');
  rejects(svc('  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n'), 'lab.yaml: document 2 (Service demo/web): spec.clusterIP: must be an IPv4 address or "None" (headless), got "10.96.0.300"');
  const m = parseManifests(svc('  clusterIP: None\n  selector: {app: web}\n'), 'lab.yaml');
  assert.deepEqual(m.services[0]!.spec, { clusterIP: 'None', selector: { app: 'web' }, ports: [] });
});

test('Deployment: replicas, template and a selector matching the template labels', () => {
  const dep = (spec: string): string => `${NS}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: demo}\nspec:\n${spec}`;
  const template = '  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: api}]}\n';
  rejects(dep(`  replicas: -1\n  selector: {matchLabels: {app: api}}\n${template}`), 'lab.yaml: document 2 (Deployment demo/api): spec.replicas: must be an integer 0-10000, got -1');
  // An absurd count is refused by name, not expanded until the heap runs out.
  rejects(dep(`  replicas: 50000000\n  selector: {matchLabels: {app: api}}\n${template}`), 'lab.yaml: document 2 (Deployment demo/api): spec.replicas: must be an integer 0-10000, got 50000000');
  rejects(dep('  selector: {matchLabels: {app: api}}\n'), 'lab.yaml: document 2 (Deployment demo/api): spec.template: is required');
  rejects(dep(`  selector: {matchLabels: {app: other}}\n${template}`),
    'lab.yaml: document 2 (Deployment demo/api): spec.template.metadata.labels: {"app":"api"} does not match spec.selector (Kubernetes requires the template to carry the selector\'s labels)');
  rejects(dep(template), 'lab.yaml: document 2 (Deployment demo/api): spec.selector: is required');
  rejects(dep(`  selector: {matchExpressions: [{key: app, operator: NotIn, values: [api]}]}\n${template}`), /spec\.template\.metadata\.labels: .* does not match spec\.selector/);
  const m = parseManifests(dep(`  replicas: 0\n  selector: {matchExpressions: [{key: app, operator: In, values: [api, web]}]}\n${template}`), 'lab.yaml');
  assert.equal(m.pods.length, 0);
  const one = parseManifests(dep(`  selector: {matchLabels: {app: api}}\n${template}`), 'lab.yaml');
  assert.deepEqual(one.pods.map((p) => p.metadata.name), ['api-0'], 'replicas defaults to 1');
});

test('a name clash names both documents', () => {
  const web = pod('spec: {containers: [{name: web}]}\n');
  rejects(`${NS}---\n${web}---\n${web}`, 'lab.yaml: document 3 (Pod demo/web): metadata.name: name clash: Pod demo/web is already defined in lab.yaml document 2');
  // Same name, different kind or namespace: no clash.
  const m = parseManifests(`${NS}---\n${web}---\n${pod('spec: {containers: [{name: web}]}\n', 'web', 'default')}`, 'lab.yaml');
  assert.equal(m.pods.length, 2);
});

test('a name clash across files names both files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-manifest-'));
  try {
    writeFileSync(join(dir, 'a.yaml'), `${NS}---\n${pod('spec: {containers: [{name: web}]}\n')}`);
    writeFileSync(join(dir, 'b.yaml'), pod('spec: {containers: [{name: web}]}\n'));
    assert.throws(() => loadManifests([dir]), {
      message: `${join(dir, 'b.yaml')}: document 1 (Pod demo/web): metadata.name: name clash: Pod demo/web is already defined in ${join(dir, 'a.yaml')} document 2`,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a Deployment replica named like a declared Pod is a name clash', () => {
  const text = [
    NS,
    pod('spec: {containers: [{name: web}]}\n', 'api-1'),
    'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: demo}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: api}]}\n',
  ].join('---\n');
  rejects(text, 'lab.yaml: document 3 (Deployment demo/api): metadata.name: name clash: replica 1 would be Pod demo/api-1, the same name as the Pod in lab.yaml document 2');
});

test('objects must live in a declared namespace; default and kube-system always exist', () => {
  rejects(pod('spec: {containers: [{name: web}]}\n'), /^lab\.yaml: document 1 \(Pod demo\/web\): metadata\.namespace: namespace "demo" is not declared in the files/);
  const m = parseManifests(
    [
      'apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a}]}\n',
      pod('spec: {containers: [{name: a}]}\n', 'b', 'kube-system'),
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n',
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}\n',
    ].join('---\n'),
    'lab.yaml',
  );
  assert.equal(m.pods[0]!.metadata.namespace, 'default', 'an unset namespace is default');
  assert.equal(m.namespaces.length, 2);
  // Namespaces may be declared after the objects in them.
  assert.equal(parseManifests(`${pod('spec: {containers: [{name: a}]}\n')}---\n${NS}`, 'x').pods.length, 1);
});

test('unknown kinds are kept untouched in others, and checked for clashes and namespaces', () => {
  const policy = 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: demo}\nspec:\n  action: DENY\n  rules: [{}]\n';
  const knative = 'apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec: {template: {}}\n';
  const m = parseManifests([NS, policy, knative].join('---\n'), 'lab.yaml');
  assert.deepEqual(m.others.map((o) => [o.index, o.apiVersion, o.kind]), [
    [2, 'security.istio.io/v1', 'AuthorizationPolicy'],
    [3, 'serving.knative.dev/v1', 'Service'],
  ]);
  assert.deepEqual(m.others[0]!.object.spec, { action: 'DENY', rules: [{}] });
  assert.equal(m.services.length, 0, 'a Service of another API group is not a core Service');
  rejects([NS, policy, policy].join('---\n'), /document 3 \(AuthorizationPolicy demo\/deny\): metadata\.name: name clash/);
  rejects(policy, /AuthorizationPolicy demo\/deny\): metadata\.namespace: namespace "demo" is not declared/);
});

test('the Lab document: shorthand nodes, defaults, CIDRs and fail mode validated', () => {
  const lab = (spec: string, name = 'demo'): string => `apiVersion: ambit.dev/v1alpha1\nkind: Lab\nmetadata: {name: ${name}}\nspec:\n${spec}`;
  const m = parseManifests(lab('  nodes: [a, {name: b, podCIDR: 10.1.0.0/16}]\n  failMode: open\n  serviceCIDR: 10.100.0.0/24\n  trustDomain: mesh.example\n  ztunnelWorkers: 2\n'), 'lab.yaml');
  assert.deepEqual(m.labs[0]!.spec, {
    nodes: [{ name: 'a' }, { name: 'b', podCIDR: '10.1.0.0/16' }],
    serviceCIDR: '10.100.0.0/24',
    fabricCIDR: DEFAULT_FABRIC_CIDR,
    failMode: 'open',
    trustDomain: 'mesh.example',
    ztunnelWorkers: 2,
  });
  rejects(lab('  nodes: [a]\n  ztunnelWorkers: 0\n'), 'lab.yaml: document 1 (Lab demo): spec.ztunnelWorkers: must be a whole number from 1 to 64, got 0');
  assert.equal(parseManifests(lab('  nodes: [a]\n'), 'lab.yaml').labs[0]!.spec.trustDomain, 'cluster.local', "Istio's default trust domain");
  rejects(lab('  nodes: [a]\n  trustDomain: Not_A_Name\n'), 'lab.yaml: document 1 (Lab demo): spec.trustDomain: must be a DNS name such as cluster.local, got "Not_A_Name"');
  rejects(lab('  nodes: []\n'), 'lab.yaml: document 1 (Lab demo): spec.nodes: must list at least one node');
  rejects(lab('  nodes: [a, a]\n'), 'lab.yaml: document 1 (Lab demo): spec.nodes[1]: duplicate node name "a" (also spec.nodes[0])');
  rejects(lab('  nodes: [Node_1]\n'), /^lab\.yaml: document 1 \(Lab demo\): spec\.nodes\[0\]: must be a DNS-1123 label/);
  rejects(lab('  nodes: [{name: a, podCIDR: 10.1.2.3/24}]\n'), 'lab.yaml: document 1 (Lab demo): spec.nodes[0].podCIDR: host bits must be zero (did you mean 10.1.2.0/24?), got "10.1.2.3/24"');
  rejects(lab('  nodes: [{name: a, podCIDR: 10.1.2.0/30}]\n'), 'lab.yaml: document 1 (Lab demo): spec.nodes[0].podCIDR: prefix length must be between /8 and /29, got "10.1.2.0/30"');
  rejects(lab('  nodes: [a]\n  serviceCIDR: fd00::/64\n'), 'lab.yaml: document 1 (Lab demo): spec.serviceCIDR: must be an IPv4 CIDR like 10.0.0.0/24, got "fd00::/64"');
  rejects(lab('  nodes: [a]\n  failMode: bypass\n'), 'lab.yaml: document 1 (Lab demo): spec.failMode: must be "closed" or "open", got "bypass"');
  rejects(lab('  nodes: [a]\n', 'a'.repeat(33)), /metadata\.name: must be a DNS-1123 label .*at most 32 characters/);
  rejects(lab('  nodes: [a]\n', 'a'.repeat(70)), /metadata\.name: must be a DNS-1123 label .*at most 32 characters/);
  rejects('apiVersion: v1\nkind: Lab\nmetadata: {name: x}\nspec: {nodes: [a]}\n', 'lab.yaml: document 1 (Lab x): apiVersion: must be "ambit.dev/v1alpha1" for kind Lab, got "v1"');
});

test('IPv4 CIDR parsing rejects what Kubernetes rejects', () => {
  assert.deepEqual(parseIpv4Cidr('10.244.1.0/24'), { network: (10 << 24 | 244 << 16 | 1 << 8) >>> 0, prefix: 24, size: 256, text: '10.244.1.0/24' });
  assert.match(parseIpv4Cidr('010.0.0.0/8') as string, /must be an IPv4 CIDR/);
  assert.match(parseIpv4Cidr('10.0.0.0') as string, /must be an IPv4 CIDR/);
  assert.match(parseIpv4Cidr('10.0.0.0/33') as string, /prefix length/);
});

test('loadManifests reads a directory\'s *.yaml and *.yml in name order, not recursively', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-manifest-'));
  try {
    writeFileSync(join(dir, 'b.yml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n');
    writeFileSync(join(dir, 'a.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n');
    writeFileSync(join(dir, 'notes.txt'), 'not yaml: [');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'c.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n');
    const m = loadManifests([dir, join(dir, 'sub', 'c.yaml')]);
    assert.deepEqual(m.namespaces.map((n) => n.metadata.name), ['a', 'b', 'c']);
    assert.throws(() => loadManifests([join(dir, 'missing.yaml')]), (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${join(dir, 'missing.yaml')}: cannot read: `));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
