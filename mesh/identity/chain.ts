// Checking a certificate chain a CA returned, before anything uses it: the leaf is for exactly
// the identity asked for, is not a CA, is valid now, and chains (through any intermediates the
// response carries) to a root this node trusts — its configured roots, not the ones the response
// brings along.
import { X509Certificate } from 'node:crypto';
import { AmbitError } from '../errors.js';
import { splitPem } from './x509.js';

/** A CA backdates not-before by 2 minutes; allow a clock that is ahead by a little more. */
const SKEW_MS = 5 * 60_000;

export class UntrustedChainError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_UNTRUSTED_CHAIN', message);
  }
}

function parse(pem: string, what: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new UntrustedChainError(`${what} does not parse: ${(err as Error).message}`);
  }
}

/** Returns the leaf of `chain` (leaf first; the last element holds the root or roots) once it checks out. */
export function verifyIssuedChain(chain: readonly string[], uri: string, trustedRoots: readonly X509Certificate[], now = Date.now()): X509Certificate {
  if (chain.length < 2) throw new UntrustedChainError(`the CA returned ${chain.length} certificate(s); a leaf and a root at least are expected`);
  const leaf = parse(chain[0]!, 'the leaf');
  const intermediates = chain.slice(1, -1).map((p, i) => parse(p, `certificate ${i + 2} of the chain`));
  const returnedRoots = splitPem(chain.at(-1)!);
  if (returnedRoots.length === 0) throw new UntrustedChainError('the last element of the chain holds no root certificate');
  returnedRoots.forEach((p, i) => parse(p, `root ${i + 1} of the chain`));

  const uris = (leaf.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
  if (uris.length !== 1 || uris[0] !== uri) throw new UntrustedChainError(`the certificate is for ${uris.join(', ') || 'no URI'}, not ${uri}`);
  if (leaf.ca) throw new UntrustedChainError(`the certificate for ${uri} is a CA certificate`);
  if (Date.parse(leaf.validTo) <= now) throw new UntrustedChainError(`the certificate for ${uri} expired at ${leaf.validTo}`);
  if (Date.parse(leaf.validFrom) > now + SKEW_MS) throw new UntrustedChainError(`the certificate for ${uri} is not valid before ${leaf.validFrom}`);

  let child = leaf;
  for (const next of intermediates) {
    if (!next.ca || !child.checkIssued(next) || !child.verify(next.publicKey)) {
      throw new UntrustedChainError(`${child === leaf ? 'the leaf' : child.subject} is not signed by the next certificate of the chain (${next.subject})`);
    }
    child = next;
  }
  if (!trustedRoots.some((r) => child.checkIssued(r) && child.verify(r.publicKey))) {
    throw new UntrustedChainError(`the chain for ${uri} does not lead to a trusted root (it ends at ${child.subject || 'the leaf'})`);
  }
  return leaf;
}
