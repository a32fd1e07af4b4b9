// Callers of the CA in a Kubernetes cluster, as istiod knows them: the bearer token is a projected
// ServiceAccount token, checked with a TokenReview for the CA's audience; the pod it is bound to
// must be one the control plane sees, with the same UID and service account (istiod's node
// authorizer), so a token that outlived its pod, or one replayed by another pod, is refused.
// Service accounts of node agents (ztunnel) become node callers, which may impersonate the
// identities of their node.
//
// The control plane needs RBAC to create TokenReviews (the `system:auth-delegator` ClusterRole).

import { createHash } from 'node:crypto';
import { AuthenticationV1Api, type KubeConfig, type V1TokenReview, type V1UserInfo } from '@kubernetes/client-node';
import { ConfigError, errorMessage } from '../../mesh/errors.js';
import { DEFAULT_SERVICE_ACCOUNT, identityUri, parseIdentity, type Identity } from '../../mesh/identity/spiffe.js';
import type { Pod } from '../../mesh/k8s/types.js';
import type { Logger } from '../../mesh/log.js';
import { callWithDeadline, describeApiError, truncate } from './kube-call.js';
import { AuthenticationError, AuthenticationUnavailableError, type Authenticator, type Caller } from './types.js';

export interface TokenReviewAuthenticatorOptions {
  kubeConfig: KubeConfig;
  /** Every pod of the cluster, not one node's (e.g. a KubernetesSource without a node). */
  pods: () => readonly Pod[];
  trustDomain: string;
  /** `<namespace>/<service account>` of node agents, e.g. 'istio-system/ztunnel' (istiod's CA_TRUSTED_NODE_ACCOUNTS). */
  trustedNodeAccounts: readonly string[];
  /** The audience tokens must be issued for. Default 'istio-ca', what ztunnel's projected token carries. */
  audience?: string;
  log: Logger;
  /** Deadline of one TokenReview. Default 5 s. */
  timeoutMs?: number;
  /** How long an accepted token's review is reused. Default 60 s. */
  cacheTtlMs?: number;
  /** Reviews kept at most; the oldest goes first. Default 10,000. */
  cacheSize?: number;
  /** TokenReviews in flight at most; calls beyond it are refused rather than queued. Default 1,000. */
  maxPendingReviews?: number;
  /** New (uncached) tokens reviewed per second at most, with a burst of twice that. Default 200. */
  reviewsPerSecond?: number;
}

export const DEFAULT_CA_AUDIENCE = 'istio-ca';

const SERVICE_ACCOUNT_USER = 'system:serviceaccount:';
const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';
const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';
// A projected token is about 1 KB; far larger input is not a token and is not sent to the API.
const MAX_TOKEN_LENGTH = 16 * 1024;

/** What a successful TokenReview established; the pod checks run against the view on every call. */
interface Review {
  namespace: string;
  serviceAccount: string;
  pod: { name: string; uid: string } | undefined;
  node: string | undefined;
  /** Until when the review may be reused. */
  expiresAt: number;
}

export class TokenReviewAuthenticator implements Authenticator {
  private readonly api: AuthenticationV1Api;
  private readonly pods: () => readonly Pod[];
  private readonly trustDomain: string;
  private readonly trustedNodeAccounts: ReadonlySet<string>;
  private readonly audience: string;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly cacheTtlMs: number;
  private readonly cacheSize: number;
  private readonly maxPendingReviews: number;
  private readonly reviewBudget: TokenBucket;
  /** Keyed by the SHA-256 of the token, so the cache holds no credential. Insertion order is age. */
  private readonly cache = new Map<string, Review>();
  /** Concurrent calls with one token share one TokenReview. */
  private readonly pending = new Map<string, Promise<Review>>();
  private indexedPods: readonly Pod[] | undefined;
  private podIndex = new Map<string, Pod>();

  constructor(opts: TokenReviewAuthenticatorOptions) {
    this.api = opts.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.pods = opts.pods;
    this.trustDomain = opts.trustDomain;
    try {
      parseIdentity(identityUri({ trustDomain: opts.trustDomain, namespace: 'ns', serviceAccount: 'sa' }));
    } catch (err) {
      throw new ConfigError(`trust domain '${opts.trustDomain}' is not a DNS name: ${errorMessage(err)}`, { cause: err });
    }
    for (const account of opts.trustedNodeAccounts) {
      if (!/^[^/\s]+\/[^/\s]+$/.test(account)) throw new ConfigError(`trusted node account '${account}' must be <namespace>/<service account>`);
    }
    this.trustedNodeAccounts = new Set(opts.trustedNodeAccounts);
    this.audience = opts.audience ?? DEFAULT_CA_AUDIENCE;
    this.log = opts.log;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.cacheTtlMs = opts.cacheTtlMs ?? 60_000;
    this.cacheSize = Math.max(1, opts.cacheSize ?? 10_000);
    this.maxPendingReviews = Math.max(1, opts.maxPendingReviews ?? 1000);
    this.reviewBudget = new TokenBucket(opts.reviewsPerSecond ?? 200);
  }

  async authenticate(token: string): Promise<Caller> {
    if (token === '') throw new AuthenticationError('the bearer token is empty');
    if (token.length > MAX_TOKEN_LENGTH) throw new AuthenticationError(`the bearer token is ${token.length} bytes long, more than a ServiceAccount token can be (${MAX_TOKEN_LENGTH})`);
    const review = await this.reviewOf(token);
    return this.callerOf(review);
  }

  private async reviewOf(token: string): Promise<Review> {
    const key = createHash('sha256').update(token).digest('hex');
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      if (cached.expiresAt > Date.now()) return cached;
      this.cache.delete(key);
    }
    const inFlight = this.pending.get(key);
    if (inFlight !== undefined) return inFlight;
    if (this.pending.size >= this.maxPendingReviews) {
      throw new AuthenticationUnavailableError(`cannot check the token now: ${this.pending.size} token reviews are already waiting for the Kubernetes API`);
    }
    // Known tokens come from the cache; only unknown ones cost the API server a review. A caller
    // making up tokens must not turn the CA into a TokenReview flood against the API server.
    if (!this.reviewBudget.take()) {
      throw new AuthenticationUnavailableError(`cannot check the token now: more than ${this.reviewBudget.perSecond} new tokens per second are being reviewed`);
    }
    const review = this.review(token).then((result) => {
      this.remember(key, result);
      return result;
    });
    this.pending.set(key, review);
    try {
      return await review;
    } finally {
      this.pending.delete(key);
    }
  }

  private remember(key: string, review: Review): void {
    if (review.expiresAt <= Date.now()) return;
    while (this.cache.size >= this.cacheSize) {
      const oldest = this.cache.keys().next();
      if (oldest.done === true) break;
      this.cache.delete(oldest.value);
    }
    this.cache.set(key, review);
  }

  /** Asks the API server; everything the review proves about the token, or an AuthenticationError. */
  private async review(token: string): Promise<Review> {
    const requested = Date.now();
    let result: V1TokenReview;
    try {
      result = await callWithDeadline('TokenReview', this.timeoutMs, (options) =>
        this.api.createTokenReview(
          { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [this.audience] } } },
          options,
        ),
      );
    } catch (err) {
      const why = describeApiError(err);
      this.log.warn({ err: why }, 'TokenReview failed; the caller will retry');
      throw new AuthenticationUnavailableError(`cannot check the token now: the TokenReview failed: ${why}`);
    }
    const status = result.status;
    if (status?.authenticated !== true) {
      throw new AuthenticationError(`the token is not authenticated${status?.error ? `: ${truncate(status.error, 300)}` : ''}`);
    }
    const audiences = status.audiences ?? [];
    if (!audiences.includes(this.audience)) {
      throw new AuthenticationError(`the token is not for audience '${this.audience}' (the review says it is for ${audiences.length > 0 ? audiences.map((a) => `'${truncate(a, 100)}'`).join(', ') : 'no audience'})`);
    }
    const user = status.user ?? {};
    const { namespace, serviceAccount } = serviceAccountOf(user.username ?? '', this.trustDomain);
    const podName = extraValue(user, EXTRA_POD_NAME);
    const podUid = extraValue(user, EXTRA_POD_UID);
    if ((podName === undefined) !== (podUid === undefined)) {
      throw new AuthenticationError(`the token's pod binding is incomplete: it names ${podName === undefined ? 'a pod UID but no pod name' : 'a pod name but no pod UID'}`);
    }
    return {
      namespace,
      serviceAccount,
      pod: podName !== undefined && podUid !== undefined ? { name: podName, uid: podUid } : undefined,
      node: extraValue(user, EXTRA_NODE_NAME),
      expiresAt: Math.min(requested + this.cacheTtlMs, expiryOf(token) ?? Number.POSITIVE_INFINITY),
    };
  }

  /** Checks the review against the pods the control plane sees now, and names the caller. */
  private callerOf(review: Review): Caller {
    const identity: Identity = { trustDomain: this.trustDomain, namespace: review.namespace, serviceAccount: review.serviceAccount };
    const account = `${review.namespace}/${review.serviceAccount}`;
    const isNode = this.trustedNodeAccounts.has(account);
    if (review.pod === undefined) {
      if (isNode) throw new AuthenticationError(`node account ${account} must present a pod-bound (projected) token; this one names no pod`);
      return { kind: 'workload', identity };
    }
    const key = `${review.namespace}/${review.pod.name}`;
    const pod = this.podNamed(key);
    if (pod === undefined) throw new AuthenticationError(`the token is bound to pod ${key}, which does not exist (or the control plane has not seen it yet)`);
    if (pod.metadata.uid !== review.pod.uid) {
      throw new AuthenticationError(`the token is bound to pod ${key} with UID ${review.pod.uid}, but that pod now has UID ${pod.metadata.uid ?? '(none)'}: it was replaced`);
    }
    const podAccount = pod.spec.serviceAccountName || DEFAULT_SERVICE_ACCOUNT;
    if (podAccount !== review.serviceAccount) {
      throw new AuthenticationError(`the token is for service account ${account}, but its pod ${key} runs as ${review.namespace}/${podAccount}`);
    }
    if (!isNode) return { kind: 'workload', identity, pod: { namespace: review.namespace, name: review.pod.name, uid: review.pod.uid } };
    const scheduled = pod.spec.nodeName || undefined;
    if (review.node !== undefined && scheduled !== undefined && review.node !== scheduled) {
      throw new AuthenticationError(`the token of ${account} names node ${review.node}, but its pod ${key} is on node ${scheduled}`);
    }
    const node = review.node ?? scheduled;
    if (node === undefined) throw new AuthenticationError(`the pod ${key} of node account ${account} is not scheduled on a node`);
    return { kind: 'node', identity, node };
  }

  /** The view's pod by `<ns>/<name>`; the index is rebuilt when the view hands out a new list. */
  private podNamed(key: string): Pod | undefined {
    const pods = this.pods();
    if (pods !== this.indexedPods) {
      this.podIndex = new Map(pods.map((p) => [`${p.metadata.namespace ?? 'default'}/${p.metadata.name}`, p]));
      this.indexedPods = pods;
    }
    return this.podIndex.get(key);
  }
}

/** `system:serviceaccount:<ns>:<sa>`, both parts valid in a SPIFFE identity; else AuthenticationError. */
function serviceAccountOf(username: string, trustDomain: string): { namespace: string; serviceAccount: string } {
  const parts = username.startsWith(SERVICE_ACCOUNT_USER) ? username.slice(SERVICE_ACCOUNT_USER.length).split(':') : [];
  const [namespace, serviceAccount] = parts;
  if (parts.length !== 2 || !namespace || !serviceAccount) {
    throw new AuthenticationError(`the token's user '${truncate(username, 200)}' is not a service account (system:serviceaccount:<namespace>:<name>)`);
  }
  try {
    parseIdentity(identityUri({ trustDomain, namespace, serviceAccount }));
  } catch (err) {
    throw new AuthenticationError(`the token's service account ${truncate(`${namespace}/${serviceAccount}`, 200)} cannot be a SPIFFE identity: ${errorMessage(err)}`);
  }
  return { namespace, serviceAccount };
}

/** The single value of an `extra` field; several values are refused rather than guessed between. */
function extraValue(user: V1UserInfo, key: string): string | undefined {
  const values = user.extra?.[key];
  if (values === undefined || values.length === 0) return undefined;
  if (values.length !== 1 || values[0] === '') throw new AuthenticationError(`the token's ${key} must be one name, got ${truncate(JSON.stringify(values), 200)}`);
  return values[0];
}

/**
 * The token's `exp` in ms, read without verifying the signature: only ever used after the API
 * server accepted the token, so a review is not reused past the token's own end.
 */
function expiryOf(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    if (typeof claims === 'object' && claims !== null && 'exp' in claims && typeof claims.exp === 'number') return claims.exp * 1000;
  } catch {
    // Not a JWT the control plane can read: the TTL alone bounds the reuse.
  }
  return undefined;
}

/** A token bucket: `perSecond` tokens a second, holding at most two seconds' worth. */
class TokenBucket {
  private tokens: number;
  private last = Date.now();

  constructor(readonly perSecond: number) {
    this.tokens = perSecond * 2;
  }

  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.perSecond * 2, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
