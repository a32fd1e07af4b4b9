// The control plane's own TLS certificate, kept fresh: issued by the mesh CA with a lifetime of
// its own (not the workloads'), renewed at half-life, and handed to the gRPC server through
// grpc-js's certificate-provider interface, so rotation needs no restart and drops no connection.
import { X509Certificate } from 'node:crypto';
import type { experimental } from '@grpc/grpc-js';
import type { Logger } from '../mesh/log.js';
import { errorMessage } from '../mesh/errors.js';
import type { CertificateAuthority, SubjectAltNames } from './ca/authority.js';

type CertificateProvider = experimental.CertificateProvider;
type IdentityListener = Parameters<CertificateProvider['addIdentityCertificateListener']>[0];
type CaListener = Parameters<CertificateProvider['addCaCertificateListener']>[0];

export const SERVING_TTL_SECONDS = 30 * 86400;
/** After a failed renewal (the CA's own chain about to expire, say), try again this soon. */
const RETRY_MS = 60_000;

export class ServingCertificate implements CertificateProvider {
  private identity: { certificate: Buffer; privateKey: Buffer } | null = null;
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly caListeners = new Set<CaListener>();
  private timer: NodeJS.Timeout | undefined;
  private current: X509Certificate | undefined;

  private constructor(
    private readonly authority: CertificateAuthority,
    private readonly san: SubjectAltNames,
    private readonly log: Logger,
  ) {}

  static async start(authority: CertificateAuthority, san: SubjectAltNames, log: Logger): Promise<ServingCertificate> {
    const s = new ServingCertificate(authority, san, log);
    await s.renew();
    return s;
  }

  /** The certificate being served now. */
  get certificate(): X509Certificate | undefined {
    return this.current;
  }

  /** Issues a new certificate and key, hands them to the server, and schedules the next renewal. */
  async renew(): Promise<void> {
    clearTimeout(this.timer);
    let delay: number;
    try {
      const { keyPem, chain } = await this.authority.issueWithKey(this.san, SERVING_TTL_SECONDS);
      // The leaf and intermediates, not the roots: clients already hold those.
      this.identity = { certificate: Buffer.from(chain.slice(0, -1).join('')), privateKey: Buffer.from(keyPem) };
      this.current = new X509Certificate(chain[0]!);
      for (const l of this.identityListeners) l(this.identity);
      const from = Date.parse(this.current.validFrom);
      delay = (Date.parse(this.current.validTo) - from) / 2 - (Date.now() - from);
      this.log.info({ serial: this.current.serialNumber.toLowerCase(), notAfter: this.current.validTo }, 'serving certificate issued');
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'renewing the serving certificate failed; the current one stays until it expires');
      delay = RETRY_MS;
    }
    this.timer = setTimeout(() => void this.renew(), Math.max(1000, Math.min(delay, 2 ** 31 - 1)));
    this.timer.unref();
  }

  // Listeners hear the current value on the next tick, never during the add: grpc-js subscribes
  // before it registers the watcher that applies updates, so a synchronous answer would be lost
  // and the server would refuse every connection.
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.identity && this.identityListeners.has(listener)) listener(this.identity);
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }

  /** The roots clients may present certificates from (requested, not required). */
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: Buffer.from(this.authority.trustBundle) });
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
