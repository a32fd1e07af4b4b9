// One consistent picture of the cluster objects Ambit reads, as a config source last saw them.
// The node agent uses the namespaces and its node's pods; the control plane uses every kind.
//
// Views are immutable and sources keep the identity of objects that did not change between two
// views (the Kubernetes source by construction, the file source by comparing content), so a
// consumer can find what changed by comparing references instead of contents.

import type {
  AuthorizationPolicy,
  EndpointSlice,
  Gateway,
  GRPCRoute,
  HTTPRoute,
  Namespace,
  PeerAuthentication,
  Pod,
  Service,
} from '../k8s/types.js';

export interface ClusterView {
  /** By name. */
  namespaces: ReadonlyMap<string, Namespace>;
  /** Each list is sorted by `<namespace>/<name>`. A pod without status.podIP is not yet networked. */
  pods: readonly Pod[];
  services: readonly Service[];
  endpointSlices: readonly EndpointSlice[];
  /** security.istio.io v1 and v1beta1 alike. */
  authorizationPolicies: readonly AuthorizationPolicy[];
  peerAuthentications: readonly PeerAuthentication[];
  gateways: readonly Gateway[];
  httpRoutes: readonly HTTPRoute[];
  grpcRoutes: readonly GRPCRoute[];
}

/** The view-list fields, one per namespaced kind. */
export type ViewList = Exclude<keyof ClusterView, 'namespaces'>;

export const VIEW_LISTS: readonly ViewList[] = [
  'pods',
  'services',
  'endpointSlices',
  'authorizationPolicies',
  'peerAuthentications',
  'gateways',
  'httpRoutes',
  'grpcRoutes',
];

export function emptyView(): ClusterView {
  return {
    namespaces: new Map(),
    pods: [],
    services: [],
    endpointSlices: [],
    authorizationPolicies: [],
    peerAuthentications: [],
    gateways: [],
    httpRoutes: [],
    grpcRoutes: [],
  };
}

/** `<namespace>/<name>`: the key of a namespaced object within its kind. */
export function keyOf(obj: { metadata: { name: string; namespace?: string } }): string {
  return `${obj.metadata.namespace ?? 'default'}/${obj.metadata.name}`;
}

export function byKey<T extends { metadata: { name: string; namespace?: string } }>(a: T, b: T): number {
  const ka = keyOf(a);
  const kb = keyOf(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
