// istio.v1.auth.IstioCertificateService/CreateCertificate. Cheap checks come first (token, then
// authorization), so an unauthenticated caller never costs a CSR parse or a signature; every
// refusal is a precise gRPC status with a message; nothing is signed unless every check passed.
import { Metadata, status, type ServerUnaryCall, type sendUnaryData, type ServiceError } from '@grpc/grpc-js';
import type { IstioCertificateRequest, IstioCertificateResponse, IstioCertificateServiceServer } from '../../proto/gen/istio/v1/auth/ca.js';
import { AmbitError, errorMessage } from '../../mesh/errors.js';
import { InvalidIdentityError, identityUri } from '../../mesh/identity/spiffe.js';
import type { Pod } from '../../mesh/k8s/types.js';
import type { Logger } from '../../mesh/log.js';
import { CertificateAuthority, CsrError, SigningMaterialError, ValidityError } from './authority.js';
import { authorizedIdentity } from './authorize.js';
import { IMPERSONATED_IDENTITY } from '../../mesh/identity/ca-client.js';
import { AuthenticationError, AuthenticationUnavailableError, AuthorizationError, type Authenticator } from './types.js';
import { bearerToken, checkClusterId } from '../bearer.js';

/** Requests in progress beyond this are refused (RESOURCE_EXHAUSTED) rather than queued without bound. */
export const MAX_IN_FLIGHT = 256;

export interface CaServiceOptions {
  authority: CertificateAuthority;
  authenticator: Authenticator;
  /** Every pod of the cluster (for node authorization). */
  pods: () => readonly Pod[];
  trustDomain: string;
  /** Callers sending a `clusterid` header must name this cluster (Istio's default: Kubernetes). */
  clusterId: string;
  log: Logger;
}

class BadRequestError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_BAD_REQUEST', message);
  }
}

function grpcError(code: status, message: string): Partial<ServiceError> {
  return { code, details: message, message, metadata: new Metadata() };
}

function statusOf(err: unknown): status {
  if (err instanceof AuthenticationError) return status.UNAUTHENTICATED;
  if (err instanceof AuthorizationError) return status.PERMISSION_DENIED;
  if (err instanceof CsrError || err instanceof ValidityError || err instanceof InvalidIdentityError || err instanceof BadRequestError) return status.INVALID_ARGUMENT;
  if (err instanceof SigningMaterialError || err instanceof AuthenticationUnavailableError) return status.UNAVAILABLE;
  return status.INTERNAL;
}

export function caService(opts: CaServiceOptions): IstioCertificateServiceServer {
  let inFlight = 0;

  async function handle(call: ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>): Promise<IstioCertificateResponse> {
    const token = bearerToken(call.metadata);
    checkClusterId(call.metadata, opts.clusterId);
    const caller = await opts.authenticator.authenticate(token);
    const meta = call.request.metadata;
    const impersonate = meta?.[IMPERSONATED_IDENTITY];
    if (impersonate !== undefined && typeof impersonate !== 'string') {
      throw new BadRequestError(`metadata ${IMPERSONATED_IDENTITY} must be a string, got ${impersonate === null ? 'null' : typeof impersonate}`);
    }
    const identity = authorizedIdentity(caller, impersonate, opts.pods(), opts.trustDomain);
    const ttl = opts.authority.ttlFor(call.request.validityDuration);
    const publicKey = await CertificateAuthority.parseCsr(call.request.csr);
    const chain = await opts.authority.issue(publicKey, { uris: [identityUri(identity)] }, ttl);
    const from = caller.kind === 'node' ? { node: caller.node } : caller.pod ? { pod: `${caller.pod.namespace}/${caller.pod.name}` } : {};
    opts.log.info({ caller: identityUri(caller.identity), ...from, identity: identityUri(identity), ttl }, 'certificate issued');
    return { certChain: chain };
  }

  return {
    createCertificate(call, callback: sendUnaryData<IstioCertificateResponse>) {
      if (inFlight >= MAX_IN_FLIGHT) {
        callback(grpcError(status.RESOURCE_EXHAUSTED, `the CA is busy (${MAX_IN_FLIGHT} requests in progress): retry with backoff`));
        return;
      }
      inFlight++;
      handle(call).then(
        (res) => callback(null, res),
        (err: unknown) => {
          const code = statusOf(err);
          if (code === status.INTERNAL) opts.log.error({ err: errorMessage(err) }, 'certificate request failed');
          else opts.log.warn({ code: status[code], err: errorMessage(err) }, 'certificate request refused');
          callback(grpcError(code, code === status.INTERNAL ? 'internal error' : errorMessage(err)));
        },
      ).finally(() => inFlight--);
    },
  };
}
