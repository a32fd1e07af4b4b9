import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileSource, type RedirectionRecord } from '../../mesh/config/sources/file.js';
import type { NodeView } from '../../mesh/config/source.js';
import { ConfigError } from '../../mesh/errors.js';
import { podKey, type Pod } from '../../mesh/k8s/types.js';

function fixture(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return join(dir, 'test', 'fixtures', name);
}

const FIXTURE = readFileSync(fixture('two-node.yaml'), 'utf8');
const PLACEMENTS = {
  pods: {
    'mesh/client': { nodeName: 'node-1', podIP: '10.244.1.3' },
    'mesh/echo-0': { nodeName: 'node-2', podIP: '10.244.2.3' },
    'mesh/echo-1': { nodeName: 'node-1', podIP: '10.244.1.4' },
    'mesh/optout': { nodeName: 'node-1', podIP: '10.244.1.5' },
    'plain/client': { nodeName: 'node-1', podIP: '10.244.1.6' },
  },
};

/** A lab directory in tmp: the lab file, the lab's pod status, and a source watching both. */
class Harness {
  readonly dir = mkdtempSync(join(tmpdir(), 'ambit-file-source-'));
  readonly labFile = join(this.dir, 'lab.yaml');
  readonly statusFile = join(this.dir, 'state', 'pods.json');
  readonly redirectionFile = join(this.dir, 'state', 'redirection-node-1.json');
  readonly changes: NodeView[] = [];
  readonly errors: Error[] = [];
  source: FileSource | undefined;
  private wake: (() => void) | undefined;

  /** placements null: the lab has not written its status file yet. */
  constructor(text = FIXTURE, placements: unknown = PLACEMENTS) {
    writeFileSync(this.labFile, text);
    if (placements !== null) this.writeStatus(placements);
  }

  /** node null: no node, the cluster-wide view. */
  async start(opts: { paths?: string[]; node?: string | null } = {}): Promise<FileSource> {
    const node = opts.node === undefined ? 'node-1' : opts.node;
    const source = new FileSource({
      paths: opts.paths ?? [this.labFile],
      ...(node !== null && { node }),
      podStatusFile: this.statusFile,
      redirectionStatusFile: this.redirectionFile,
      debounceMs: 30,
      pollIntervalMs: 250,
    });
    source.onChange((view) => {
      this.changes.push(view);
      this.wake?.();
    });
    source.onError((err) => {
      this.errors.push(err);
      this.wake?.();
    });
    this.source = source;
    await source.start();
    return source;
  }

  /** Replaces the file the way editors do: write a temporary file, rename it over the original. */
  replace(file: string, text: string): void {
    writeFileSync(`${file}.swp`, text);
    renameSync(`${file}.swp`, file);
  }

  writeStatus(placements: unknown): void {
    mkdirSync(dirname(this.statusFile), { recursive: true });
    this.replace(this.statusFile, JSON.stringify(placements));
  }

  /** Resolves once `count` change and error events in total have arrived. */
  async events(count: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.changes.length + this.errors.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${count} events (got ${this.changes.length} changes, ${this.errors.length} errors)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  async cleanup(): Promise<void> {
    await this.source?.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function summary(view: NodeView): string[] {
  return view.pods.map((p) => `${p.metadata.namespace}/${p.metadata.name}@${p.spec.nodeName}=${p.status?.podIP ?? '-'}`);
}

test('the view is the namespaces plus this node\'s pods, placed and addressed by the status file', async () => {
  const h = new Harness();
  try {
    const view = (await h.start()).current();
    assert.deepEqual([...view.namespaces.keys()].sort(), ['mesh', 'plain']);
    assert.deepEqual(summary(view), [
      'mesh/client@node-1=10.244.1.3',
      'mesh/echo-1@node-1=10.244.1.4',
      'mesh/optout@node-1=10.244.1.5',
      'plain/client@node-1=10.244.1.6',
    ]);
  } finally {
    await h.cleanup();
  }
});

test('without a status file yet, pinned pods are in the view without an address', async () => {
  const h = new Harness(FIXTURE, null);
  try {
    const view = (await h.start({ node: 'node-2' })).current();
    assert.deepEqual(summary(view), ['mesh/server@node-2=-', 'plain/server@node-2=-']);
    // The lab writes the status file later, in a directory that did not exist at start.
    h.writeStatus({ pods: { 'mesh/server': { nodeName: 'node-2', podIP: '10.244.2.4' }, 'mesh/echo-0': { nodeName: 'node-2', podIP: '10.244.2.3' } } });
    await h.events(1);
    assert.deepEqual(summary(h.changes[0]!), ['mesh/echo-0@node-2=10.244.2.3', 'mesh/server@node-2=10.244.2.4', 'plain/server@node-2=-']);
  } finally {
    await h.cleanup();
  }
});

test('a namespace label edit in the watched file reaches onChange', async () => {
  const h = new Harness();
  try {
    await h.start();
    assert.equal(h.source!.current().namespaces.get('plain')!.metadata.labels, undefined);
    const edited = FIXTURE.replace('  name: plain\n', '  name: plain\n  labels:\n    istio.io/dataplane-mode: ambient\n');
    assert.notEqual(edited, FIXTURE);
    h.replace(h.labFile, edited);
    await h.events(1);
    assert.equal(h.errors.length, 0);
    assert.equal(h.changes[0]!.namespaces.get('plain')!.metadata.labels?.['istio.io/dataplane-mode'], 'ambient');
    assert.equal(h.source!.current(), h.changes[0]);
    // An in-place write (no rename) is seen too.
    writeFileSync(h.labFile, FIXTURE);
    await h.events(2);
    assert.equal(h.changes[1]!.namespaces.get('plain')!.metadata.labels, undefined);
  } finally {
    await h.cleanup();
  }
});

test('a malformed edit is reported, the last good view stays, and the fix applies', async () => {
  const h = new Harness();
  try {
    const good = (await h.start()).current();
    h.replace(h.labFile, FIXTURE.replace('containerPort: 8080\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: optout', 'containerPort: eighty\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: optout'));
    await h.events(1);
    assert.equal(h.changes.length, 0);
    const err = h.errors[0]!;
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, `${h.labFile}: document 7 (Pod mesh/server): spec.containers[0].ports[0].containerPort: must be an integer 1-65535, got "eighty"`);
    assert.equal(h.source!.current(), good, 'the last good view is kept');

    h.replace(h.labFile, FIXTURE.replace('  name: optout\n', '  name: optout\n  annotations:\n    note: fixed\n'));
    await h.events(2);
    const optout = h.changes[0]!.pods.find((p: Pod) => p.metadata.name === 'optout')!;
    assert.equal(optout.metadata.annotations?.note, 'fixed');
  } finally {
    await h.cleanup();
  }
});

test('a rewrite that does not change the view is not a change', async () => {
  const h = new Harness();
  try {
    await h.start();
    // Another node's pod changes: not this node's view.
    h.replace(h.labFile, FIXTURE.replace('  name: server\n  namespace: plain\n', '  name: server\n  namespace: plain\n  annotations: {note: x}\n'));
    h.replace(h.labFile, `# a comment\n${FIXTURE}`);
    await sleep(700);
    assert.deepEqual([h.changes.length, h.errors.length], [0, 0]);
  } finally {
    await h.cleanup();
  }
});

test('a watched directory: a new file with a pod for this node reaches onChange', async () => {
  const h = new Harness();
  try {
    const dir = join(h.dir, 'manifests');
    mkdirSync(dir);
    renameSync(h.labFile, join(dir, '00-lab.yaml'));
    await h.start({ paths: [dir] });
    writeFileSync(join(dir, '10-extra.yml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: mesh}\nspec: {nodeName: node-1, containers: [{name: c}]}\n');
    await h.events(1);
    assert.ok(h.changes[0]!.pods.some((p) => p.metadata.name === 'extra'));
  } finally {
    await h.cleanup();
  }
});

test('a malformed pod status file is reported and the last placements kept', async () => {
  const h = new Harness();
  try {
    const good = (await h.start()).current();
    h.replace(h.statusFile, '{"pods": ');
    await h.events(1);
    assert.match(h.errors[0]!.message, new RegExp(`^${h.statusFile.replace(/[.]/g, '\\.')}: the pod status file is not valid JSON`));
    assert.equal(h.source!.current(), good);
  } finally {
    await h.cleanup();
  }
});

test('start refuses invalid input, and a node the lab does not list', async () => {
  const bad = new Harness(FIXTURE.replace('replicas: 2', 'replicas: -2'));
  try {
    await assert.rejects(bad.start(), { name: 'ConfigError', message: /document 4 \(Deployment mesh\/echo\): spec\.replicas: must be an integer 0-10000, got -2/ });
  } finally {
    await bad.cleanup();
  }
  const h = new Harness();
  try {
    await assert.rejects(h.start({ node: 'node-7' }), { name: 'ConfigError', message: /node "node-7" is not a node of lab two-node \(nodes: node-1, node-2\)/ });
  } finally {
    await h.cleanup();
  }
});

test('recordRedirection writes the record atomically, coalescing bursts; null removes a pod', async () => {
  const h = new Harness();
  try {
    const source = await h.start();
    const [client, echo, optout] = source.current().pods;
    await Promise.all([
      source.recordRedirection(client!, 'pending'),
      source.recordRedirection(echo!, 'pending'),
      source.recordRedirection(client!, 'enabled'),
      source.recordRedirection(optout!, 'enabled'),
      source.recordRedirection(optout!, null),
    ]);
    const record = JSON.parse(readFileSync(h.redirectionFile, 'utf8')) as RedirectionRecord;
    assert.equal(record.node, 'node-1');
    assert.ok(!Number.isNaN(Date.parse(record.updated)));
    assert.deepEqual(record.pods, {
      'mesh/client': { state: 'enabled', ip: '10.244.1.3' },
      'mesh/echo-1': { state: 'pending', ip: '10.244.1.4' },
    });
    // No temporary file is left beside it.
    assert.deepEqual(readdirSync(dirname(h.redirectionFile)).sort(), ['pods.json', 'redirection-node-1.json']);

    // close() flushes a write that has not happened yet.
    void source.recordRedirection(echo!, 'enabled');
    await source.close();
    const flushed = JSON.parse(readFileSync(h.redirectionFile, 'utf8')) as RedirectionRecord;
    assert.equal(flushed.pods['mesh/echo-1']!.state, 'enabled');
  } finally {
    await h.cleanup();
  }
});

test('without a node the view holds every pod of every node, unplaced ones included', async () => {
  const placements = { pods: { ...PLACEMENTS.pods } as Record<string, { nodeName: string; podIP: string }> };
  delete placements.pods['mesh/echo-0'];
  const h = new Harness(FIXTURE, placements);
  try {
    const source = await h.start({ node: null });
    const view = source.current();
    assert.deepEqual([...view.namespaces.keys()].sort(), ['mesh', 'plain']);
    assert.deepEqual(summary(view), [
      'mesh/client@node-1=10.244.1.3',
      'mesh/echo-0@undefined=-',
      'mesh/echo-1@node-1=10.244.1.4',
      'mesh/optout@node-1=10.244.1.5',
      'mesh/server@node-2=-',
      'plain/client@node-1=10.244.1.6',
      'plain/server@node-2=-',
    ]);

    // A change to a pod on any node is a change of this view (a node's view would not see node-2's).
    h.replace(h.labFile, FIXTURE.replace('  name: server\n  namespace: plain\n', '  name: server\n  namespace: plain\n  annotations: {note: x}\n'));
    await h.events(1);
    assert.equal(h.errors.length, 0);
    assert.equal(h.changes[0]!.pods.find((p) => podKey(p) === 'plain/server')?.metadata.annotations?.note, 'x');

    // Placing the last pod is a change too.
    h.writeStatus(PLACEMENTS);
    await h.events(2);
    assert.ok(summary(h.changes[1]!).includes('mesh/echo-0@node-2=10.244.2.3'));

    // The redirection record of a source without a node names none.
    await source.recordRedirection(view.pods[0]!, 'enabled');
    const record = JSON.parse(readFileSync(h.redirectionFile, 'utf8')) as RedirectionRecord;
    assert.equal(record.node, undefined);
    assert.deepEqual(record.pods, { 'mesh/client': { state: 'enabled', ip: '10.244.1.3' } });
  } finally {
    await h.cleanup();
  }
});
