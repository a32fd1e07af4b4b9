import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { KubernetesApiError } from '../../mesh/k8s/errors.js';
import { DirectoryRootStore } from '../../controlplane/ca/root-store.js';
import { CA_SECRET_TYPE, SecretRootStore } from '../../controlplane/ca/secret-root-store.js';
import type { SigningMaterial } from '../../controlplane/ca/types.js';
import { ConfigError } from '../../mesh/errors.js';
import { FakeApiServer, type ResourceRef } from '../support/fake-apiserver.js';

const log = pino({ level: 'silent' });
const SECRETS: ResourceRef = { groupVersion: 'v1', plural: 'secrets' };
const FILES = ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem'];

function pem(label: string, body: string): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(body).toString('base64')}\n-----END ${label}-----\n`;
}

/** Distinct PEM-shaped material per tag: the stores keep text, they do not parse certificates. */
function material(tag: string): SigningMaterial {
  return { caCert: pem('CERTIFICATE', `ca ${tag}`), caKey: pem('PRIVATE KEY', `key ${tag}`), certChain: pem('CERTIFICATE', `ca ${tag}`), rootCert: pem('CERTIFICATE', `root ${tag}`) };
}

describe('DirectoryRootStore', () => {
  let base: string;

  beforeEach(() => {
    base = mkdtempSync(join(tmpdir(), 'ambit-root-store-'));
  });

  afterEach(() => {
    rmSync(base, { recursive: true, force: true });
  });

  it('round-trips the material in Istio\'s cacerts layout, the key 0600, and keeps the first', async () => {
    const dir = join(base, 'state', 'ca');
    const store = new DirectoryRootStore(dir);
    assert.equal(await store.load(), null, 'no directory yet');
    const first = material('one');
    assert.deepEqual(await store.saveIfAbsent(first), first);
    assert.deepEqual(readdirSync(dir).sort(), FILES, 'the four files and no temporary ones');
    assert.equal(statSync(join(dir, 'ca-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(await new DirectoryRootStore(dir).load(), first);
    assert.deepEqual(await store.saveIfAbsent(material('two')), first, 'stored material is never replaced');
    assert.deepEqual(await store.load(), first);

    // A self-signed root has an empty chain.
    const selfSigned = { ...material('three'), certChain: '' };
    const other = new DirectoryRootStore(join(base, 'self-signed'));
    assert.deepEqual(await other.saveIfAbsent(selfSigned), selfSigned);
    assert.deepEqual(await other.load(), selfSigned);
  });

  it('an empty directory is absent; a partial one is a ConfigError naming the missing files', async () => {
    const dir = join(base, 'cacerts');
    mkdirSync(dir);
    const store = new DirectoryRootStore(dir);
    assert.equal(await store.load(), null);
    writeFileSync(join(dir, 'ca-cert.pem'), material('x').caCert);
    writeFileSync(join(dir, 'root-cert.pem'), material('x').rootCert);
    const partial = { name: 'ConfigError', message: `${dir}: the CA directory is partial: ${join(dir, 'ca-key.pem')}, ${join(dir, 'cert-chain.pem')} missing (it needs ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)` };
    await assert.rejects(store.load(), partial);
    await assert.rejects(store.saveIfAbsent(material('y')), partial, 'saving does not complete someone else\'s directory');
  });

  it('an unreadable or malformed file is a ConfigError naming it', async () => {
    const dir = join(base, 'cacerts');
    const store = new DirectoryRootStore(dir);
    await store.saveIfAbsent(material('x'));
    rmSync(join(dir, 'ca-key.pem'));
    mkdirSync(join(dir, 'ca-key.pem'));
    await assert.rejects(store.load(), { name: 'ConfigError', message: new RegExp(`^${join(dir, 'ca-key.pem')}: cannot read: EISDIR`) });
    rmSync(join(dir, 'ca-key.pem'), { recursive: true });
    writeFileSync(join(dir, 'ca-key.pem'), 'not a key');
    await assert.rejects(store.load(), { name: 'ConfigError', message: `${join(dir, 'ca-key.pem')}: is not PEM; expected the signing certificate's private key` });
    writeFileSync(join(dir, 'ca-key.pem'), material('x').caKey);
    writeFileSync(join(dir, 'root-cert.pem'), '');
    await assert.rejects(store.load(), { name: 'ConfigError', message: `${join(dir, 'root-cert.pem')}: is empty; expected the root certificate(s)` });
    await assert.rejects(new DirectoryRootStore(join(base, 'new')).saveIfAbsent({ ...material('z'), caKey: '' }), ConfigError);
  });

  it('concurrent saveIfAbsent calls agree on one material', async () => {
    const dir = join(base, 'ca');
    const stores = Array.from({ length: 8 }, () => new DirectoryRootStore(dir));
    const results = await Promise.all(stores.map((s, i) => s.saveIfAbsent(material(`m${i}`))));
    const stored = await new DirectoryRootStore(dir).load();
    assert.ok(stored !== null);
    for (const result of results) assert.deepEqual(result, stored);
    assert.ok(results.some((_, i) => stored.caKey === material(`m${i}`).caKey), 'one writer\'s material, whole');
    assert.equal(stored.caCert, stored.certChain, 'no mix of two writers');
    assert.deepEqual(readdirSync(dir).sort(), FILES);
  });

  it('concurrent processes agree on one material', async () => {
    const dir = join(base, 'ca');
    const moduleUrl = new URL('../../controlplane/ca/root-store.js', import.meta.url).href;
    const at = Date.now() + 500;
    // Each process waits for the same instant, then saves its own material and prints what it got.
    const script = `
      const [moduleUrl, dir, tag, at] = process.argv.slice(1);
      const { DirectoryRootStore } = await import(moduleUrl);
      const pem = (l, b) => '-----BEGIN ' + l + '-----\\n' + Buffer.from(b).toString('base64') + '\\n-----END ' + l + '-----\\n';
      await new Promise((r) => setTimeout(r, Math.max(0, Number(at) - Date.now())));
      const m = await new DirectoryRootStore(dir).saveIfAbsent({ caCert: pem('CERTIFICATE', 'ca ' + tag), caKey: pem('PRIVATE KEY', 'key ' + tag), certChain: pem('CERTIFICATE', 'ca ' + tag), rootCert: pem('CERTIFICATE', 'root ' + tag) });
      process.stdout.write(JSON.stringify(m));
    `;
    const run = promisify(execFile);
    const outputs = await Promise.all(
      Array.from({ length: 4 }, (_, i) => run(process.execPath, ['--input-type=module', '-e', script, moduleUrl, dir, `p${i}`, String(at)])),
    );
    const stored = await new DirectoryRootStore(dir).load();
    assert.ok(stored !== null);
    for (const { stdout } of outputs) assert.deepEqual(JSON.parse(stdout), stored);
    assert.equal(stored.caCert, stored.certChain);
    assert.deepEqual(readdirSync(dir).sort(), FILES);
  });
});

describe('SecretRootStore against a fake API server', { timeout: 30_000 }, () => {
  let api: FakeApiServer;

  beforeEach(async () => {
    api = await FakeApiServer.start();
  });

  afterEach(async () => {
    await api.close();
  });

  function store(name?: string): SecretRootStore {
    return new SecretRootStore({ kubeConfig: api.kubeConfig(), namespace: 'istio-system', log, ...(name !== undefined && { name }) });
  }

  it('round-trips the material through an istio.io/ca-root Secret; absent is null', async () => {
    const s = store();
    assert.equal(await s.load(), null, '404 is no material');
    const m = material('one');
    assert.deepEqual(await s.saveIfAbsent(m), m);
    const created = api.requestsMatching({ method: 'POST', path: '/api/v1/namespaces/istio-system/secrets' });
    assert.equal(created.length, 1);
    const secret = api.get(SECRETS, 'istio-ca-secret', 'istio-system');
    assert.equal(secret?.type, CA_SECRET_TYPE);
    assert.deepEqual(secret?.data, {
      'ca-cert.pem': Buffer.from(m.caCert).toString('base64'),
      'ca-key.pem': Buffer.from(m.caKey).toString('base64'),
      'cert-chain.pem': Buffer.from(m.certChain).toString('base64'),
      'root-cert.pem': Buffer.from(m.rootCert).toString('base64'),
    });
    assert.deepEqual(await store().load(), m);
    assert.equal(await store('other-name').load(), null);
  });

  it('a Secret created first by another replica (409) is what saveIfAbsent returns', async () => {
    const theirs = material('theirs');
    await store().saveIfAbsent(theirs);
    assert.deepEqual(await store().saveIfAbsent(material('mine')), theirs);
    const posts = api.requestsMatching({ method: 'POST' });
    assert.equal(posts.length, 2, 'the second create was tried and refused');

    // Two replicas at once: one root.
    const [a, b] = await Promise.all([store('race').saveIfAbsent(material('a')), store('race').saveIfAbsent(material('b'))]);
    assert.deepEqual(a, b);
    assert.deepEqual(await store('race').load(), a);
  });

  it('loads istiod\'s own istio-ca-secret, where the root is ca-cert.pem', async () => {
    const root = material('istio');
    const b64 = (text: string): string => Buffer.from(text).toString('base64');
    api.upsert(SECRETS, {
      metadata: { name: 'istio-ca-secret', namespace: 'istio-system' },
      type: CA_SECRET_TYPE,
      data: { 'ca-cert.pem': b64(root.caCert), 'ca-key.pem': b64(root.caKey), 'cert-chain.pem': '', 'key.pem': '', 'root-cert.pem': '' },
    });
    assert.deepEqual(await store().load(), { caCert: root.caCert, caKey: root.caKey, certChain: '', rootCert: root.caCert });
  });

  it('a malformed Secret is a ConfigError; an API failure a KubernetesApiError', async () => {
    api.upsert(SECRETS, { metadata: { name: 'broken', namespace: 'istio-system' }, type: CA_SECRET_TYPE, data: { 'ca-cert.pem': Buffer.from(material('x').caCert).toString('base64') } });
    await assert.rejects(store('broken').load(), { name: 'ConfigError', message: 'Secret istio-system/broken: data key ca-key.pem is missing' });
    api.failRequests({ method: 'GET', pathPrefix: '/api/v1/namespaces/istio-system/secrets', status: 403 });
    await assert.rejects(store().load(), (err: unknown) => {
      assert.ok(err instanceof KubernetesApiError);
      assert.equal(err.status, 403);
      assert.equal(err.message, 'cannot read Secret istio-system/istio-ca-secret: HTTP 403: injected failure');
      return true;
    });
    api.failRequests({ method: 'POST', pathPrefix: '/api/v1/namespaces/istio-system/secrets', status: 500 });
    await assert.rejects(store().saveIfAbsent(material('y')), { name: 'KubernetesApiError', message: /^cannot create Secret istio-system\/istio-ca-secret: HTTP 500/ });
    api.stallRequests({ method: 'GET' });
    const slow = new SecretRootStore({ kubeConfig: api.kubeConfig(), namespace: 'istio-system', log, timeoutMs: 200 });
    await assert.rejects(slow.load(), { name: 'KubernetesApiError', message: /did not answer within 200 ms/ });
  });
});
