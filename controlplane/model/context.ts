// What every translation function reads, for one model computation: the view (through getters
// that record which part was read, see memo.ts), the options, and indexes over the view. The
// indexes are memoized on the lists they are built from, so a computation after a pod change
// rebuilds the pod indexes only.

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
import { perView, registerInputs, track, type Input } from './memo.js';
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

const LISTS: readonly Exclude<keyof ClusterView, 'namespaces'>[] = [
  'pods',
  'services',
  'endpointSlices',
  'authorizationPolicies',
  'peerAuthentications',
  'gateways',
  'httpRoutes',
  'grpcRoutes',
];

/** The view as translations see it: each read is recorded. */
function trackedView(view: ClusterView): ClusterView {
  const out = {} as Record<string, unknown>;
  for (const input of ['namespaces', ...LISTS] as const) {
    Object.defineProperty(out, input, {
      enumerable: true,
      get: () => {
        track(input);
        return view[input];
      },
    });
  }
  return out as unknown as ClusterView;
}

function index<T>(input: Input, build: (ctx: ModelContext) => T): (ctx: ModelContext) => T {
  const memo = perView(build);
  return (ctx) => {
    track(input);
    return memo(ctx);
  };
}

const podsByNamespace = index('pods', (ctx) => groupByNamespace(ctx.view.pods));
const podsByIp = index('pods', (ctx) => {
  const out = new Map<string, Pod>();
  for (const pod of ctx.view.pods) for (const ip of podAddresses(pod)) out.set(ip, pod);
  return out;
});
const servicesByNamespace = index('services', (ctx) => groupByNamespace(ctx.view.services));
const servicesByKey = index('services', (ctx) => new Map(ctx.view.services.map((s) => [keyOf(s), s])));
const endpointSlicesByService = index('endpointSlices', (ctx) => {
  const out = new Map<string, EndpointSlice[]>();
  for (const slice of ctx.view.endpointSlices) {
    const service = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (typeof service !== 'string') continue;
    push(out, `${slice.metadata.namespace ?? 'default'}/${service}`, slice);
  }
  return out;
});
const gatewaysByKey = index('gateways', (ctx) => new Map(ctx.view.gateways.map((g) => [keyOf(g), g])));
const policiesByNamespace = index('authorizationPolicies', (ctx) => groupByNamespace(ctx.view.authorizationPolicies));
const peerAuthenticationsByNamespace = index('peerAuthentications', (ctx) => groupByNamespace(ctx.view.peerAuthentications));
const httpRoutesByNamespace = index('httpRoutes', (ctx) => groupByNamespace(ctx.view.httpRoutes));
const grpcRoutesByNamespace = index('grpcRoutes', (ctx) => groupByNamespace(ctx.view.grpcRoutes));

export function buildContext(view: ClusterView, opts: ModelOptions): ModelContext {
  const tracked = trackedView(view);
  const ctx: ModelContext = {
    get opts() {
      track('opts');
      return opts;
    },
    view: tracked,
    get namespaces() {
      track('namespaces');
      return view.namespaces;
    },
    get podsByNamespace() {
      return podsByNamespace(ctx);
    },
    get podsByIp() {
      return podsByIp(ctx);
    },
    get servicesByNamespace() {
      return servicesByNamespace(ctx);
    },
    get services() {
      return servicesByKey(ctx);
    },
    get endpointSlicesByService() {
      return endpointSlicesByService(ctx);
    },
    get gateways() {
      return gatewaysByKey(ctx);
    },
    get policiesByNamespace() {
      return policiesByNamespace(ctx);
    },
    get peerAuthenticationsByNamespace() {
      return peerAuthenticationsByNamespace(ctx);
    },
    get httpRoutesByNamespace() {
      return httpRoutesByNamespace(ctx);
    },
    get grpcRoutesByNamespace() {
      return grpcRoutesByNamespace(ctx);
    },
  };
  registerInputs(ctx, { view, opts });
  return ctx;
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
