// The CA's gRPC service, from the outside: a client built from the .proto at run time and CSRs
// made by openssl, so that nothing of the agent's own client code is involved.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import tls from 'node:tls';
import { status } from '@grpc/grpc-js';
import { MAX_TTL_SECONDS } from '../../controlplane/ca/authority.js';
import { callCa, dynamicCaClient, opensslCsr, pod, startTestCa, structOf, type TestCa } from '../support/ca.js';
import type { Pod } from '../../mesh/k8s/types.js';

const WEB = 'spiffe://cluster.local/ns/shop/sa/web';
const DB = 'spiffe://cluster.local/ns/shop/sa/db';

describe('CA service: IstioCertificateService/CreateCertificate', () => {
  let ca: TestCa;
  let client: ReturnType<typeof dynamicCaClient>;
  const pods: Pod[] = [
    pod('shop', 'web-1', 'node-1', 'web'),
    pod('shop', 'db-1', 'node-2', 'db'),
    pod('shop', 'batch-1', 'node-1', 'batch', 'Succeeded'),
    pod('shop', 'plain-1', 'node-1'),
  ];

  before(async () => {
    ca = await startTestCa({ nodes: ['node-1', 'node-2'], pods: () => pods });
    client = dynamicCaClient(ca.address, ca.root);
  });

  after(async () => {
    client?.close();
    await ca?.close();
  });

  const asNode1 = (csr: string, identity: string, validityDuration = 3600) =>
    callCa(client, { csr, validityDuration, metadata: structOf({ ImpersonatedIdentity: identity }) }, ca.tokens['node-1']);

  for (const kind of ['ec', 'rsa'] as const) {
    test(`a ${kind === 'ec' ? 'P-256' : 'RSA 2048'} CSR is signed for the authorized identity, chain leaf first and root last, with the requested lifetime`, async () => {
      const { csr } = opensslCsr(kind); // it asks for spiffe://evil.example/...: the CA must ignore that
      const started = Date.now();
      const r = await asNode1(csr, WEB, 3600);
      assert.equal(r.code, status.OK, r.details);
      assert.equal(r.chain.length, 2, 'leaf and root');
      const leaf = new X509Certificate(r.chain[0]!);
      const root = new X509Certificate(r.chain[1]!);
      assert.equal(leaf.subjectAltName, `URI:${WEB}`, 'exactly the authorized identity, nothing from the CSR');
      assert.ok(leaf.checkIssued(root) && leaf.verify(root.publicKey), 'the leaf verifies against the root');
      assert.ok(root.verify(root.publicKey), 'the root is self-signed');
      assert.equal(root.toString(), new X509Certificate(ca.root).toString(), 'the root is the trust bundle');
      assert.equal(leaf.ca, false);
      const csrKey = createPublicKey(opensslPublicKey(csr));
      assert.ok(leaf.publicKey.equals(csrKey), "the certificate is for the CSR's key");
      const notBefore = Date.parse(leaf.validFrom);
      const notAfter = Date.parse(leaf.validTo);
      assert.ok(Math.abs(notBefore - (started - 120_000)) < 5_000, `not-before is 2 minutes in the past (${leaf.validFrom})`);
      assert.ok(Math.abs(notAfter - (started + 3600_000)) < 5_000, `not-after is one hour ahead (${leaf.validTo})`);
    });
  }

  test('no validity asks for the default of 24 hours', async () => {
    const r = await asNode1(opensslCsr().csr, WEB, 0);
    assert.equal(r.code, status.OK, r.details);
    const leaf = new X509Certificate(r.chain[0]!);
    assert.ok(Math.abs(Date.parse(leaf.validTo) - Date.now() - 86400_000) < 5_000);
  });

  test("without impersonation a node gets its own identity, the node agent's", async () => {
    const r = await callCa(client, { csr: opensslCsr().csr }, ca.tokens['node-2']);
    assert.equal(r.code, status.OK, r.details);
    assert.equal(new X509Certificate(r.chain[0]!).subjectAltName, 'URI:spiffe://cluster.local/ns/ambit-system/sa/ztunnel');
  });

  test('an empty clusterid header means this cluster, as with istiod', async () => {
    const r = await callCa(client, { csr: opensslCsr().csr }, ca.tokens['node-1'], { clusterid: '' });
    assert.equal(r.code, status.OK, r.details);
  });

  test("a pod without serviceAccountName runs as the namespace's default account", async () => {
    const r = await asNode1(opensslCsr().csr, 'spiffe://cluster.local/ns/shop/sa/default');
    assert.equal(r.code, status.OK, r.details);
  });

  describe('refusals: a precise status and message, nothing signed', () => {
    const refusals: [string, () => Promise<{ code: status; details: string }>, status, RegExp][] = [
      ['no token', () => callCa(client, { csr: opensslCsr().csr }), status.UNAUTHENTICATED, /no authorization header/],
      ['a wrong token', () => callCa(client, { csr: opensslCsr().csr }, 'not-a-credential'), status.UNAUTHENTICATED, /not a node credential/],
      ['a header that is not Bearer', () => callCa(client, { csr: opensslCsr().csr }, undefined, { authorization: `Basic ${ca.tokens['node-1']}` }), status.UNAUTHENTICATED, /not "Bearer <token>"/],
      ['another cluster', () => callCa(client, { csr: opensslCsr().csr }, ca.tokens['node-1'], { clusterid: 'other' }), status.UNAUTHENTICATED, /clusterid other/],
      ['the identity of a pod on another node', () => asNode1(opensslCsr().csr, DB), status.PERMISSION_DENIED, /no running pod of service account shop\/db is on node node-1/],
      ['the identity of a finished pod', () => asNode1(opensslCsr().csr, 'spiffe://cluster.local/ns/shop/sa/batch'), status.PERMISSION_DENIED, /shop\/batch/],
      ['another trust domain', () => asNode1(opensslCsr().csr, 'spiffe://other.local/ns/shop/sa/web'), status.PERMISSION_DENIED, /trust domain other.local/],
      ['an identity that is not SPIFFE', () => asNode1(opensslCsr().csr, 'web'), status.INVALID_ARGUMENT, /not a SPIFFE workload identity/],
      ['ImpersonatedIdentity not a string', () => callCa(client, { csr: opensslCsr().csr, metadata: structOf({ ImpersonatedIdentity: 42 }) }, ca.tokens['node-1']), status.INVALID_ARGUMENT, /must be a string/],
      ['a CSR that does not parse', () => asNode1('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', WEB), status.INVALID_ARGUMENT, /does not parse/],
      ['no CSR at all', () => asNode1('', WEB), status.INVALID_ARGUMENT, /no CSR/],
      ['a CSR whose signature does not verify', () => asNode1(tamper(opensslCsr().csr), WEB), status.INVALID_ARGUMENT, /CSR/],
      ['an RSA key of 1024 bits', () => asNode1(opensslCsr('rsa1024').csr, WEB), status.INVALID_ARGUMENT, /1024 bits/],
      ['an EC key on P-521', () => asNode1(opensslCsr('ec521').csr, WEB), status.INVALID_ARGUMENT, /secp521r1/],
      ['a CSR signed with SHA-1', () => asNode1(opensslCsr('ec', 'URI:spiffe://x/ns/a/sa/b', 'sha1').csr, WEB), status.INVALID_ARGUMENT, /SHA-1: SHA-256 or stronger is required/],
      ['a validity above the maximum', () => asNode1(opensslCsr().csr, WEB, MAX_TTL_SECONDS + 1), status.INVALID_ARGUMENT, /above the maximum 7776000 s/],
    ];
    for (const [what, call, code, message] of refusals) {
      test(what, async () => {
        const before = ca.authority.issuedCount;
        const r = await call();
        assert.equal(status[r.code], status[code], r.details);
        assert.match(r.details, message);
        assert.equal(ca.authority.issuedCount, before, 'nothing was signed');
      });
    }
  });

  test('a message above 64 KiB is refused before it is decoded, and the CA stays responsive', async () => {
    const big = structOf(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, 'v'])));
    const started = Date.now();
    const r = await callCa(client, { csr: opensslCsr().csr, metadata: big });
    assert.equal(status[r.code], status[status.RESOURCE_EXHAUSTED], r.details);
    assert.ok(Date.now() - started < 2000, 'refused quickly');
    const ok = await asNode1(opensslCsr().csr, WEB);
    assert.equal(ok.code, status.OK, ok.details);
  });

  test('the serving certificate is renewed in place: new connections get the new one, no restart', async () => {
    const serial = () =>
      new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: ca.endpoint.port, ca: ca.root, servername: 'istiod.istio-system.svc', ALPNProtocols: ['h2'] }, () => {
          resolve(s.getPeerCertificate().serialNumber);
          s.destroy();
        });
        s.on('error', reject);
      });
    const before = await serial();
    await ca.endpoint.serving.renew();
    const after = await serial();
    assert.notEqual(after, before, 'a new serving certificate');
    const r = await asNode1(opensslCsr().csr, WEB);
    assert.equal(r.code, status.OK, 'gRPC calls keep working across the rotation');
  });

  test("the serving certificate carries the name Istio's clients verify (istiod.istio-system.svc)", async () => {
    const named = dynamicCaClient(ca.address, ca.root, 'istiod.istio-system.svc');
    try {
      const r = await callCa(named, { csr: opensslCsr().csr }, ca.tokens['node-1']);
      assert.equal(r.code, status.OK, r.details);
    } finally {
      named.close();
    }
    const wrong = dynamicCaClient(ca.address, ca.root, 'someone-else.example');
    try {
      const r = await callCa(wrong, { csr: opensslCsr().csr }, ca.tokens['node-1']);
      assert.equal(r.code, status.UNAVAILABLE, 'a client verifying another name refuses the connection');
    } finally {
      wrong.close();
    }
  });
});

/** The CSR's public key, as openssl reads it. */
function opensslPublicKey(csr: string): string {
  return execOpenssl(['req', '-pubkey', '-noout'], csr);
}

function execOpenssl(args: string[], input: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8' });
}

/** Flips one bit inside the CSR's signature (the last bytes of the DER), keeping it well-formed. */
function tamper(csr: string): string {
  const b64 = csr.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const der = Buffer.from(b64, 'base64');
  der[der.length - 5] ^= 0x01;
  const body = der.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${body}\n-----END CERTIFICATE REQUEST-----\n`;
}
