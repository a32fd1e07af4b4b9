import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { KubernetesSource } from '../../mesh/config/sources/kubernetes.js';
import { TokenReviewAuthenticator, type TokenReviewAuthenticatorOptions } from '../../controlplane/ca/kubernetes-auth.js';
import { AuthenticationError, AuthenticationUnavailableError } from '../../controlplane/ca/types.js';
import type { Pod } from '../../mesh/k8s/types.js';
import { FakeApiServer, NAMESPACES, PODS, type FakeToken } from '../support/fake-apiserver.js';

const log = pino({ level: 'silent' });
const TRUST_DOMAIN = 'cluster.local';
const TOKEN_REVIEWS = '/apis/authentication.k8s.io/v1/tokenreviews';

function pod(namespace: string, name: string, serviceAccount: string, nodeName: string, uid = `uid-${name}`): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, uid },
    spec: { nodeName, serviceAccountName: serviceAccount, containers: [{ name: 'c' }] },
    status: { phase: 'Running', podIP: '10.0.0.1' },
  };
}

/** What TokenReview says of a projected token, bound to `bound.pod` (with that pod's UID unless `bound.uid` says otherwise). */
function token(namespace: string, serviceAccount: string, bound?: { pod: string; uid?: string; node?: string }, audiences = ['istio-ca']): FakeToken {
  const extra: Record<string, string[]> = {};
  if (bound) {
    extra['authentication.kubernetes.io/pod-name'] = [bound.pod];
    extra['authentication.kubernetes.io/pod-uid'] = [bound.uid ?? `uid-${bound.pod}`];
    if (bound.node !== undefined) extra['authentication.kubernetes.io/node-name'] = [bound.node];
  }
  return { user: { username: `system:serviceaccount:${namespace}:${serviceAccount}`, uid: 'sa-uid', groups: ['system:serviceaccounts'], extra }, audiences };
}

function reviews(api: FakeApiServer): number {
  return api.requestsMatching({ method: 'POST', path: TOKEN_REVIEWS }).length;
}

describe('TokenReviewAuthenticator against a fake API server', { timeout: 30_000 }, () => {
  let api: FakeApiServer;
  let pods: Pod[];

  function authenticator(opts: Partial<TokenReviewAuthenticatorOptions> = {}): TokenReviewAuthenticator {
    return new TokenReviewAuthenticator({
      kubeConfig: api.kubeConfig(),
      pods: () => pods,
      trustDomain: TRUST_DOMAIN,
      trustedNodeAccounts: ['istio-system/ztunnel', 'ambit-system/ztunnel'],
      log,
      ...opts,
    });
  }

  /** Refused because the API could not answer: UNAVAILABLE to the caller, who retries. */
  async function unavailable(auth: TokenReviewAuthenticator, bearer: string, message: RegExp): Promise<void> {
    await assert.rejects(auth.authenticate(bearer), (err: unknown) => {
      assert.ok(err instanceof AuthenticationUnavailableError, `an AuthenticationUnavailableError, got ${String(err)}`);
      assert.equal(err.code, 'AMBIT_AUTHENTICATION_UNAVAILABLE');
      assert.match(err.message, message);
      return true;
    });
  }

  async function refused(auth: TokenReviewAuthenticator, bearer: string, message: RegExp): Promise<void> {
    await assert.rejects(auth.authenticate(bearer), (err: unknown) => {
      assert.ok(err instanceof AuthenticationError, `an AuthenticationError, got ${String(err)}`);
      assert.equal(err.code, 'AMBIT_UNAUTHENTICATED');
      assert.match(err.message, message);
      return true;
    });
  }

  beforeEach(async () => {
    api = await FakeApiServer.start();
    pods = [
      pod('apps', 'reviews-1', 'reviews', 'node-a'),
      pod('istio-system', 'ztunnel-a', 'ztunnel', 'node-a'),
      pod('ambit-system', 'ztunnel-b', 'ztunnel', 'node-b'),
      pod('apps', 'rogue', 'ztunnel', 'node-a'),
    ];
  });

  afterEach(async () => {
    await api.close();
  });

  it('a workload: its own identity and bound pod, asked for the istio-ca audience', async () => {
    api.tokens.set('t-reviews', token('apps', 'reviews', { pod: 'reviews-1' }));
    const caller = await authenticator().authenticate('t-reviews');
    assert.deepEqual(caller, {
      kind: 'workload',
      identity: { trustDomain: TRUST_DOMAIN, namespace: 'apps', serviceAccount: 'reviews' },
      pod: { namespace: 'apps', name: 'reviews-1', uid: 'uid-reviews-1' },
    });
    const [request] = api.requestsMatching({ method: 'POST', path: TOKEN_REVIEWS });
    const body = JSON.parse(request?.body ?? '{}') as { apiVersion: string; kind: string; spec: { token: string; audiences: string[] } };
    assert.equal(body.apiVersion, 'authentication.k8s.io/v1');
    assert.equal(body.kind, 'TokenReview');
    assert.deepEqual(body.spec, { token: 't-reviews', audiences: ['istio-ca'] });

    // Another audience when configured; a token without pod binding is a workload without a pod.
    api.tokens.set('t-legacy', token('apps', 'reviews', undefined, ['ambit-ca']));
    const legacy = await authenticator({ audience: 'ambit-ca' }).authenticate('t-legacy');
    assert.deepEqual(legacy, { kind: 'workload', identity: { trustDomain: TRUST_DOMAIN, namespace: 'apps', serviceAccount: 'reviews' } });
    assert.deepEqual((JSON.parse(api.requests.at(-1)?.body ?? '{}') as { spec: { audiences: string[] } }).spec.audiences, ['ambit-ca']);
  });

  it('a node agent: the node from the token when it names one, else from its pod', async () => {
    const auth = authenticator();
    api.tokens.set('t-zt-a', token('istio-system', 'ztunnel', { pod: 'ztunnel-a', node: 'node-a' }));
    assert.deepEqual(await auth.authenticate('t-zt-a'), {
      kind: 'node',
      identity: { trustDomain: TRUST_DOMAIN, namespace: 'istio-system', serviceAccount: 'ztunnel' },
      node: 'node-a',
    });
    api.tokens.set('t-zt-b', token('ambit-system', 'ztunnel', { pod: 'ztunnel-b' }));
    assert.deepEqual(await auth.authenticate('t-zt-b'), {
      kind: 'node',
      identity: { trustDomain: TRUST_DOMAIN, namespace: 'ambit-system', serviceAccount: 'ztunnel' },
      node: 'node-b',
    });
    // A token naming another node than its pod's is not believed.
    api.tokens.set('t-zt-moved', token('istio-system', 'ztunnel', { pod: 'ztunnel-a', node: 'node-b' }));
    await refused(auth, 't-zt-moved', /names node node-b, but its pod istio-system\/ztunnel-a is on node node-a/);
  });

  it('a service account that is not a trusted node account is a workload, whatever it is called', async () => {
    api.tokens.set('t-rogue', token('apps', 'ztunnel', { pod: 'rogue', node: 'node-a' }));
    const caller = await authenticator().authenticate('t-rogue');
    assert.equal(caller.kind, 'workload');
    assert.deepEqual(caller.identity, { trustDomain: TRUST_DOMAIN, namespace: 'apps', serviceAccount: 'ztunnel' });
  });

  it('refuses a node account token that is bound to no pod', async () => {
    api.tokens.set('t-zt-unbound', token('istio-system', 'ztunnel'));
    await refused(authenticator(), 't-zt-unbound', /node account istio-system\/ztunnel must present a pod-bound \(projected\) token/);
  });

  it('refuses a token for another audience, whether the server or the authenticator notices', async () => {
    api.tokens.set('t-kube', token('apps', 'reviews', { pod: 'reviews-1' }, ['https://kubernetes.default.svc.cluster.local']));
    await refused(authenticator(), 't-kube', /not authenticated: .*token audiences \["https:\/\/kubernetes\.default\.svc\.cluster\.local"\] is invalid for the target audiences \["istio-ca"\]/);
    // An authenticator (an old server, a webhook) that ignores spec.audiences says authenticated.
    api.tokens.set('t-loose', { ...token('apps', 'reviews', { pod: 'reviews-1' }), reportedAudiences: ['https://kubernetes.default.svc'] });
    await refused(authenticator(), 't-loose', /the token is not for audience 'istio-ca' \(the review says it is for 'https:\/\/kubernetes\.default\.svc'\)/);
    api.tokens.set('t-none', { ...token('apps', 'reviews', { pod: 'reviews-1' }), reportedAudiences: [] });
    await refused(authenticator(), 't-none', /not for audience 'istio-ca' \(the review says it is for no audience\)/);
  });

  it('refuses an unknown token, an empty one and an oversized one (those two without asking)', async () => {
    const auth = authenticator();
    await refused(auth, 'not-a-token', /^the token is not authenticated: \[invalid bearer token/);
    await refused(auth, '', /the bearer token is empty/);
    await refused(auth, 'x'.repeat(20_000), /20000 bytes long/);
    assert.equal(reviews(api), 1);
  });

  it('refuses users that are not service accounts, or whose names cannot be identities', async () => {
    const auth = authenticator();
    api.tokens.set('t-admin', { user: { username: 'kubernetes-admin' }, audiences: ['istio-ca'] });
    await refused(auth, 't-admin', /user 'kubernetes-admin' is not a service account/);
    api.tokens.set('t-colons', { user: { username: 'system:serviceaccount:apps:a:b' }, audiences: ['istio-ca'] });
    await refused(auth, 't-colons', /is not a service account/);
    api.tokens.set('t-upper', { user: { username: 'system:serviceaccount:Apps:reviews' }, audiences: ['istio-ca'] });
    await refused(auth, 't-upper', /service account Apps\/reviews cannot be a SPIFFE identity/);
  });

  it('refuses a token whose pod was replaced, is unknown, or runs as another account', async () => {
    const auth = authenticator();
    api.tokens.set('t-old', token('apps', 'reviews', { pod: 'reviews-1', uid: 'uid-of-a-deleted-pod' }));
    await refused(auth, 't-old', /bound to pod apps\/reviews-1 with UID uid-of-a-deleted-pod, but that pod now has UID uid-reviews-1: it was replaced/);
    api.tokens.set('t-ghost', token('apps', 'reviews', { pod: 'reviews-9' }));
    await refused(auth, 't-ghost', /bound to pod apps\/reviews-9, which does not exist/);
    api.tokens.set('t-other-sa', token('apps', 'ratings', { pod: 'reviews-1' }));
    await refused(auth, 't-other-sa', /for service account apps\/ratings, but its pod apps\/reviews-1 runs as apps\/reviews/);
    api.tokens.set('t-half', { ...token('apps', 'reviews'), user: { username: 'system:serviceaccount:apps:reviews', extra: { 'authentication.kubernetes.io/pod-name': ['reviews-1'] } } });
    await refused(auth, 't-half', /pod binding is incomplete: it names a pod name but no pod UID/);
  });

  it('reports API failures as unavailable (the caller retries), naming the cause', async () => {
    const auth = authenticator({ timeoutMs: 300 });
    api.tokens.set('t-reviews', token('apps', 'reviews', { pod: 'reviews-1' }));
    api.failRequests({ pathPrefix: TOKEN_REVIEWS, status: 403 });
    await unavailable(auth, 't-reviews', /cannot check the token now: the TokenReview failed: HTTP 403: injected failure/);
    api.failRequests({ pathPrefix: TOKEN_REVIEWS, status: 500 });
    await unavailable(auth, 't-reviews', /TokenReview failed: HTTP 500/);

    // A hung API server: the deadline ends the call.
    api.stallRequests({ pathPrefix: TOKEN_REVIEWS });
    const started = Date.now();
    await unavailable(auth, 't-reviews', /TokenReview failed: TokenReview: the Kubernetes API did not answer within 300 ms/);
    assert.ok(Date.now() - started < 2000, 'the deadline, not the socket, ended it');

    // Failures are not cached: the API is back, the token is good.
    assert.equal((await auth.authenticate('t-reviews')).kind, 'workload');

    // The API server is gone.
    const down = new TokenReviewAuthenticator({ kubeConfig: api.kubeConfig(), pods: () => pods, trustDomain: TRUST_DOMAIN, trustedNodeAccounts: [], log });
    await api.close();
    await unavailable(down, 't-reviews', /TokenReview failed: .*ECONNREFUSED/);
    api = await FakeApiServer.start();
  });

  it('made-up tokens cannot flood the API server: new tokens are reviewed at a bounded rate', async () => {
    const auth = authenticator({ reviewsPerSecond: 5 });
    const before = reviews(api);
    const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => auth.authenticate(`made-up-${i}`)));
    const limited = results.filter((r) => r.status === 'rejected' && r.reason instanceof AuthenticationUnavailableError).length;
    assert.ok(reviews(api) - before <= 10, `at most the burst reached the API (${reviews(api) - before})`);
    assert.ok(limited >= 20, `the rest were refused as unavailable (${limited})`);
  });

  it('reuses an accepted review for the cache lifetime, re-checking the pod each time', async () => {
    const auth = authenticator({ cacheTtlMs: 300 });
    api.tokens.set('t-reviews', token('apps', 'reviews', { pod: 'reviews-1' }));
    api.tokens.set('t-zt-a', token('istio-system', 'ztunnel', { pod: 'ztunnel-a' }));
    const first = await auth.authenticate('t-reviews');
    assert.deepEqual(await auth.authenticate('t-reviews'), first);
    assert.equal(reviews(api), 1, 'the second call made no request');

    // Concurrent calls with one token share one review; another token has its own.
    await Promise.all([auth.authenticate('t-zt-a'), auth.authenticate('t-zt-a'), auth.authenticate('t-zt-a')]);
    assert.equal(reviews(api), 2);

    // The pod is checked against the current view, cached review or not.
    const before = pods;
    pods = pods.filter((p) => p.metadata.name !== 'reviews-1');
    await refused(auth, 't-reviews', /reviews-1, which does not exist/);
    pods = before;
    assert.equal(reviews(api), 2);

    // Refusals are not cached; the review expires after its lifetime.
    await refused(auth, 'unknown', /not authenticated/);
    await refused(auth, 'unknown', /not authenticated/);
    assert.equal(reviews(api), 4);
    await new Promise((r) => setTimeout(r, 350));
    await auth.authenticate('t-reviews');
    assert.equal(reviews(api), 5);
  });

  it('keeps at most cacheSize reviews, dropping the oldest, and never past the token\'s exp', async () => {
    const auth = authenticator({ cacheSize: 2 });
    for (const name of ['t1', 't2', 't3']) api.tokens.set(name, token('apps', 'reviews', { pod: 'reviews-1' }));
    await auth.authenticate('t1');
    await auth.authenticate('t2');
    await auth.authenticate('t3');
    assert.equal(reviews(api), 3);
    await auth.authenticate('t3');
    await auth.authenticate('t2');
    assert.equal(reviews(api), 3, 't2 and t3 are cached');
    await auth.authenticate('t1');
    assert.equal(reviews(api), 4, 't1 was evicted');

    // A JWT whose exp has passed (by the control plane's clock) is reviewed every time.
    const claims = Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) - 1 })).toString('base64url');
    const expired = `eyJhbGciOiJSUzI1NiJ9.${claims}.c2ln`;
    api.tokens.set(expired, token('apps', 'reviews', { pod: 'reviews-1' }));
    await auth.authenticate(expired);
    await auth.authenticate(expired);
    assert.equal(reviews(api), 6);
  });

  it('works with a cluster-wide KubernetesSource as its pod view', async () => {
    api.upsert(NAMESPACES, { metadata: { name: 'istio-system' } });
    api.upsert(PODS, { metadata: { name: 'ztunnel-x', namespace: 'istio-system', uid: 'uid-x' }, spec: { nodeName: 'node-x', serviceAccountName: 'ztunnel', containers: [{ name: 'z' }] } });
    const source = new KubernetesSource({ kubeConfig: api.kubeConfig(), log });
    try {
      await source.start();
      const auth = authenticator({ pods: () => source.current().pods });
      api.tokens.set('t-x', token('istio-system', 'ztunnel', { pod: 'ztunnel-x', uid: 'uid-x' }));
      assert.deepEqual(await auth.authenticate('t-x'), { kind: 'node', identity: { trustDomain: TRUST_DOMAIN, namespace: 'istio-system', serviceAccount: 'ztunnel' }, node: 'node-x' });
    } finally {
      await source.close();
    }
  });

  it('refuses bad configuration', () => {
    assert.throws(() => authenticator({ trustedNodeAccounts: ['ztunnel'] }), { name: 'ConfigError', message: /'ztunnel' must be <namespace>\/<service account>/ });
    assert.throws(() => authenticator({ trustDomain: 'Not A Domain' }), { name: 'ConfigError', message: /trust domain 'Not A Domain'/ });
  });
});
