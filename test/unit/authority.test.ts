// The CA's signing material: a self-signed root it makes itself, or Istio's cacerts layout with an
// intermediate made elsewhere (here by openssl, as `istioctl`'s cert tooling would). Broken material
// is refused with a message that says what is wrong, before anything is signed with it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, SigningMaterialError } from '../../controlplane/ca/authority.js';
import type { SigningMaterial } from '../../controlplane/ca/types.js';
import { opensslCsr } from '../support/ca.js';
import { randomSerial, subtle, x509 } from '../../mesh/identity/x509.js';

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

/** A CA certificate with chosen dates, signed by `issuer` (self-signed without one). */
async function caCert(subject: string, notBefore: Date, notAfter: Date, issuer?: { cert: x509.X509Certificate; keys: CryptoKeyPair }) {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject,
    issuer: issuer?.cert.subject ?? subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: (issuer?.keys ?? keys).privateKey,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const keyPem = x509.PemConverter.encode(await subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY') + '\n';
  return { cert, keys, pem: cert.toString('pem') + '\n', keyPem };
}

const days = (n: number) => new Date(Date.now() + n * 86400_000);

describe('the chain above the signing key: every certificate valid, leaves capped at the earliest expiry', () => {
  test('an expired intermediate above ca-cert.pem, an expired root, a signing certificate not yet valid: all refused', async () => {
    const root = await caCert('CN=root', days(-10), days(100));
    const expiredMid = await caCert('CN=mid', days(-10), days(-1), root);
    const leafCa = await caCert('CN=signing', days(-5), days(50), expiredMid);
    await assert.rejects(
      CertificateAuthority.load({ caCert: leafCa.pem, caKey: leafCa.keyPem, certChain: leafCa.pem + expiredMid.pem + root.pem, rootCert: root.pem }),
      /cert-chain\.pem \(CN=mid\) expired on/,
    );
    const oldRoot = await caCert('CN=old root', days(-100), days(-1));
    const under = await caCert('CN=signing', days(-5), days(50), oldRoot);
    await assert.rejects(CertificateAuthority.load({ caCert: under.pem, caKey: under.keyPem, certChain: '', rootCert: oldRoot.pem }), /root-cert\.pem \(CN=old root\) expired on/);
    const future = await caCert('CN=future', days(2), days(50), root);
    await assert.rejects(CertificateAuthority.load({ caCert: future.pem, caKey: future.keyPem, certChain: '', rootCert: root.pem }), /ca-cert\.pem \(CN=future\) is not valid before/);
  });

  test('a leaf is capped at the earliest expiry of the chain, even above the signing certificate', async () => {
    const root = await caCert('CN=root', days(-10), days(100));
    const mid = await caCert('CN=mid', days(-10), days(3), root); // expires first
    const signing = await caCert('CN=signing', days(-5), days(50), mid);
    const ca = await CertificateAuthority.load({ caCert: signing.pem, caKey: signing.keyPem, certChain: signing.pem + mid.pem, rootCert: root.pem }, { maxTtlSeconds: 365 * 86400 });
    const chain = await ca.issue(await CertificateAuthority.parseCsr(opensslCsr().csr), { uris: ['spiffe://cluster.local/ns/a/sa/b'] }, 30 * 86400);
    assert.equal(chain.length, 4, 'leaf, signing, mid, root');
    assert.equal(new X509Certificate(chain[0]!).validTo, new X509Certificate(mid.pem).validTo, "capped at mid's expiry");
  });

  test('when the chain expires the CA stops signing rather than issue dead certificates', async () => {
    const material = await CertificateAuthority.generateRoot('cluster.local', 30 / 86400); // a root for 30 seconds
    const ca = await CertificateAuthority.load(material);
    await assert.rejects(
      ca.issue(await CertificateAuthority.parseCsr(opensslCsr().csr), { uris: ['spiffe://cluster.local/ns/a/sa/b'] }, 600),
      (e: unknown) => e instanceof SigningMaterialError && /signs no more certificates/.test(e.message),
    );
  });

  test('lifetimes are checked: 1 <= default <= maximum', async () => {
    const material = await CertificateAuthority.generateRoot('cluster.local');
    await assert.rejects(CertificateAuthority.load(material, { defaultTtlSeconds: 0 }), /1 <= default \(0\)/);
    await assert.rejects(CertificateAuthority.load(material, { defaultTtlSeconds: 7200, maxTtlSeconds: 3600 }), /default \(7200\) <= maximum \(3600\)/);
  });
});
