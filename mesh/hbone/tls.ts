// HBONE's TLS, as ztunnel configures it (istio-ambient-spec.md §2.1): TLS 1.3 only, the two
// AES-GCM suites, ALPN h2, no SNI, no session resumption. Identities are SPIFFE URI SANs; the
// server checks the client's trust domain, the client checks the server's identity for equality.
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { identityUri, parseIdentity, type Identity } from '../identity/spiffe.js';

export const HBONE_ALPN = 'h2';
const CIPHERSUITES = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';

/** What a workload presents: its key and chain (leaf first, the root last, as the CA returns it). */
export interface WorkloadCredential {
  identity: Identity;
  keyPem: string;
  chain: readonly string[];
}

/**
 * TLS options for one workload identity, trusting `roots`. The root is not sent: peers hold it
 * already, and sending it would only cost bytes on every handshake.
 */
export function workloadTlsOptions(cred: WorkloadCredential, roots: readonly string[]): tls.SecureContextOptions {
  const sent = cred.chain.length > 1 ? cred.chain.slice(0, -1) : cred.chain;
  return {
    key: cred.keyPem,
    cert: sent.join('\n'),
    ca: [...roots],
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: CIPHERSUITES,
    // No resumption: every connection proves its identity afresh (ztunnel disables it too).
    sessionTimeout: 0,
  };
}

export function workloadContext(cred: WorkloadCredential, roots: readonly string[]): tls.SecureContext {
  return tls.createSecureContext(workloadTlsOptions(cred, roots));
}

/** The SPIFFE identity of a verified peer's leaf, or a reason why there is none. */
export function peerIdentity(socket: tls.TLSSocket): Identity | string {
  const raw = socket.getPeerX509Certificate?.();
  if (!raw) return 'the peer presented no certificate';
  return certificateIdentity(raw);
}

export function certificateIdentity(cert: X509Certificate): Identity | string {
  const san = cert.subjectAltName ?? '';
  // Node renders SANs as "URI:spiffe://..., DNS:..."; a URI containing ", " cannot be a SPIFFE ID.
  const uris = san
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
  const spiffe = uris.filter((u) => u.startsWith('spiffe://'));
  if (spiffe.length !== 1) return spiffe.length === 0 ? 'the peer certificate has no SPIFFE URI SAN' : 'the peer certificate has more than one SPIFFE URI SAN';
  try {
    return parseIdentity(spiffe[0]!);
  } catch (err) {
    return (err as Error).message;
  }
}

export function identityUriOf(cred: WorkloadCredential): string {
  return identityUri(cred.identity);
}
