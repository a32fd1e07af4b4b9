import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadManifests, parseManifests } from '../../mesh/k8s/manifest.js';
import { planLab } from '../../lab/plan.js';
import { hostsFileFor } from '../../lab/hosts.js';

function fixture(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return join(dir, 'test', 'fixtures', name);
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
}

test('a pod in the service namespace resolves every form, including the bare name', () => {
  const file = fixture('two-node.yaml');
  const plan = planLab(loadManifests([file]), file);
  const client = plan.pods.find((p) => p.key === 'mesh/client')!;
  const text = hostsFileFor(plan, client);
  assert.ok(text.endsWith('\n'));
  assert.deepEqual(lines(text), [
    '127.0.0.1 localhost',
    '::1 localhost ip6-localhost ip6-loopback',
    '10.244.1.3 client',
    '10.96.0.10 echo.mesh echo.mesh.svc echo.mesh.svc.cluster.local echo',
  ]);
});

test('a pod in another namespace does not get the bare name', () => {
  const file = fixture('two-node.yaml');
  const plan = planLab(loadManifests([file]), file);
  const client = plan.pods.find((p) => p.key === 'plain/client')!;
  const svcLines = lines(hostsFileFor(plan, client)).filter((l) => l.startsWith('10.96.'));
  assert.deepEqual(svcLines, ['10.96.0.10 echo.mesh echo.mesh.svc echo.mesh.svc.cluster.local']);
});

test('headless services resolve to their pods\' own addresses', () => {
  const text = [
    'apiVersion: ambit.dev/v1alpha1\nkind: Lab\nmetadata: {name: t}\nspec: {nodes: [a]}\n',
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n',
    'apiVersion: v1\nkind: Pod\nmetadata: {name: db-0, namespace: demo, labels: {app: db}}\nspec: {containers: [{name: db}]}\n',
    'apiVersion: v1\nkind: Pod\nmetadata: {name: db-1, namespace: demo, labels: {app: db}}\nspec: {containers: [{name: db}]}\n',
    'apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: demo}\nspec: {clusterIP: None, selector: {app: db}}\n',
  ].join('---\n');
  const plan = planLab(parseManifests(text, 'lab.yaml'), 'lab.yaml');
  const out = lines(hostsFileFor(plan, plan.pods[0]!));
  assert.deepEqual(out.slice(3), [
    '10.244.1.3 db.demo db.demo.svc db.demo.svc.cluster.local db',
    '10.244.1.4 db.demo db.demo.svc db.demo.svc.cluster.local db',
  ]);
});
