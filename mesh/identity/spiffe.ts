// SPIFFE identities of workloads: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>,
// parsed as Istio's ztunnel parses them (exactly these five parts, literal "ns" and "sa").
import { AmbitError } from '../errors.js';

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_SERVICE_ACCOUNT = 'default';

export interface Identity {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

export class InvalidIdentityError extends AmbitError {
  constructor(value: string, why: string) {
    super('AMBIT_INVALID_IDENTITY', `'${value.length > 200 ? `${value.slice(0, 200)}…` : value}' is not a SPIFFE workload identity: ${why}`);
  }
}

// DNS-1123 labels for namespaces and service-account names; a trust domain is a DNS name.
const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const TRUST_DOMAIN = /^[a-z0-9]([-a-z0-9._]{0,253}[a-z0-9])?$/;

/** A trust domain is a DNS name (lower case), as SPIFFE requires. */
export function isTrustDomain(value: string): boolean {
  return TRUST_DOMAIN.test(value);
}

export function identityUri(id: Identity): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function parseIdentity(uri: string): Identity {
  if (!uri.startsWith('spiffe://')) throw new InvalidIdentityError(uri, 'it does not start with spiffe://');
  const parts = uri.slice('spiffe://'.length).split('/');
  if (parts.length !== 5 || parts[1] !== 'ns' || parts[3] !== 'sa') {
    throw new InvalidIdentityError(uri, 'expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>');
  }
  const [trustDomain, , namespace, , serviceAccount] = parts as [string, string, string, string, string];
  if (!TRUST_DOMAIN.test(trustDomain)) throw new InvalidIdentityError(uri, `trust domain '${trustDomain}' is not a DNS name`);
  if (!LABEL.test(namespace)) throw new InvalidIdentityError(uri, `namespace '${namespace}' is not a DNS-1123 label`);
  if (!SUBDOMAIN.test(serviceAccount)) throw new InvalidIdentityError(uri, `service account '${serviceAccount}' is not a DNS-1123 subdomain`);
  return { trustDomain, namespace, serviceAccount };
}

export function sameIdentity(a: Identity, b: Identity): boolean {
  return a.trustDomain === b.trustDomain && a.namespace === b.namespace && a.serviceAccount === b.serviceAccount;
}
