// The mesh's certificate authority: signs workload certificates (SPIFFE URI SAN, written by the CA
// from the authorized identity, never taken from the request) and the control plane's own serving
// certificate, with a self-signed root or an intermediate plugged in from Istio's cacerts layout.
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { AmbitError, ConfigError } from '../../mesh/errors.js';
import { importSigningKey, randomSerial, splitPem, subtle, x509, type SigningAlgorithm } from '../../mesh/identity/x509.js';
import type { SigningMaterial } from './types.js';

export const DEFAULT_TTL_SECONDS = 24 * 3600;
export const MAX_TTL_SECONDS = 90 * 24 * 3600;
/** Certificates start this far in the past, so that a peer whose clock is a little behind accepts them (Istio: 2 min). */
export const CLOCK_SKEW_MS = 2 * 60_000;
/** A PEM CSR larger than this is refused before parsing: RSA 4096 requests are under 2 KB. */
export const MAX_CSR_PEM_BYTES = 16 * 1024;
const ROOT_VALIDITY_DAYS = 3650;
/** Signing stops this long before the chain expires: a certificate valid for less is of no use. */
const MIN_REMAINING_MS = 60_000;

/** The CSR is malformed, its signature does not verify, or its key is of a kind not accepted. */
export class CsrError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_BAD_CSR', message);
  }
}

/** The requested validity is above the CA's maximum. */
export class ValidityError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_BAD_VALIDITY', message);
  }
}

/** The signing material is unusable (key does not match, not a CA, expired, broken chain). */
export class SigningMaterialError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_BAD_SIGNING_MATERIAL', message);
  }
}

export interface AuthorityOptions {
  defaultTtlSeconds?: number;
  maxTtlSeconds?: number;
}

export interface SubjectAltNames {
  uris?: string[];
  dnsNames?: string[];
  ips?: string[];
}

/** What may be certified: EC P-256 (ztunnel's CSRs), P-384, and RSA of 2048 to 4096 bits (istio-agent's). */
function checkPublicKey(spki: ArrayBuffer): void {
  let key;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (err) {
    throw new CsrError(`the CSR's public key does not decode: ${(err as Error).message}`);
  }
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (d.namedCurve !== 'prime256v1' && d.namedCurve !== 'secp384r1') throw new CsrError(`EC key on curve ${d.namedCurve}: only P-256 and P-384 are accepted`);
  } else if (key.asymmetricKeyType === 'rsa') {
    if (!d.modulusLength || d.modulusLength < 2048 || d.modulusLength > 4096) throw new CsrError(`RSA key of ${d.modulusLength} bits: 2048 to 4096 are accepted`);
  } else {
    throw new CsrError(`${key.asymmetricKeyType ?? 'unknown'} key: only EC (P-256, P-384) and RSA are accepted`);
  }
}

export class CertificateAuthority {
  private readonly signingCert: x509.X509Certificate;
  private readonly signingKey: CryptoKey;
  private readonly algorithm: SigningAlgorithm;
  /** PEMs above the signing certificate, excluding roots; the signing certificate first unless it is a root. */
  private readonly intermediates: string[];
  private readonly roots: string;
  private readonly defaultTtl: number;
  private readonly maxTtl: number;
  private readonly chainNotAfter: number;
  /** Certificates signed so far (workload and serving); tests count on it to prove refusals sign nothing. */
  issuedCount = 0;

  private constructor(
    signingCert: x509.X509Certificate,
    signing: { key: CryptoKey; algorithm: SigningAlgorithm },
    intermediates: string[],
    roots: string,
    chainNotAfter: number,
    opts: AuthorityOptions,
  ) {
    this.chainNotAfter = chainNotAfter;
    this.signingCert = signingCert;
    this.signingKey = signing.key;
    this.algorithm = signing.algorithm;
    this.intermediates = intermediates;
    this.roots = roots;
    this.defaultTtl = opts.defaultTtlSeconds ?? DEFAULT_TTL_SECONDS;
    this.maxTtl = opts.maxTtlSeconds ?? MAX_TTL_SECONDS;
    if (!Number.isInteger(this.defaultTtl) || !Number.isInteger(this.maxTtl) || this.defaultTtl < 1 || this.defaultTtl > this.maxTtl) {
      throw new ConfigError(`certificate lifetimes must be whole seconds with 1 <= default (${this.defaultTtl}) <= maximum (${this.maxTtl})`);
    }
  }

  /** A new self-signed root (EC P-256) for the trust domain, in the cacerts layout. */
  static async generateRoot(trustDomain: string, validityDays = ROOT_VALIDITY_DAYS): Promise<SigningMaterial> {
    const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const keys = (await subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `O=${trustDomain}`,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + validityDays * 86400_000),
      keys,
      signingAlgorithm: algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const pem = cert.toString('pem') + '\n';
    const key = x509.PemConverter.encode(await subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY') + '\n';
    return { caCert: pem, caKey: key, certChain: '', rootCert: pem };
  }

  /** Loads and checks signing material: the key matches the certificate, which is a valid CA
   * chaining to a root, and every certificate of that chain is valid now. */
  static async load(material: SigningMaterial, opts: AuthorityOptions = {}): Promise<CertificateAuthority> {
    const parse = (file: string, pems: string[]): X509Certificate[] =>
      pems.map((p) => {
        try {
          return new X509Certificate(p);
        } catch (err) {
          throw new SigningMaterialError(`${file}: a certificate does not parse: ${(err as Error).message}`);
        }
      });
    const rootPems = splitPem(material.rootCert);
    if (rootPems.length === 0) throw new SigningMaterialError('root-cert.pem holds no certificate');
    const [caPem] = splitPem(material.caCert);
    if (!caPem) throw new SigningMaterialError('ca-cert.pem holds no certificate');
    const [ca] = parse('ca-cert.pem', [caPem]) as [X509Certificate];
    let keyObject;
    try {
      keyObject = createPrivateKey(material.caKey);
    } catch (err) {
      throw new SigningMaterialError(`ca-key.pem: unreadable signing material: ${(err as Error).message}`);
    }
    if (!ca.checkPrivateKey(keyObject)) throw new SigningMaterialError('ca-key.pem does not belong to ca-cert.pem');
    const rootCerts = parse('root-cert.pem', rootPems);
    const isRoot = (c: X509Certificate) => rootCerts.some((r) => r.fingerprint256 === c.fingerprint256);
    // The chain above the signing certificate, as given, without the roots (Istio's
    // cert-chain.pem usually ends with the root).
    const chainPems = splitPem(material.certChain);
    const above = parse('cert-chain.pem', chainPems)
      .map((cert, i) => ({ pem: chainPems[i]!, cert }))
      .filter((c) => c.cert.fingerprint256 !== ca.fingerprint256 && !isRoot(c.cert));
    const path: { file: string; cert: X509Certificate }[] = [{ file: 'ca-cert.pem', cert: ca }, ...above.map((c) => ({ file: 'cert-chain.pem', cert: c.cert }))];
    for (let i = 1; i < path.length; i++) {
      const child = path[i - 1]!.cert;
      const parent = path[i]!.cert;
      if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
        throw new SigningMaterialError(`cert-chain.pem: ${child.subject || 'a certificate'} is not signed by ${parent.subject || 'the next certificate'}`);
      }
    }
    const top = path.at(-1)!.cert;
    const root = isRoot(top) ? top : rootCerts.find((r) => top.checkIssued(r) && top.verify(r.publicKey));
    if (!root) throw new SigningMaterialError(`the chain from ca-cert.pem does not end at a certificate of root-cert.pem (last: ${top.subject || 'no subject'})`);
    if (!isRoot(top)) path.push({ file: 'root-cert.pem', cert: root });
    const now = Date.now();
    for (const { file, cert } of path) {
      const name = `${file} (${cert.subject || 'no subject'})`;
      if (!cert.ca) throw new SigningMaterialError(`${name} is not a CA certificate (basicConstraints CA:false)`);
      if (Date.parse(cert.validTo) <= now) throw new SigningMaterialError(`${name} expired on ${cert.validTo}`);
      if (Date.parse(cert.validFrom) > now + CLOCK_SKEW_MS) throw new SigningMaterialError(`${name} is not valid before ${cert.validFrom}`);
    }
    let signing;
    try {
      signing = await importSigningKey(material.caKey);
    } catch (err) {
      throw new SigningMaterialError(`ca-key.pem: ${(err as Error).message}`);
    }
    const intermediates = isRoot(ca) ? [] : [caPem, ...above.map((c) => c.pem)];
    // Istio's rule: nothing signed may outlive any certificate of the chain above it.
    const chainNotAfter = Math.min(...path.map((p) => Date.parse(p.cert.validTo)));
    return new CertificateAuthority(new x509.X509Certificate(caPem), signing, intermediates, rootPems.join(''), chainNotAfter, opts);
  }

  /** When the chain above the signing key expires; signing stops a minute before. */
  get usableUntil(): number {
    return this.chainNotAfter - MIN_REMAINING_MS;
  }

  /** The roots: the trust bundle the mesh verifies peers with. */
  get trustBundle(): string {
    return this.roots;
  }

  get maxTtlSeconds(): number {
    return this.maxTtl;
  }

  /** Lifetime for a request: the default for zero or less; above the maximum is an error. */
  ttlFor(requestedSeconds: number): number {
    if (!Number.isFinite(requestedSeconds) || requestedSeconds <= 0) return this.defaultTtl;
    if (requestedSeconds > this.maxTtl) {
      throw new ValidityError(`requested validity ${requestedSeconds} s is above the maximum ${this.maxTtl} s`);
    }
    return Math.floor(requestedSeconds);
  }

  /** Parses and verifies a PEM CSR (proof of possession of the key); returns its public key. */
  static async parseCsr(pem: string): Promise<x509.PublicKey> {
    if (typeof pem !== 'string' || pem.length === 0) throw new CsrError('the request has no CSR');
    if (pem.length > MAX_CSR_PEM_BYTES) throw new CsrError(`the CSR is ${pem.length} bytes, above the ${MAX_CSR_PEM_BYTES}-byte limit`);
    const blocks = pem.match(/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/g) ?? [];
    if (blocks.length !== 1) throw new CsrError(`expected one PEM "CERTIFICATE REQUEST" block, found ${blocks.length}`);
    let req: x509.Pkcs10CertificateRequest;
    try {
      req = new x509.Pkcs10CertificateRequest(pem);
    } catch (err) {
      throw new CsrError(`the CSR does not parse: ${err instanceof Error ? err.message : String(err)}`);
    }
    let spki: ArrayBuffer;
    try {
      // The library decodes the key lazily: a malformed key surfaces here, not at parse time.
      spki = req.publicKey.rawData;
    } catch (err) {
      throw new CsrError(`the CSR's public key does not parse: ${err instanceof Error ? err.message : String(err)}`);
    }
    checkPublicKey(spki);
    const hash = (req.signatureAlgorithm as { hash?: { name?: string } }).hash?.name;
    if (hash !== 'SHA-256' && hash !== 'SHA-384' && hash !== 'SHA-512') throw new CsrError(`the CSR is signed with ${hash ?? 'an unknown hash'}: SHA-256 or stronger is required`);
    let valid = false;
    try {
      valid = await req.verify();
    } catch (err) {
      throw new CsrError(`the CSR signature cannot be checked: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!valid) throw new CsrError('the CSR signature does not verify against its own key');
    return req.publicKey;
  }

  /** Signs a certificate for `publicKey` with exactly the given SANs; returns the chain, leaf first, roots last. */
  async issue(publicKey: x509.PublicKey | CryptoKey, san: SubjectAltNames, ttlSeconds: number): Promise<string[]> {
    const now = Date.now();
    if (now >= this.usableUntil) {
      throw new SigningMaterialError(`the CA's chain expires at ${new Date(this.chainNotAfter).toISOString()}: it signs no more certificates (replace cacerts or the root)`);
    }
    // Never outlive any certificate of the chain above it.
    const notAfter = Math.min(now + ttlSeconds * 1000, this.chainNotAfter);
    const names: x509.JsonGeneralName[] = [
      ...(san.uris ?? []).map((value) => ({ type: 'url' as const, value })),
      ...(san.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
      ...(san.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
    ];
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      // An empty subject, as Istio's workload certificates have: the identity is the SAN, which
      // RFC 5280 then requires to be critical.
      subject: '',
      issuer: this.signingCert.subject,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(notAfter),
      publicKey,
      signingKey: this.signingKey,
      signingAlgorithm: this.algorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
        await x509.AuthorityKeyIdentifierExtension.create(this.signingCert, false),
        new x509.SubjectAlternativeNameExtension(names, true),
      ],
    });
    this.issuedCount++;
    return [leaf.toString('pem') + '\n', ...this.intermediates, this.roots];
  }

  /** A key pair and its certificate, for the control plane's own serving certificate. */
  async issueWithKey(san: SubjectAltNames, ttlSeconds: number): Promise<{ keyPem: string; chain: string[] }> {
    const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const keys = (await subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
    const chain = await this.issue(keys.publicKey, san, ttlSeconds);
    const keyPem = x509.PemConverter.encode(await subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY') + '\n';
    return { keyPem, chain };
  }
}
