// Which identity a caller may get a certificate for: its own; or, for a node caller, the identity
// of a service account that has a running pod on that node (Istio's node authorizer for ztunnel).
import { parseIdentity, identityUri, sameIdentity, DEFAULT_SERVICE_ACCOUNT, type Identity } from '../../mesh/identity/spiffe.js';
import type { Pod } from '../../mesh/k8s/types.js';
import { isFinished } from '../../mesh/k8s/pods.js';
import { AuthorizationError, type Caller } from './types.js';

export function authorizedIdentity(caller: Caller, impersonate: string | undefined, pods: readonly Pod[], trustDomain: string): Identity {
  if (caller.identity.trustDomain !== trustDomain) {
    throw new AuthorizationError(`caller ${identityUri(caller.identity)} is not in this CA's trust domain ${trustDomain}`);
  }
  if (impersonate === undefined) return caller.identity;
  const wanted = parseIdentity(impersonate);
  if (sameIdentity(wanted, caller.identity)) return wanted;
  if (wanted.trustDomain !== trustDomain) throw new AuthorizationError(`${impersonate}: trust domain ${wanted.trustDomain} is not this CA's (${trustDomain})`);
  if (caller.kind !== 'node') {
    throw new AuthorizationError(`${identityUri(caller.identity)} may not ask for ${impersonate}: only node agents may ask for other identities`);
  }
  const runsThere = pods.some(
    (p) =>
      p.spec.nodeName === caller.node &&
      (p.metadata.namespace ?? 'default') === wanted.namespace &&
      (p.spec.serviceAccountName || DEFAULT_SERVICE_ACCOUNT) === wanted.serviceAccount &&
      !isFinished(p),
  );
  if (!runsThere) {
    throw new AuthorizationError(`no running pod of service account ${wanted.namespace}/${wanted.serviceAccount} is on node ${caller.node}, so its agent may not hold ${impersonate}`);
  }
  return wanted;
}
