import type { NodeView } from '../../mesh/config/source.js';
import { isFinished } from '../../mesh/k8s/pods.js';
import { isEnrolled } from '../../mesh/enrollment.js';
import { DEFAULT_SERVICE_ACCOUNT, type Identity } from '../../mesh/identity/spiffe.js';

/** The identities a node's ztunnel must hold: one per service account of its enrolled, running pods. */
export function nodeIdentities(view: NodeView, trustDomain: string): Identity[] {
  const out = new Map<string, Identity>();
  for (const pod of view.pods) {
    if (!pod.status?.podIP || pod.spec.hostNetwork || isFinished(pod)) continue;
    const namespace = pod.metadata.namespace ?? 'default';
    if (!isEnrolled(pod, view.namespaces.get(namespace))) continue;
    const serviceAccount = pod.spec.serviceAccountName || DEFAULT_SERVICE_ACCOUNT;
    out.set(`${namespace}/${serviceAccount}`, { trustDomain, namespace, serviceAccount });
  }
  return [...out.values()];
}
