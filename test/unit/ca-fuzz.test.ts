// Fuzzing the CA service with random, truncated and mutated CSRs and random metadata: the server
// must answer every call with a status (never crash, never hang), and sign only for an authorized
// identity and only the key whose possession the CSR proves. (The CSR parser tolerates some
// non-canonical encodings of the outer structure; a mutation there may still be signed, for the
// original key, which is harmless: the property that matters is proof of possession.) Seeded, so a
// failure can be replayed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { status } from '@grpc/grpc-js';
import { callCa, dynamicCaClient, opensslCsr, pod, startTestCa, structOf, type TestCa } from '../support/ca.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261121);
const ROUNDS = Number(process.env.FUZZ_ROUNDS ?? 60);
const OWN = 'spiffe://cluster.local/ns/ambit-system/sa/ztunnel';
const WEB = 'spiffe://cluster.local/ns/shop/sa/web';

/** xorshift32: small, deterministic. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

let ca: TestCa;
let client: ReturnType<typeof dynamicCaClient>;
let validDer: Buffer;
let validKey: ReturnType<typeof createPublicKey>;

before(async () => {
  ca = await startTestCa({ nodes: ['node-1'], pods: () => [pod('shop', 'web-1', 'node-1', 'web')] });
  client = dynamicCaClient(ca.address, ca.root);
  const { csr } = opensslCsr();
  validDer = Buffer.from(csr.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  validKey = createPublicKey(execFileSync('openssl', ['req', '-pubkey', '-noout'], { input: csr, encoding: 'utf8' }));
});

after(async () => {
  client?.close();
  await ca?.close();
});

const pem = (der: Buffer, label = 'CERTIFICATE REQUEST') => `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END ${label}-----\n`;

function randomValue(r: () => number, depth = 0): unknown {
  const k = Math.floor(r() * (depth > 2 ? 4 : 6));
  switch (k) {
    case 0:
      return null;
    case 1:
      return r() * 1e12 - 5e11;
    case 2:
      return randomString(r);
    case 3:
      return r() < 0.5;
    case 4:
      return Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1));
    default:
      return Object.fromEntries(Array.from({ length: Math.floor(r() * 4) }, () => [randomString(r).slice(0, 20), randomValue(r, depth + 1)]));
  }
}

function randomString(r: () => number): string {
  const pool = ['spiffe://', 'cluster.local', '/ns/', '/sa/', 'shop', 'web', '..', '\u0000', 'ü', '%2F', ' ', 'A'.repeat(300)];
  return Array.from({ length: 1 + Math.floor(r() * 6) }, () => pool[Math.floor(r() * pool.length)]).join('');
}

test(`random, truncated and mutated CSRs and random metadata (seed ${SEED}): a status for every call, a certificate only when authorized`, async () => {
  const r = prng(SEED);
  const before = ca.authority.issuedCount;
  let signed = 0;
  const calls: { what: string; run: () => ReturnType<typeof callCa> }[] = [];
  const token = ca.tokens['node-1']!;
  for (let i = 0; i < ROUNDS; i++) {
    const len = Math.floor(r() * validDer.length);
    const random = Buffer.from(Array.from({ length: Math.floor(r() * 600) }, () => Math.floor(r() * 256)));
    const mutated = Buffer.from(validDer);
    for (let m = 0; m < 1 + Math.floor(r() * 3); m++) mutated[Math.floor(r() * mutated.length)] ^= 1 << Math.floor(r() * 8);
    calls.push(
      { what: 'random bytes', run: () => callCa(client, { csr: pem(random) }, token) },
      { what: `truncated at ${len}`, run: () => callCa(client, { csr: pem(validDer.subarray(0, len)) }, token) },
      { what: 'mutated', run: () => (mutated.equals(validDer) ? Promise.resolve({ code: status.INVALID_ARGUMENT, details: 'skipped: no change', chain: [] }) : callCa(client, { csr: pem(mutated) }, token)) },
      { what: 'not PEM', run: () => callCa(client, { csr: randomString(r) }, token) },
      {
        what: 'random metadata',
        run: () => callCa(client, { csr: pem(validDer), validityDuration: Math.floor(r() * 4e6) - 1e6, metadata: structOf(randomValue(r) as Record<string, unknown> ?? {}) }, token),
      },
      {
        what: 'random identity',
        run: () => callCa(client, { csr: pem(validDer), metadata: structOf({ ImpersonatedIdentity: randomString(r) }) }, token),
      },
    );
  }
  calls.push({ what: 'oversized', run: () => callCa(client, { csr: 'x'.repeat(200_000) }, token) });
  for (let i = 0; i < calls.length; i += 24) {
    const batch = calls.slice(i, i + 24);
    const results = await Promise.all(batch.map((c) => c.run()));
    results.forEach((res, j) => {
      const { what } = batch[j]!;
      assert.ok(Object.values(status).includes(res.code), `${what}: a gRPC status`);
      if (res.code === status.OK) {
        signed++;
        const leaf = new X509Certificate(res.chain[0]!);
        assert.ok(leaf.subjectAltName === `URI:${OWN}` || leaf.subjectAltName === `URI:${WEB}`, `${what}: signed only for an authorized identity, got ${leaf.subjectAltName}`);
        assert.ok(leaf.publicKey.equals(validKey), `${what}: signed only for the key the CSR proves possession of`);
      } else {
        assert.ok([status.INVALID_ARGUMENT, status.PERMISSION_DENIED, status.RESOURCE_EXHAUSTED].includes(res.code), `${what}: refused as the caller's fault, got ${status[res.code]}: ${res.details}`);
      }
    });
  }
  assert.equal(ca.authority.issuedCount - before, signed, 'a certificate was signed exactly for each OK');
  const still = await callCa(client, { csr: pem(validDer) }, token);
  assert.equal(still.code, status.OK, 'the CA still serves after the fuzzing');
});
