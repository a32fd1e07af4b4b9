// The CA's signing material: a self-signed root it makes itself, or Istio's cacerts layout with an
// intermediate made elsewhere (here by openssl, as `istioctl`'s cert tooling would). Broken material
// is refused with a message that says what is wrong, before anything is signed with it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, SigningMaterialError } from '../../controlplane/ca/authority.js';
import type { SigningMaterial } from '../../controlplane/ca/types.js';
import { opensslCsr } from '../support/ca.js';

/** Istio's plugin-CA layout made with openssl: root (EC P-256) → intermediate (`kind`). */
function opensslCacerts(kind: 'ec' | 'rsa' = 'ec', intermediateIsCa = true): SigningMaterial & { dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-cacerts-'));
  const f = (n: string) => join(dir, n);
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('root-key.pem'), '-out', f('root-cert.pem'), '-days', '30', '-subj', '/O=Istio/CN=Root CA', '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const keyArgs = kind === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  run('req', '-new', ...keyArgs, '-nodes', '-keyout', f('ca-key.pem'), '-out', f('ca.csr'), '-subj', '/O=Istio/CN=Intermediate CA/L=cluster1');
  writeFileSync(f('ext.cnf'), `basicConstraints=critical,CA:${intermediateIsCa ? 'true' : 'false'}\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n`);
  run('x509', '-req', '-in', f('ca.csr'), '-CA', f('root-cert.pem'), '-CAkey', f('root-key.pem'), '-CAcreateserial', '-out', f('ca-cert.pem'), '-days', '20', '-extfile', f('ext.cnf'));
  const read = (n: string) => readFileSync(f(n), 'utf8');
  // Istio's tooling writes cert-chain.pem as the intermediate followed by the root.
  return { dir, caCert: read('ca-cert.pem'), caKey: read('ca-key.pem'), certChain: read('ca-cert.pem') + read('root-cert.pem'), rootCert: read('root-cert.pem') };
}

test('a generated root is a P-256 CA for the trust domain, and signs leaves with root last', async () => {
  const material = await CertificateAuthority.generateRoot('mesh.example');
  const root = new X509Certificate(material.rootCert);
  assert.ok(root.ca);
  assert.match(root.subject, /O=mesh\.example/);
  assert.equal(root.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.equal(material.certChain, '', 'a self-signed root has no chain above it');
  const ca = await CertificateAuthority.load(material);
  const chain = await ca.issue(await CertificateAuthority.parseCsr(opensslCsr().csr), { uris: ['spiffe://mesh.example/ns/a/sa/b'] }, 600);
  assert.equal(chain.length, 2);
  assert.ok(new X509Certificate(chain[0]!).verify(root.publicKey));
});

for (const kind of ['ec', 'rsa'] as const) {
  test(`Istio's cacerts with an ${kind === 'ec' ? 'EC' : 'RSA'} intermediate: leaf, intermediate, root, each signed by the next`, async () => {
    const m = opensslCacerts(kind);
    try {
      const ca = await CertificateAuthority.load(m);
      assert.equal(ca.trustBundle, m.rootCert, 'the root is the trust bundle, not the intermediate');
      const chain = await ca.issue(await CertificateAuthority.parseCsr(opensslCsr('ec').csr), { uris: ['spiffe://cluster.local/ns/a/sa/b'] }, 600);
      assert.equal(chain.length, 3, 'leaf, intermediate, root');
      const [leaf, intermediate, root] = chain.map((p) => new X509Certificate(p)) as [X509Certificate, X509Certificate, X509Certificate];
      assert.match(intermediate.subject, /CN=Intermediate CA/);
      assert.ok(leaf.checkIssued(intermediate) && leaf.verify(intermediate.publicKey), 'the leaf is signed by the intermediate');
      assert.ok(intermediate.verify(root.publicKey), 'the intermediate by the root');
      assert.ok(Date.parse(leaf.validTo) <= Date.parse(intermediate.validTo), 'the leaf never outlives its issuer');
    } finally {
      rmSync(m.dir, { recursive: true, force: true });
    }
  });
}

test('a leaf never outlives the certificate that signs it', async () => {
  const m = opensslCacerts('ec');
  try {
    const ca = await CertificateAuthority.load(m, { maxTtlSeconds: 365 * 86400 });
    const chain = await ca.issue(await CertificateAuthority.parseCsr(opensslCsr().csr), { uris: ['spiffe://cluster.local/ns/a/sa/b'] }, 300 * 86400);
    assert.equal(new X509Certificate(chain[0]!).validTo, new X509Certificate(m.caCert).validTo, 'capped at the intermediate\'s expiry (20 days)');
  } finally {
    rmSync(m.dir, { recursive: true, force: true });
  }
});

test('broken signing material is refused, saying what is wrong', async () => {
  const good = opensslCacerts('ec');
  const other = opensslCacerts('ec');
  const notCa = opensslCacerts('ec', false);
  try {
    const cases: [string, SigningMaterial, RegExp][] = [
      ['a key that is not the certificate\'s', { ...good, caKey: other.caKey }, /ca-key\.pem does not belong to ca-cert\.pem/],
      ['an intermediate of another root', { ...good, rootCert: other.rootCert, certChain: good.caCert + other.rootCert }, /does not end at a certificate of root-cert\.pem/],
      ['a signing certificate that is not a CA', notCa, /is not a CA certificate/],
      ['no root', { ...good, rootCert: '' }, /root-cert\.pem holds no certificate/],
      ['an unreadable key', { ...good, caKey: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' }, /unreadable signing material/],
    ];
    for (const [what, material, message] of cases) {
      await assert.rejects(CertificateAuthority.load(material), (e: unknown) => e instanceof SigningMaterialError && message.test(e.message), what);
    }
  } finally {
    for (const m of [good, other, notCa]) rmSync(m.dir, { recursive: true, force: true });
  }
});
