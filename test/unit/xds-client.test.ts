import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { CertificateAuthority } from '../../controlplane/ca/authority.js';
import { workloadUpdate } from '../../controlplane/discovery.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE } from '../../mesh/xds/types.js';
import { Address, Workload } from '../../proto/gen/istio/workload/workload.js';
import { Authorization } from '../../proto/gen/istio/security/authorization.js';
import { XdsClient, type XdsUpdate } from '../../mesh/xds/client.js';
import { startTestXds, type TestXds } from '../support/xds.js';

function workload(name: string, serviceAccount = 'default'): Workload {
  return Workload.fromPartial({ uid: `Kubernetes//Pod/demo/${name}`, name, namespace: 'demo', serviceAccount, addresses: [Buffer.from([10, 0, 0, name.charCodeAt(0)])] });
}

function set(s: TestXds, workloads: Workload[], removals: string[] = []): void {
  s.xds.publish(ADDRESS_TYPE, s.xds.cache.apply(ADDRESS_TYPE, workloads.map((w) => workloadUpdate(w, '')), removals));
}

function client(s: { address: string; root: string }, token: () => string, validate?: (name: string, a: Address) => string | undefined): XdsClient {
  return new XdsClient({
    address: s.address,
    rootCert: s.root,
    token,
    node: { id: 'ztunnel~10.0.0.1~ztunnel.node-1~ambit-system.svc.cluster.local', metadata: { NODE_NAME: 'node-1' } },
    types: [
      { typeUrl: ADDRESS_TYPE, decode: (b) => Address.decode(b), ...(validate ? { validate: validate as (n: string, v: unknown) => string | undefined } : {}) },
      { typeUrl: AUTHORIZATION_TYPE, decode: (b) => Authorization.decode(b) },
    ],
    backoff: { initialMs: 50, maxMs: 200 },
    log: pino({ level: process.env.AMBIT_TEST_LOG ?? 'silent' }),
  });
}

function nextUpdate(c: XdsClient, typeUrl: string, timeoutMs = 5000): Promise<XdsUpdate> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${typeUrl} update within ${timeoutMs} ms`)), timeoutMs);
    c.onUpdate((u) => {
      if (u.typeUrl !== typeUrl) return;
      clearTimeout(timer);
      resolve(u);
    });
  });
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('xDS client: ready once every type has its initial state; follows updates and removals', async () => {
  const s = await startTestXds();
  set(s, [workload('a'), workload('b')]);
  const c = client(s, () => s.tokens['node-1']!);
  try {
    assert.equal(c.isReady(), false);
    c.start();
    await c.ready();
    assert.ok(c.isReady());
    assert.deepEqual([...c.resources(ADDRESS_TYPE).keys()].sort(), ['Kubernetes//Pod/demo/a', 'Kubernetes//Pod/demo/b']);
    assert.equal(c.resources(AUTHORIZATION_TYPE).size, 0, 'an empty type is ready too');
    const updated = nextUpdate(c, ADDRESS_TYPE);
    set(s, [workload('a', 'changed')], ['Kubernetes//Pod/demo/b']);
    const u = await updated;
    assert.deepEqual(u.updated, ['Kubernetes//Pod/demo/a']);
    assert.deepEqual(u.removed, ['Kubernetes//Pod/demo/b']);
    assert.equal(c.get<Address>(ADDRESS_TYPE, 'Kubernetes//Pod/demo/a')?.workload?.serviceAccount, 'changed');
    await until('the ACK to reach the server', () => s.xds.status().some((x) => x.types[ADDRESS_TYPE]?.ackedNonce === c.status().types[ADDRESS_TYPE]?.lastNonce));
  } finally {
    c.close();
    await s.close();
  }
});

test('xDS client: keeps serving the last good state while the control plane is away, then resyncs sending its versions', async () => {
  const authority = await CertificateAuthority.load(await CertificateAuthority.generateRoot('cluster.local'));
  let s = await startTestXds(['node-1'], { authority });
  const port = Number(s.address.split(':')[1]);
  let token = s.tokens['node-1']!;
  set(s, [workload('a'), workload('b'), workload('c')]);
  const c = client(s, () => token);
  try {
    c.start();
    await c.ready();
    await s.close();
    await until('the client to notice', () => !c.status().connected);
    assert.equal(c.resources(ADDRESS_TYPE).size, 3, 'the last good state is kept');
    assert.ok(c.isReady(), 'still ready: serving the last good state');

    s = await startTestXds(['node-1'], { authority, port });
    token = s.tokens['node-1']!;
    // The restarted server has b changed and c gone; a is the same.
    set(s, [workload('a'), workload('b', 'changed')]);
    const resync = nextUpdate(c, ADDRESS_TYPE, 10_000);
    const u = await resync;
    assert.deepEqual(u.updated, ['Kubernetes//Pod/demo/b'], 'only the changed resource was sent: the client sent the versions it held');
    assert.deepEqual(u.removed, ['Kubernetes//Pod/demo/c']);
    assert.deepEqual([...c.resources(ADDRESS_TYPE).keys()].sort(), ['Kubernetes//Pod/demo/a', 'Kubernetes//Pod/demo/b']);
    assert.ok(c.status().reconnects >= 1);
  } finally {
    c.close();
    await s.close();
  }
});

test('xDS client: an invalid resource is NACKed with its name, its last good version kept, the rest applied', async () => {
  const s = await startTestXds();
  set(s, [workload('a'), workload('b')]);
  const c = client(s, () => s.tokens['node-1']!, (_name, a) => (a.workload?.serviceAccount === 'bad' ? 'service account "bad" is not allowed' : undefined));
  try {
    c.start();
    await c.ready();
    const updated = nextUpdate(c, ADDRESS_TYPE);
    set(s, [workload('a', 'bad'), workload('b', 'fine')]);
    const u = await updated;
    assert.deepEqual(u.updated, ['Kubernetes//Pod/demo/b']);
    assert.equal(c.get<Address>(ADDRESS_TYPE, 'Kubernetes//Pod/demo/a')?.workload?.serviceAccount, 'default', 'the last good version of a is kept');
    assert.match(c.status().types[ADDRESS_TYPE]!.nack ?? '', /Kubernetes\/\/Pod\/demo\/a: service account "bad" is not allowed/);
    await until('the server to record the NACK', () => s.xds.status().some((x) => /service account "bad"/.test(x.types[ADDRESS_TYPE]?.nack ?? '')));
  } finally {
    c.close();
    await s.close();
  }
});

test('xDS client: a refused token is retried with backoff and not fatal; the client becomes ready once it is accepted', async () => {
  const s = await startTestXds();
  let token = 'wrong';
  const c = client(s, () => token);
  try {
    c.start();
    await until('a refusal', () => /UNAUTHENTICATED/.test(c.status().lastError ?? ''));
    assert.equal(c.isReady(), false);
    token = s.tokens['node-1']!;
    await c.ready();
  } finally {
    c.close();
    await s.close();
  }
});
