// The indexes every translation function reads, built once per model computation from a view.
// Building them is linear in the view; the translations then stay proportional to their object.

import type { ClusterView } from '../../mesh/config/view.js';
import { keyOf } from '../../mesh/config/view.js';
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
} from '../../mesh/k8s/types.js';
import { SERVICE_NAME_LABEL } from '../../mesh/k8s/types.js';
import type { ModelOptions } from './types.js';

export interface ModelContext {
  readonly opts: ModelOptions;
  readonly view: ClusterView;
  readonly namespaces: ReadonlyMap<string, Namespace>;
  readonly podsByNamespace: ReadonlyMap<string, readonly Pod[]>;
  /** Every address of every pod that has one (status.podIPs, else status.podIP). */
  readonly podsByIp: ReadonlyMap<string, Pod>;
  readonly servicesByNamespace: ReadonlyMap<string, readonly Service[]>;
  /** By `<namespace>/<name>`. */
  readonly services: ReadonlyMap<string, Service>;
  /** By `<namespace>/<service name>` (label kubernetes.io/service-name). */
  readonly endpointSlicesByService: ReadonlyMap<string, readonly EndpointSlice[]>;
  /** By `<namespace>/<name>`. */
  readonly gateways: ReadonlyMap<string, Gateway>;
  readonly policiesByNamespace: ReadonlyMap<string, readonly AuthorizationPolicy[]>;
  readonly peerAuthenticationsByNamespace: ReadonlyMap<string, readonly PeerAuthentication[]>;
  readonly httpRoutesByNamespace: ReadonlyMap<string, readonly HTTPRoute[]>;
  readonly grpcRoutesByNamespace: ReadonlyMap<string, readonly GRPCRoute[]>;
}

export function buildContext(view: ClusterView, opts: ModelOptions): ModelContext {
  const podsByIp = new Map<string, Pod>();
  for (const pod of view.pods) {
    for (const ip of podAddresses(pod)) podsByIp.set(ip, pod);
  }
  const endpointSlicesByService = new Map<string, EndpointSlice[]>();
  for (const slice of view.endpointSlices) {
    const service = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (typeof service !== 'string') continue;
    push(endpointSlicesByService, `${slice.metadata.namespace ?? 'default'}/${service}`, slice);
  }
  return {
    opts,
    view,
    namespaces: view.namespaces,
    podsByNamespace: groupByNamespace(view.pods),
    podsByIp,
    servicesByNamespace: groupByNamespace(view.services),
    services: new Map(view.services.map((s) => [keyOf(s), s])),
    endpointSlicesByService,
    gateways: new Map(view.gateways.map((g) => [keyOf(g), g])),
    policiesByNamespace: groupByNamespace(view.authorizationPolicies),
    peerAuthenticationsByNamespace: groupByNamespace(view.peerAuthentications),
    httpRoutesByNamespace: groupByNamespace(view.httpRoutes),
    grpcRoutesByNamespace: groupByNamespace(view.grpcRoutes),
  };
}

/** The pod's IPs as text, deduplicated, primary first; empty when it has none yet. */
export function podAddresses(pod: Pod): string[] {
  const out: string[] = [];
  const add = (ip: unknown): void => {
    if (typeof ip === 'string' && ip !== '' && !out.includes(ip)) out.push(ip);
  };
  add(pod.status?.podIP);
  if (Array.isArray(pod.status?.podIPs)) for (const entry of pod.status.podIPs) add(entry?.ip);
  return out;
}

function groupByNamespace<T extends { metadata: { namespace?: string } }>(list: readonly T[]): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const obj of list) push(out, obj.metadata.namespace ?? 'default', obj);
  return out;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}
