// What the CA's parts agree on: who is calling, how a bearer token becomes a caller, and where the
// root of trust is kept.
import type { Identity } from '../../mesh/identity/spiffe.js';
import { AmbitError } from '../../mesh/errors.js';

/**
 * An authenticated caller. A workload may get its own identity only. A node caller (a node's
 * ztunnel, or the lab's per-node credential) may also get, by impersonation, the identity of a
 * service account that has a pod on `node`.
 */
export type Caller =
  | { kind: 'workload'; identity: Identity; pod?: { namespace: string; name: string; uid?: string } }
  | { kind: 'node'; identity: Identity; node: string };

/** Turns the bearer token of a call into a caller, or throws an AuthenticationError. */
export interface Authenticator {
  authenticate(token: string): Promise<Caller>;
}

/** The token is missing, malformed, unknown or rejected. Maps to gRPC UNAUTHENTICATED. */
export class AuthenticationError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_UNAUTHENTICATED', message);
  }
}

/**
 * The token could not be checked now (the Kubernetes API is down, slow or overloaded): not the
 * caller's fault, so it maps to gRPC UNAVAILABLE, which clients retry.
 */
export class AuthenticationUnavailableError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_AUTHENTICATION_UNAVAILABLE', message);
  }
}

/** The caller may not hold the identity it asked for. Maps to gRPC PERMISSION_DENIED. */
export class AuthorizationError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_PERMISSION_DENIED', message);
  }
}

/**
 * The CA's signing material, in Istio's `cacerts` layout: the signing certificate and its key
 * (the root itself when self-signed, or an intermediate), the chain from the signing certificate
 * up to (not including) the root, and the root(s).
 */
export interface SigningMaterial {
  /** ca-cert.pem */
  caCert: string;
  /** ca-key.pem (PKCS#8 or SEC1/PKCS#1 PEM) */
  caKey: string;
  /** cert-chain.pem: the signing certificate and any intermediates above it, without the root. */
  certChain: string;
  /** root-cert.pem: one or more roots; the trust bundle published to the mesh. */
  rootCert: string;
}

/** Where the self-signed root is kept between restarts (a directory, or a Kubernetes Secret). */
export interface RootStore {
  /** The stored material, or null when there is none yet. */
  load(): Promise<SigningMaterial | null>;
  /**
   * Stores `material` unless someone stored one first (another replica); returns what is stored
   * now, which is what the caller must use.
   */
  saveIfAbsent(material: SigningMaterial): Promise<SigningMaterial>;
}
