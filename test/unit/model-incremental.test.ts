import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel } from '../../controlplane/model/build.js';
import { IncrementalModel } from '../../controlplane/model/incremental.js';
import { snapshotJson } from '../../controlplane/model/render.js';
import { setMemoization } from '../../controlplane/model/memo.js';
import { DEFAULT_MODEL_OPTIONS, type ModelSnapshot } from '../../controlplane/model/types.js';
import { mutate, rng, syntheticCluster } from '../support/synthetic.js';

/** The reference: a full build with every memoized result computed afresh. */
function reference(view: Parameters<typeof buildModel>[0]): ModelSnapshot {
  setMemoization(false);
  try {
    return buildModel(view, DEFAULT_MODEL_OPTIONS);
  } finally {
    setMemoization(true);
  }
}

/** Names whose rendered content differs between two snapshots, per resource type. */
function differences(before: ModelSnapshot, after: ModelSnapshot): Record<'workloads' | 'services' | 'authorizations' | 'waypoints', Set<string>> {
  const a = snapshotJson(before) as Record<string, Record<string, unknown>>;
  const b = snapshotJson(after) as Record<string, Record<string, unknown>>;
  const out = { workloads: new Set<string>(), services: new Set<string>(), authorizations: new Set<string>(), waypoints: new Set<string>() };
  for (const type of Object.keys(out) as (keyof typeof out)[]) {
    for (const name of new Set([...Object.keys(a[type]!), ...Object.keys(b[type]!)])) {
      if (JSON.stringify(a[type]![name]) !== JSON.stringify(b[type]![name])) out[type].add(name);
    }
  }
  return out;
}

// The incremental model may only skip work that cannot change the result: after every random
// change its snapshot must equal a full rebuild without any memoized result, and every resource that differs must be among
// the names it reports as changed (those are what gets pushed; a missing one is a stale proxy).
test('incremental model: equals a full rebuild after each of 600 random changes, and reports every changed resource', () => {
  const r = rng(4);
  let view = syntheticCluster({ namespaces: 8, pods: 160, services: 40, policies: 30, nodes: 3 });
  const model = new IncrementalModel(DEFAULT_MODEL_OPTIONS);
  model.update(view);
  let full = reference(view);
  assert.deepEqual(snapshotJson(model.snapshot()), snapshotJson(full), 'the first update is a full build');
  assert.ok(full.workloads.size > 100, 'the synthetic cluster translates into workloads');
  for (let step = 0; step < 600; step++) {
    const { view: next, what } = mutate(view, r, step);
    const changes = model.update(next);
    const rebuilt = reference(next);
    assert.deepEqual(snapshotJson(model.snapshot()), snapshotJson(rebuilt), `after step ${step} (${what})`);
    const diff = differences(full, rebuilt);
    for (const type of ['workloads', 'services', 'authorizations', 'waypoints'] as const) {
      for (const name of diff[type]) assert.ok(changes[type].has(name), `step ${step} (${what}): ${type} ${name} changed but was not reported`);
    }
    view = next;
    full = rebuilt;
  }
});

test('incremental model: a pod change re-translates that pod only', () => {
  const view = syntheticCluster({ namespaces: 10, pods: 2000, services: 100, policies: 50 });
  const model = new IncrementalModel(DEFAULT_MODEL_OPTIONS);
  model.update(view);
  const pod = structuredClone(view.pods[17]!);
  pod.metadata.labels = { ...pod.metadata.labels, version: 'v9' };
  const next = { ...view, pods: view.pods.map((p, i) => (i === 17 ? pod : p)) };
  const changes = model.update(next);
  assert.equal(changes.translated, 1 + next.endpointSlices.filter((s) => s.metadata.namespace === pod.metadata.namespace).length);
  assert.deepEqual([...changes.workloads], [`Kubernetes//Pod/${pod.metadata.namespace}/${pod.metadata.name}`]);
});
