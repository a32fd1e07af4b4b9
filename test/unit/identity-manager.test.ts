// The agent's certificate manager against the real CA (gRPC, TLS, node credentials, node
// authorization) through the real CaClient. The only thing between them is a recorder that notes
// each call, to see order, concurrency and retry times. Lifetimes are seconds, so that renewal
// and expiry happen within the test.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { CertificateAuthority } from '../../controlplane/ca/authority.js';
import { NodeCredentials } from '../../controlplane/ca/node-credentials.js';
import { caService } from '../../controlplane/ca/service.js';
import type { SigningMaterial } from '../../controlplane/ca/types.js';
import { startGrpcServer, type GrpcEndpoint } from '../../controlplane/grpc-server.js';
import { IstioCertificateServiceService } from '../../proto/gen/istio/v1/auth/ca.js';
import { DEFAULT_BACKOFF, backoffDelay } from '../../agent/identity/backoff.js';
import { CertificateRefusedError, CertificateTimeoutError, IdentityManagerClosedError } from '../../agent/identity/errors.js';
import { IdentityManager, type CertificateSigner, type CertificateStatus, type HeldCertificate } from '../../agent/identity/manager.js';
import { CaClient } from '../../mesh/identity/ca-client.js';
import { identityUri, type Identity } from '../../mesh/identity/spiffe.js';
import type { Pod } from '../../mesh/k8s/types.js';
import { pod, startTestCa, type TestCa } from '../support/ca.js';

const log = pino({ level: 'silent' });
const id = (namespace: string, serviceAccount: string): Identity => ({ trustDomain: 'cluster.local', namespace, serviceAccount });

const WEB = id('shop', 'web');
const DB = id('shop', 'db');
const CACHE = id('shop', 'cache');
/** On node-1 but never in a node set: fetched on demand. */
const HOT = id('shop', 'hot');
/** Its only pod is on node-2: node-1 may not hold it. */
const REMOTE = id('shop', 'remote');
/** No pod anywhere. */
const GHOST = id('shop', 'ghost');
const BULK = Array.from({ length: 12 }, (_, i) => id('bulk', `bg-${i}`));

const PODS: Pod[] = [
  pod('shop', 'web-1', 'node-1', 'web'),
  pod('shop', 'db-1', 'node-1', 'db'),
  pod('shop', 'cache-1', 'node-1', 'cache'),
  pod('shop', 'hot-1', 'node-1', 'hot'),
  pod('shop', 'remote-1', 'node-2', 'remote'),
  ...BULK.map((b, i) => pod('bulk', `bg-${i}`, 'node-1', b.serviceAccount)),
];

interface Call {
  uri: string;
  at: number;
  ok?: boolean;
}

/** The real client, with each call noted (who, when, how it ended) and the most in progress at once. */
function recording(client: CertificateSigner): { ca: CertificateSigner; calls: Call[]; maxActive: () => number } {
  const calls: Call[] = [];
  let active = 0;
  let max = 0;
  return {
    calls,
    maxActive: () => max,
    ca: {
      createCertificate(csrPem, validitySeconds, identity, impersonate) {
        const call: Call = { uri: identityUri(identity), at: Date.now() };
        calls.push(call);
        max = Math.max(max, ++active);
        return client.createCertificate(csrPem, validitySeconds, identity, impersonate).then(
          (chain) => {
            call.ok = true;
            active--;
            return chain;
          },
          (err: unknown) => {
            call.ok = false;
            active--;
            throw err;
          },
        );
      },
    },
  };
}

async function until<T>(what: string, check: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Watches the timers set from files whose path contains `from`: those not yet fired or cleared,
 * and how many were set. (process.getActiveResourcesInfo() does not list unref'd timers.)
 */
function trackTimers(from: string): { live: () => NodeJS.Timeout[]; created: () => number; restore: () => void } {
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  const live = new Set<NodeJS.Timeout>();
  let created = 0;
  const tracked = (callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]): NodeJS.Timeout => {
    const mine = new Error().stack?.split('\n').slice(2).some((line) => line.includes(from)) ?? false;
    const timer = realSet((...a: unknown[]) => {
      live.delete(timer);
      callback(...a);
    }, ms, ...args);
    if (mine) {
      live.add(timer);
      created++;
    }
    return timer;
  };
  globalThis.setTimeout = tracked as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((timer: NodeJS.Timeout | string | number | undefined) => {
    if (typeof timer === 'object') live.delete(timer);
    realClear(timer);
  }) as typeof clearTimeout;
  return {
    live: () => [...live],
    created: () => created,
    restore: () => {
      globalThis.setTimeout = realSet;
      globalThis.clearTimeout = realClear;
    },
  };
}

const statusOf = (m: IdentityManager, i: Identity): CertificateStatus | undefined => m.snapshot().find((s) => s.identity === identityUri(i));
const allAvailable = (m: IdentityManager, n: number) => {
  const s = m.snapshot();
  return s.length === n && s.every((x) => x.state === 'Available');
};

/** The leaf is for `i`, for the held key, and chains to the CA's root. */
function checkHeld(held: HeldCertificate, i: Identity, root: string): X509Certificate {
  const leaf = new X509Certificate(held.chain[0]!);
  assert.equal(leaf.subjectAltName, `URI:${identityUri(i)}`);
  assert.ok(leaf.checkPrivateKey(createPrivateKey(held.keyPem)), 'the held key is the leaf’s');
  assert.ok(leaf.verify(new X509Certificate(root).publicKey), 'the leaf chains to the root');
  assert.equal(held.chain.at(-1), root, 'root last');
  assert.equal(held.serial, leaf.serialNumber.toLowerCase());
  assert.equal(held.notAfter.getTime(), Date.parse(leaf.validTo));
  return leaf;
}

describe('agent/identity: IdentityManager', () => {
  let ca: TestCa;
  let client: CaClient;

  before(async () => {
    ca = await startTestCa({ nodes: ['node-1', 'node-2'], pods: () => PODS });
    client = new CaClient({ address: ca.address, rootCert: ca.root, token: () => ca.tokens['node-1']! });
  });

  after(async () => {
    client?.close();
    await ca?.close();
  });

  test('prefetch: the identities of the node are fetched in the background, each with its own key', async () => {
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, log });
    m.setNodeIdentities([WEB, DB, CACHE]);
    assert.deepEqual(
      m.snapshot().map((s) => s.state),
      ['Initializing', 'Initializing', 'Initializing'],
    );
    await until('three certificates', () => allAvailable(m, 3));
    const held = [WEB, DB, CACHE].map((i) => {
      const h = m.get(i);
      assert.ok(h, identityUri(i));
      checkHeld(h, i, ca.root);
      return h;
    });
    assert.equal(new Set(held.map((h) => h.keyPem)).size, 3, 'keys differ');
    assert.equal(new Set(held.map((h) => h.serial)).size, 3);
    const s = statusOf(m, WEB)!;
    assert.equal(s.serial, held[0]!.serial);
    assert.equal(s.notAfter, held[0]!.notAfter.toISOString());
    assert.equal(s.lastError, undefined);
    // 24 h asked: renewal about 12 h from now.
    assert.ok(Math.abs(Date.parse(s.nextRefresh!) - (Date.now() + 12 * 3600_000)) < 120_000, s.nextRefresh);
    // A held certificate is served at once, with no new request.
    assert.equal(await m.fetch(WEB), held[0]);
    assert.equal(rec.calls.length, 3);
    m.close();
  });

  test('renewal at half-life: a new certificate about 2 s into a 4 s life, never a gap', async () => {
    const m = new IdentityManager({ ca: client, ttlSeconds: 4, log });
    m.setNodeIdentities([WEB]);
    const first = await m.fetch(WEB);
    const received = Date.now();
    const due = Date.parse(statusOf(m, WEB)!.nextRefresh!);
    // Half of what is left at arrival (the CA backdates not-before by 2 min, which is not life to be halved).
    assert.ok(Math.abs(due - (received + (first.notAfter.getTime() - received) / 2)) < 100, `renewal due at ${new Date(due).toISOString()}`);
    const changes: { at: number; cert: HeldCertificate }[] = [];
    let current = first;
    while (Date.now() < first.notAfter.getTime() + 1500) {
      const held = m.get(WEB);
      assert.ok(held, 'a valid certificate at every moment');
      assert.equal(statusOf(m, WEB)!.state, 'Available');
      if (held.serial !== current.serial) {
        changes.push({ at: Date.now(), cert: held });
        current = held;
      }
      await sleep(20);
    }
    assert.ok(changes.length >= 2, `renewed at least twice (${changes.length})`);
    const renewed = changes[0]!;
    assert.ok(renewed.at >= due - 20 && renewed.at < due + 1000, `renewed ${renewed.at - due} ms after it was due`);
    assert.ok(renewed.cert.notAfter > first.notAfter, 'the new certificate lives longer');
    assert.notEqual(renewed.cert.keyPem, first.keyPem, 'a new key with each certificate');
    checkHeld(renewed.cert, WEB, ca.root);
    m.close();
  });

  test('a 90-day certificate, whose half-life is beyond what one setTimeout can wait, is not renewed early', async (t) => {
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, ttlSeconds: 90 * 86_400, log });
    m.setNodeIdentities([WEB]);
    await m.fetch(WEB);
    const timers = trackTimers('identity/manager.');
    t.after(timers.restore);
    await sleep(100);
    assert.equal(rec.calls.length, 1);
    assert.equal(timers.created(), 0, 'one long timer, not a spin of overflowed ones');
    const due = Date.parse(statusOf(m, WEB)!.nextRefresh!);
    assert.ok(Math.abs(due - (Date.now() + 45 * 86_400_000)) < 120_000, new Date(due).toISOString());
    m.close();
  });

  test('at most `concurrency` requests at once', async () => {
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, concurrency: 3, log });
    m.setNodeIdentities(BULK);
    await until('all bulk identities', () => allAvailable(m, BULK.length));
    assert.ok(rec.maxActive() <= 3 && rec.maxActive() >= 2, `max in flight ${rec.maxActive()}`);
    assert.equal(rec.calls.length, BULK.length);
    m.close();
  });

  test('priority: a fetch() is served before the queued prefetches; a queued prefetch is promoted, not repeated', async () => {
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, concurrency: 1, log });
    m.setNodeIdentities(BULK);
    const hot = m.fetch(HOT);
    const promoted = m.fetch(BULK[8]!);
    checkHeld(await hot, HOT, ca.root);
    const waiting = m.snapshot().filter((s) => s.state === 'Initializing').length;
    assert.ok(waiting >= 9, `most prefetches still wait when the fetch is served (${waiting})`);
    checkHeld(await promoted, BULK[8]!, ca.root);
    await until('all', () => allAvailable(m, BULK.length + 1));
    const order = rec.calls.map((c) => c.uri);
    const [b0, b8] = [identityUri(BULK[0]!), identityUri(BULK[8]!)];
    assert.deepEqual(order.slice(0, 3), [b0, identityUri(HOT), b8], 'the prefetch in progress, then the two fetches');
    assert.deepEqual(
      order.slice(3),
      BULK.filter((_, i) => i !== 0 && i !== 8).map(identityUri),
      'then the other prefetches in order',
    );
    assert.equal(rec.maxActive(), 1);
    m.close();
  });

  test('an identity the node may not hold: Unavailable with the CA’s PERMISSION_DENIED, fetch() rejects, retries go on', async () => {
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, backoff: { initialMs: 100, maxMs: 400 }, log });
    m.setNodeIdentities([WEB, REMOTE]);
    const s = await until('REMOTE refused', () => {
      const r = statusOf(m, REMOTE);
      return r?.state === 'Unavailable' && statusOf(m, WEB)?.state === 'Available' ? r : undefined;
    });
    assert.match(s.lastError!, /PERMISSION_DENIED: no running pod of service account shop\/remote is on node node-1/);
    assert.equal(s.serial, undefined);
    assert.equal(m.get(REMOTE), undefined);
    await assert.rejects(m.fetch(REMOTE), (err: unknown) => {
      assert.ok(err instanceof CertificateRefusedError);
      assert.equal(err.code, 'AMBIT_CERT_REFUSED');
      assert.match(err.message, /spiffe:\/\/cluster\.local\/ns\/shop\/sa\/remote: .*PERMISSION_DENIED/);
      return true;
    });
    const remote = () => rec.calls.filter((c) => c.uri === identityUri(REMOTE)).length;
    const n = remote();
    await until('more attempts', () => remote() >= n + 2, 3000);
    // Outside the node set the CA decides: a refusal rejects and leaves nothing behind...
    await assert.rejects(m.fetch(GHOST), CertificateRefusedError);
    assert.equal(statusOf(m, GHOST), undefined);
    // ...and a grant is served.
    checkHeld(await m.fetch(HOT), HOT, ca.root);
    m.close();
  });

  test('release: identities that leave the node set disappear, also when their request is in progress; a waiting fetch is still served', async () => {
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, log });
    m.setNodeIdentities([WEB, DB, CACHE]);
    await until('three certificates', () => allAvailable(m, 3));
    const web = m.get(WEB)!;
    m.setNodeIdentities([WEB]);
    assert.deepEqual(
      m.snapshot().map((s) => s.identity),
      [identityUri(WEB)],
    );
    assert.equal(m.get(DB), undefined);
    assert.equal(m.get(CACHE), undefined);
    assert.equal(m.get(WEB), web, 'the remaining identity keeps its certificate');

    m.setNodeIdentities([WEB, HOT]);
    m.setNodeIdentities([WEB]);
    await until('the request for HOT to end', () => rec.calls.find((c) => c.uri === identityUri(HOT))?.ok !== undefined);
    await sleep(50);
    assert.equal(m.get(HOT), undefined, 'the answer to a released request is not kept');
    assert.equal(statusOf(m, HOT), undefined);

    m.setNodeIdentities([WEB, DB]);
    const waiting = m.fetch(DB);
    m.setNodeIdentities([WEB]);
    checkHeld(await waiting, DB, ca.root);
    m.setNodeIdentities([WEB]);
    assert.equal(statusOf(m, DB), undefined, 'gone once nobody waits');
    assert.equal(rec.calls.filter((c) => c.uri === identityUri(WEB)).length, 1, 'no new request for the identity that stayed');
    m.close();
  });

  test('close() clears every timer (all of them unref’d) and rejects waiting fetches', async (t) => {
    const timers = trackTimers('identity/manager.');
    t.after(timers.restore);
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, log });
    m.setNodeIdentities([WEB, DB, CACHE]);
    await until('three certificates', () => allAvailable(m, 3));
    const pending = m.fetch(HOT);
    assert.equal(timers.live().length, 4, 'three renewal timers and one fetch timer');
    assert.ok(timers.live().every((x) => !x.hasRef()), 'none keeps the process alive');
    m.close();
    await assert.rejects(pending, IdentityManagerClosedError);
    assert.equal(timers.live().length, 0);
    // The answer to the request that was in progress starts nothing.
    await until('the request for HOT to end', () => rec.calls.find((c) => c.uri === identityUri(HOT))?.ok === true);
    await sleep(20);
    assert.equal(timers.live().length, 0);
    assert.equal(timers.created(), 4);
    assert.deepEqual(m.snapshot(), []);
    assert.equal(m.get(WEB), undefined);
    await assert.rejects(m.fetch(WEB), IdentityManagerClosedError);
    m.setNodeIdentities([WEB]);
    assert.deepEqual(m.snapshot(), []);
  });
});

describe('agent/identity: IdentityManager while the CA is down', () => {
  const material: Promise<SigningMaterial> = CertificateAuthority.generateRoot('cluster.local');
  const credentials = mkdtempSync(join(tmpdir(), 'ambit-idm-'));

  /** The CA on a given port, with the same root and node credentials at each start: a CA restart. */
  async function serveCa(port: number): Promise<GrpcEndpoint> {
    const authority = await CertificateAuthority.load(await material);
    return startGrpcServer({
      authority,
      host: '127.0.0.1',
      port,
      dnsNames: [],
      ips: ['127.0.0.1'],
      log,
      services: [
        {
          definition: IstioCertificateServiceService,
          implementation: caService({
            authority,
            authenticator: NodeCredentials.create(credentials, ['node-1'], 'cluster.local'),
            pods: () => PODS,
            trustDomain: 'cluster.local',
            clusterId: 'Kubernetes',
            log,
          }),
        },
      ],
    });
  }

  after(() => rmSync(credentials, { recursive: true, force: true }));

  test('renewals fail with growing backoff, the old certificate serves until it expires, then recovery when the CA is back', async () => {
    let server = await serveCa(0);
    const port = server.port;
    const token = readFileSync(NodeCredentials.tokenPath(credentials, 'node-1'), 'utf8');
    const root = (await material).rootCert;
    const client = new CaClient({ address: `127.0.0.1:${port}`, rootCert: root, token: () => token, timeoutMs: 2000 });
    const rec = recording(client);
    const m = new IdentityManager({ ca: rec.ca, ttlSeconds: 3, backoff: { initialMs: 200, maxMs: 1600 }, log });
    // The manager's timers are unref'd, as an agent's should be; with the CA down nothing else
    // would hold this test's event loop open while it waits.
    const keepAlive = setInterval(() => undefined, 1000);
    try {
      m.setNodeIdentities([WEB]);
      const first = await m.fetch(WEB);
      await server.close();

      const failing = await until('a failed renewal', () => {
        const st = statusOf(m, WEB);
        return st?.lastError ? st : undefined;
      });
      assert.match(failing.lastError!, /UNAVAILABLE/);
      assert.equal(failing.state, 'Available', 'the old certificate is still valid');
      assert.equal(m.get(WEB), first, 'and still in use');
      assert.ok(failing.nextRefresh, 'a retry is scheduled');

      await until('expiry', () => Date.now() > first.notAfter.getTime() + 20, 5000);
      const expired = statusOf(m, WEB)!;
      assert.equal(expired.state, 'Unavailable');
      assert.equal(expired.serial, first.serial, 'the expired certificate is still shown');
      assert.equal(m.get(WEB), undefined);
      await assert.rejects(m.fetch(WEB, { timeoutMs: 200 }), (err: unknown) => {
        assert.ok(err instanceof CertificateTimeoutError);
        assert.match(err.message, /within 200 ms; last error: .*UNAVAILABLE/);
        return true;
      });

      const failures = await until('four failed attempts', () => {
        const f = rec.calls.filter((c) => c.ok === false);
        return f.length >= 4 ? f : undefined;
      }, 8000);
      const gaps = failures.slice(1, 4).map((c, i) => c.at - failures[i]!.at);
      // 200, 400, 800 ms ± 25 %: each gap longer than the one before, none above the cap.
      assert.ok(gaps[0]! >= 150 - 20 && gaps[0]! <= 250 + 100, `first gap ${gaps[0]}`);
      assert.ok(gaps[1]! > gaps[0]! && gaps[2]! > gaps[1]!, `gaps grow: ${gaps.join(', ')} ms`);
      assert.ok(gaps.every((g) => g <= 1600 + 100), `capped: ${gaps.join(', ')} ms`);

      server = await serveCa(port);
      const renewed = await until('a certificate from the restarted CA', () => m.get(WEB), 15_000);
      assert.notEqual(renewed.serial, first.serial);
      checkHeld(renewed, WEB, root);
      const ok = statusOf(m, WEB)!;
      assert.equal(ok.state, 'Available');
      assert.equal(ok.lastError, undefined);
    } finally {
      clearInterval(keepAlive);
      m.close();
      client.close();
      await server.close();
    }
  });

  test('a caller waiting during a long backoff is served soon after the CA is back, not at the backoff\'s pace', async () => {
    let server = await serveCa(0);
    const port = server.port;
    await server.close();
    const token = readFileSync(NodeCredentials.tokenPath(credentials, 'node-1'), 'utf8');
    const client = new CaClient({ address: `127.0.0.1:${port}`, rootCert: (await material).rootCert, token: () => token, timeoutMs: 1000 });
    const rec = recording(client);
    // Backoff already at a minute after the first failure: far longer than any caller waits.
    const m = new IdentityManager({ ca: rec.ca, backoff: { initialMs: 60_000, maxMs: 60_000 }, log });
    const keepAlive = setInterval(() => undefined, 1000);
    try {
      m.setNodeIdentities([WEB]);
      await until('the first failure', () => rec.calls.some((c) => c.ok === false));
      server = await serveCa(port);
      const started = Date.now();
      const held = await m.fetch(WEB, { timeoutMs: 5000 });
      assert.ok(Date.now() - started < 4000, `served in ${Date.now() - started} ms, not after the 60 s backoff`);
      checkHeld(held, WEB, (await material).rootCert);
      assert.ok(rec.calls.length <= 6, `a waiting caller retries about once a second, not in a tight loop (${rec.calls.length} calls)`);
    } finally {
      clearInterval(keepAlive);
      m.close();
      client.close();
      await server.close();
    }
  });
});

test('backoff: 500 ms doubling to a cap of 150 s, ±25 % jitter never above the cap', () => {
  const middle = () => 0.5;
  assert.deepEqual(
    Array.from({ length: 11 }, (_, i) => backoffDelay(i + 1, DEFAULT_BACKOFF, middle)),
    [500, 1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 150_000, 150_000],
  );
  assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0), 375);
  assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0.999999), 625);
  assert.equal(backoffDelay(1e9, DEFAULT_BACKOFF, () => 0.999999), 150_000);
  assert.equal(backoffDelay(1e9, DEFAULT_BACKOFF, () => 0), 112_500);
});
