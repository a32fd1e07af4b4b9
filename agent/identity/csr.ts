// A key and a certificate request for one workload identity, made as Istio's ztunnel makes them
// (zt:src/tls/csr.rs): EC P-256, SHA-256, an empty subject and the SPIFFE id as the only SAN. The
// SAN is critical because with an empty subject it is the certificate's only name (RFC 5280
// §4.2.1.6). The CA writes the SAN itself, but a request that names what it asks for is what
// istiod and other CAs of Istio's API expect.
import { identityUri, type Identity } from '../../mesh/identity/spiffe.js';
import { subtle, x509 } from '../../mesh/identity/x509.js';

export interface KeyAndCsr {
  /** PEM "CERTIFICATE REQUEST". */
  csrPem: string;
  /** The private key, PKCS#8 PEM ("PRIVATE KEY"): what a TLS context loads. */
  keyPem: string;
}

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export async function createCsr(id: Identity): Promise<KeyAndCsr> {
  // Extractable, since the key leaves WebCrypto as PEM for node:tls.
  const keys = (await subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: '',
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identityUri(id) }], true)],
  });
  const keyPem = x509.PemConverter.encode(await subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY') + '\n';
  return { csrPem: csr.toString('pem') + '\n', keyPem };
}
