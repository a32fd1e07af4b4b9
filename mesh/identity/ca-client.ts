// A client of the CA service (Ambit's, or istiod's: the API is Istio's). The bearer token is read
// anew for every call, because projected ServiceAccount tokens rotate; the returned leaf must carry
// exactly the identity asked for, as ztunnel checks.
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { Metadata, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { IstioCertificateServiceClient, type IstioCertificateResponse } from '../../proto/gen/istio/v1/auth/ca.js';
import { AmbitError, ConfigError, errorMessage } from '../errors.js';
import { verifyIssuedChain } from './chain.js';
import { splitPem } from './x509.js';
import { identityUri, type Identity } from './spiffe.js';

/** The metadata key a node uses to ask for a workload's identity (a Struct field, as Istio has it). */
export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';
export const DEFAULT_CLUSTER_ID = 'Kubernetes';
/** The name istiod serves under, which Istio's clients verify and Ambit's control plane carries. */
export const ISTIOD_NAME = 'istiod.istio-system.svc';

export interface CaClientOptions {
  /** host:port of the CA, e.g. 172.30.0.2:15012. */
  address: string;
  /** PEM roots that sign the CA's serving certificate. */
  rootCert: string;
  /** The bearer token, read at every call. */
  token: () => string;
  clusterId?: string;
  /** The TLS name to verify; default: the address's host name, or istiod.istio-system.svc for an IP. */
  serverName?: string;
  timeoutMs?: number;
}

/** A CA call failed. `retryable` is true for failures a later attempt may not meet (unavailable, busy, timeout). */
export class CaRequestError extends AmbitError {
  readonly grpcCode: number | null;
  readonly retryable: boolean;

  constructor(message: string, grpcCode: number | null, retryable: boolean) {
    super('AMBIT_CA_REQUEST', message);
    this.grpcCode = grpcCode;
    this.retryable = retryable;
  }
}

const RETRYABLE = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.RESOURCE_EXHAUSTED, status.INTERNAL, status.UNKNOWN]);

export class CaClient {
  private readonly client: IstioCertificateServiceClient;
  private readonly opts: CaClientOptions;
  /** The configured roots: what a returned chain must lead to. */
  private readonly roots: X509Certificate[];

  constructor(opts: CaClientOptions) {
    this.opts = opts;
    this.roots = splitPem(opts.rootCert).map((p) => new X509Certificate(p));
    if (this.roots.length === 0) throw new ConfigError('the CA client needs at least one root certificate');
    // Dialling an IP, verify the name Istio's clients verify: without a name, grpc-js would send
    // the IP as SNI, which RFC 6066 forbids (and Node warns about).
    const host = opts.address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    const name = opts.serverName ?? (isIP(host) ? ISTIOD_NAME : host);
    this.client = new IstioCertificateServiceClient(opts.address, credentials.createSsl(Buffer.from(opts.rootCert)), {
      'grpc.ssl_target_name_override': name,
      'grpc.default_authority': name,
      // grpc-js would otherwise back off reconnecting for up to 2 minutes, failing every call at
      // once meanwhile. Callers pace their own requests (the manager's backoff); the channel
      // should just notice quickly that the CA is back.
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 2000,
    });
  }

  /**
   * Asks for a certificate for `identity` (impersonated unless `impersonate` is false, i.e. the
   * caller's own). Resolves with the PEM chain, leaf first, after checking the leaf's identity.
   */
  createCertificate(csrPem: string, validitySeconds: number, identity: Identity, impersonate = true): Promise<string[]> {
    const md = new Metadata();
    let token: string;
    try {
      token = this.opts.token().trim();
    } catch (err) {
      return Promise.reject(new CaRequestError(`cannot read the CA token: ${(err as Error).message}`, null, true));
    }
    md.set('authorization', `Bearer ${token}`);
    md.set('clusterid', this.opts.clusterId ?? DEFAULT_CLUSTER_ID);
    const uri = identityUri(identity);
    const request = { csr: csrPem, validityDuration: validitySeconds, metadata: impersonate ? { [IMPERSONATED_IDENTITY]: uri } : undefined };
    return new Promise((resolve, reject) => {
      this.client.createCertificate(request, md, { deadline: Date.now() + (this.opts.timeoutMs ?? 10_000) }, (err: ServiceError | null, res?: IstioCertificateResponse) => {
        if (err) {
          reject(new CaRequestError(`CA ${this.opts.address}: ${status[err.code] ?? err.code}: ${err.details || err.message}`, err.code, RETRYABLE.has(err.code)));
          return;
        }
        try {
          verifyIssuedChain(res?.certChain ?? [], uri, this.roots);
          resolve(res!.certChain);
        } catch (e) {
          reject(new CaRequestError(`CA ${this.opts.address}: ${errorMessage(e)}`, null, false));
        }
      });
    });
  }

  close(): void {
    this.client.close();
  }
}

