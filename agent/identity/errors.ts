// Why a fetch() of a workload certificate did not resolve; each has a stable code.
import { AmbitError } from '../../mesh/errors.js';

/** No certificate arrived within the caller's time limit; the message carries the last CA error, if any. */
export class CertificateTimeoutError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_CERT_TIMEOUT', message);
  }
}

/** The CA refused the identity (e.g. PERMISSION_DENIED); retrying the same request would meet the same answer. */
export class CertificateRefusedError extends AmbitError {
  constructor(message: string, cause: unknown) {
    super('AMBIT_CERT_REFUSED', message, { cause });
  }
}

/** The identity manager was closed while the caller waited. */
export class IdentityManagerClosedError extends AmbitError {
  constructor(uri: string) {
    super('AMBIT_IDENTITY_MANAGER_CLOSED', `the identity manager is closed: no certificate for ${uri}`);
  }
}

/** What the CA returned cannot be held: no leaf, the wrong identity, another key, already expired. */
export class UnusableCertificateError extends AmbitError {
  /** As CaRequestError has it: a waiting caller is told at once rather than made to wait for retries. */
  readonly retryable = false;

  constructor(message: string) {
    super('AMBIT_CERT_UNUSABLE', message);
  }
}
