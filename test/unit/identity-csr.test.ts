// The agent's key and CSR for a workload identity: what ztunnel sends (EC P-256, SHA-256, empty
// subject, one critical SPIFFE URI SAN), checked with @peculiar/x509, openssl and the real CA.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { status } from '@grpc/grpc-js';
import { createCsr } from '../../agent/identity/csr.js';
import { identityUri, type Identity } from '../../mesh/identity/spiffe.js';
import { x509 } from '../../mesh/identity/x509.js';
import { callCa, dynamicCaClient, pod, startTestCa, structOf, type TestCa } from '../support/ca.js';

const WEB: Identity = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' };
const SAN_OID = '2.5.29.17';
const EXTENSION_REQUEST_OID = '1.2.840.113549.1.9.14';

describe('agent/identity/csr', () => {
  test('the CSR verifies, has an empty subject and exactly one critical URI SAN with the identity, signed ECDSA SHA-256', async () => {
    const { csrPem } = await createCsr(WEB);
    const req = new x509.Pkcs10CertificateRequest(csrPem);
    assert.equal(await req.verify(), true, 'self-signature verifies');
    assert.equal(req.subject, '', 'empty subject');
    assert.equal(req.subjectName.toJSON().length, 0);
    assert.deepEqual(
      [...req.attributes].map((a) => a.type),
      [EXTENSION_REQUEST_OID],
      'the only attribute is the extension request',
    );
    assert.deepEqual(
      [...req.extensions].map((e) => e.type),
      [SAN_OID],
      'the only extension is the SAN',
    );
    const san = req.getExtension(SAN_OID);
    assert.ok(san instanceof x509.SubjectAlternativeNameExtension);
    assert.equal(san.critical, true, 'the SAN is critical (the subject is empty)');
    assert.deepEqual(san.names.toJSON(), [{ type: 'url', value: identityUri(WEB) }]);
    assert.equal(req.signatureAlgorithm.name, 'ECDSA');
    assert.equal(req.signatureAlgorithm.hash.name, 'SHA-256');
    // An independent parser agrees.
    const text = execFileSync('openssl', ['req', '-noout', '-text', '-verify'], { input: csrPem, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    assert.match(text, /Subject:\s*\n/);
    assert.match(text, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web\s/);
    assert.match(text, /ecdsa-with-SHA256/);
  });

  test('the key is a PKCS#8 P-256 key, the one the CSR is for, and fresh for every CSR', async () => {
    const a = await createCsr(WEB);
    const b = await createCsr(WEB);
    assert.match(a.keyPem, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
    const key = createPrivateKey(a.keyPem);
    assert.equal(key.asymmetricKeyType, 'ec');
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const csrKey = createPublicKey({ key: Buffer.from(new x509.Pkcs10CertificateRequest(a.csrPem).publicKey.rawData), format: 'der', type: 'spki' });
    assert.ok(createPublicKey(key).equals(csrKey), "the CSR carries the key's public half");
    assert.notEqual(a.keyPem, b.keyPem);
    assert.notEqual(a.csrPem, b.csrPem);
  });

  describe('the CA signs it', () => {
    let ca: TestCa;
    let client: ReturnType<typeof dynamicCaClient>;

    before(async () => {
      ca = await startTestCa({ nodes: ['node-1'], pods: () => [pod('shop', 'web-1', 'node-1', 'web')] });
      client = dynamicCaClient(ca.address, ca.root);
    });

    after(async () => {
      client?.close();
      await ca?.close();
    });

    test('a certificate for the identity and the key', async () => {
      const { csrPem, keyPem } = await createCsr(WEB);
      const r = await callCa(client, { csr: csrPem, validityDuration: 600, metadata: structOf({ ImpersonatedIdentity: identityUri(WEB) }) }, ca.tokens['node-1']);
      assert.equal(r.code, status.OK, r.details);
      const leaf = new X509Certificate(r.chain[0]!);
      assert.equal(leaf.subjectAltName, `URI:${identityUri(WEB)}`);
      assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)));
      assert.ok(leaf.verify(new X509Certificate(ca.root).publicKey));
    });
  });
});
