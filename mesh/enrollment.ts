// Which pods the mesh captures, by Istio ambient's rules (istio-ambient-spec.md §5): the CNI's
// default enablement selectors, plus the pods it never touches. Users move between Istio and Ambit
// with the same labels, so the rules must be Istio's exactly, including the order they apply in.

import {
  DATAPLANE_MODE_AMBIENT,
  DATAPLANE_MODE_LABEL,
  DATAPLANE_MODE_NONE,
  type Namespace,
  type Pod,
} from './k8s/types.js';

/** Set by Istio's sidecar injector on every injected pod. */
export const SIDECAR_STATUS_ANNOTATION = 'sidecar.istio.io/status';
export const SIDECAR_CONTAINER_NAME = 'istio-proxy';
export const SYSTEM_NAMESPACE = 'kube-system';

export interface Enrollment {
  enrolled: boolean;
  /** A short phrase for status output: why the pod is, or is not, captured. */
  reason: string;
}

/**
 * `namespace` is the pod's own namespace object, or undefined when it is unknown (e.g. `default`
 * was never declared), in which case only the pod's labels count.
 */
export function enrollment(pod: Pod, namespace: Namespace | undefined): Enrollment {
  const nsName = pod.metadata.namespace ?? 'default';
  // Exclusions first: no label can enroll these (a second proxy or the host's own traffic would
  // be captured).
  if (pod.spec.hostNetwork === true) return { enrolled: false, reason: 'hostNetwork pods are never captured' };
  if (nsName === SYSTEM_NAMESPACE) return { enrolled: false, reason: `pods in ${SYSTEM_NAMESPACE} are never captured` };
  if (hasSidecar(pod)) return { enrolled: false, reason: 'the pod has an Istio sidecar' };

  const podMode = pod.metadata.labels?.[DATAPLANE_MODE_LABEL];
  const nsMode = namespace?.metadata.labels?.[DATAPLANE_MODE_LABEL];
  if (podMode === DATAPLANE_MODE_AMBIENT) return { enrolled: true, reason: `pod label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
  if (podMode === DATAPLANE_MODE_NONE) return { enrolled: false, reason: `opted out by pod label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_NONE}` };
  if (nsMode === DATAPLANE_MODE_AMBIENT) {
    return { enrolled: true, reason: `namespace ${nsName} label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
  }
  return { enrolled: false, reason: `neither the pod nor namespace ${nsName} has ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
}

export function isEnrolled(pod: Pod, namespace: Namespace | undefined): boolean {
  return enrollment(pod, namespace).enrolled;
}

export function enrollmentReason(pod: Pod, namespace: Namespace | undefined): string {
  return enrollment(pod, namespace).reason;
}

function hasSidecar(pod: Pod): boolean {
  return pod.metadata.annotations?.[SIDECAR_STATUS_ANNOTATION] !== undefined || pod.spec.containers.some((c) => c.name === SIDECAR_CONTAINER_NAME);
}
