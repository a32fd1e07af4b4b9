// A certificate as the node holds it for one identity, and when to renew it. The CA client has
// checked the chain (identity, issuer, validity: mesh/identity/chain.ts); what only the holder can
// check is that the certificate is for the key it made.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { identityUri, type Identity } from '../../mesh/identity/spiffe.js';
import { UnusableCertificateError } from './errors.js';

export interface HeldCertificate {
  identity: Identity;
  /** PEM certificates, leaf first, root last. */
  chain: string[];
  /** The leaf's private key, PKCS#8 PEM. */
  keyPem: string;
  /** The leaf's serial number, lower-case hex. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

export function holdCertificate(identity: Identity, chain: string[], keyPem: string, now: number): HeldCertificate {
  const uri = identityUri(identity);
  if (chain.length === 0) throw new UnusableCertificateError(`the CA returned no certificate for ${uri}`);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(chain[0]!);
  } catch (err) {
    throw new UnusableCertificateError(`the CA returned an unreadable leaf for ${uri}: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new UnusableCertificateError(`the CA returned a certificate for ${uri} whose key is not the one of the request`);
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) throw new UnusableCertificateError(`the certificate for ${uri} has unreadable validity dates`);
  if (notAfter <= now) throw new UnusableCertificateError(`the CA returned a certificate for ${uri} that expired at ${leaf.validTo}`);
  return { identity, chain, keyPem, serial: leaf.serialNumber.toLowerCase(), notBefore: new Date(notBefore), notAfter: new Date(notAfter) };
}

/**
 * Half-life, as ztunnel renews: not-before + (not-after − not-before) / 2, except that the life
 * is counted from when the certificate arrived if its not-before is earlier. CAs backdate
 * not-before for clock skew (Istio and Ambit by 2 minutes); for a 24 h certificate that moves
 * the renewal by one minute, but a certificate of a few seconds would be past its half-life on
 * arrival and be renewed in a loop.
 */
export function refreshTime(cert: HeldCertificate, receivedAt: number): number {
  const start = Math.max(cert.notBefore.getTime(), receivedAt);
  const end = cert.notAfter.getTime();
  return start + Math.max(0, end - start) / 2;
}
