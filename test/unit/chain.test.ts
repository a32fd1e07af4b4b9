// What the agent accepts from a CA: exactly the requested identity, chained to a root it trusts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { CertificateAuthority } from '../../controlplane/ca/authority.js';
import { UntrustedChainError, verifyIssuedChain } from '../../mesh/identity/chain.js';
import { opensslCsr } from '../support/ca.js';

const URI = 'spiffe://cluster.local/ns/shop/sa/web';

test('a chain is accepted only for the identity asked for and only when it leads to a trusted root', async () => {
  const ours = await CertificateAuthority.load(await CertificateAuthority.generateRoot('cluster.local'));
  const theirs = await CertificateAuthority.load(await CertificateAuthority.generateRoot('cluster.local'));
  const trusted = [new X509Certificate(ours.trustBundle)];
  const key = await CertificateAuthority.parseCsr(opensslCsr().csr);
  const good = await ours.issue(key, { uris: [URI] }, 600);
  assert.equal(verifyIssuedChain(good, URI, trusted).subjectAltName, `URI:${URI}`);

  const refuse = (chain: string[], message: RegExp, uri = URI) =>
    assert.throws(() => verifyIssuedChain(chain, uri, trusted), (e: unknown) => e instanceof UntrustedChainError && message.test(e.message));
  refuse(await theirs.issue(key, { uris: [URI] }, 600), /does not lead to a trusted root/);
  // Another CA's leaf, presented with our root appended: the signature still does not check out.
  const forged = await theirs.issue(key, { uris: [URI] }, 600);
  refuse([forged[0]!, ours.trustBundle], /does not lead to a trusted root/);
  refuse([good[0]!, 'not a certificate', good[1]!], /certificate 2 of the chain does not parse/);
  refuse(good, /is for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web, not spiffe:\/\/cluster\.local\/ns\/shop\/sa\/db/, 'spiffe://cluster.local/ns/shop/sa/db');
  refuse(await ours.issue(key, { uris: [URI, 'spiffe://cluster.local/ns/shop/sa/db'] }, 600), /is for .*, .*, not/);
  refuse([good[0]!], /1 certificate\(s\)/);
  refuse([good[0]!, ''], /holds no root certificate/);
});
