// Kubernetes Services as istio.workload.Service (istio-ambient-spec.md §4.2), following istiod's
// pilot/pkg/serviceregistry/kube/controller/ambient/services.go (constructService).
import {
  IPFamilies,
  LoadBalancing,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  NetworkAddress,
  Service as WorkloadService,
} from '../../proto/gen/istio/workload/workload.js';
import type { Service } from '../../mesh/k8s/types.js';
import { INGRESS_USE_WAYPOINT_LABEL } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { ipBytes } from '../../mesh/ip-text.js';
import { annotationsOf, arr, isRecord, labelsOf, namespaceOf, objectRef, show } from './labels.js';
import { servicePorts } from './ports.js';
import { parentPort, routeParentsByService } from './routes.js';
import { isExternalName, serviceHostname, serviceSelector } from './selection.js';
import type { Translation } from './translation.js';
import type { Problem } from './types.js';
import { serviceWaypoint, type WaypointBinding } from './waypoint-binding.js';

export const TRAFFIC_DISTRIBUTION_ANNOTATION = 'networking.istio.io/traffic-distribution';
const PREFER_CLOSE = 'PreferClose';
/** Kubernetes 1.33's name for PreferClose. */
const PREFER_SAME_ZONE = 'PreferSameZone';

/** Prefer endpoints close by, spilling over to farther ones (istiod's preferCloseLoadBalancer). */
function preferClose(): LoadBalancing {
  return LoadBalancing.fromPartial({
    routingPreference: [LoadBalancing_Scope.NETWORK, LoadBalancing_Scope.REGION, LoadBalancing_Scope.ZONE, LoadBalancing_Scope.SUBZONE],
    mode: LoadBalancing_Mode.FAILOVER,
  });
}

/** The service's resource, named `<namespace>/<hostname>`; no value for kinds ztunnel does not route (ExternalName). */
export function serviceResource(svc: Service, ctx: ModelContext): Translation<WorkloadService> {
  const ref = objectRef('Service', svc);
  const problems: Problem[] = [];
  const binding = serviceWaypoint(svc, ctx);
  problems.push(...binding.problems);
  problems.push(...routeAttachmentProblems(svc, binding.value, ctx));
  // istiod builds nothing for ExternalName services: DNS answers them, ztunnel forwards by hostname.
  if (isExternalName(svc)) return { value: undefined, problems };
  if (!isRecord(svc.spec)) {
    problems.push({ object: ref, severity: 'error', message: `spec: ${show(svc.spec)} is not an object; the service is left out` });
    return { value: undefined, problems };
  }
  const spec = svc.spec as unknown as Record<string, unknown>;

  const selector = serviceSelector(svc);
  if (selector.kind === 'invalid') problems.push({ object: ref, severity: 'error', message: `spec.selector: ${selector.reason}; the service selects no pods` });

  const { ports, errors } = servicePorts(svc);
  for (const message of errors) problems.push({ object: ref, severity: 'error', message });

  const out = WorkloadService.fromPartial({
    name: svc.metadata.name,
    namespace: namespaceOf(svc),
    hostname: serviceHostname(svc, ctx),
    addresses: clusterIps(spec, ctx, (message) => problems.push({ object: ref, severity: 'error', message })),
    ports: ports.map((p) => ({ servicePort: p.port, targetPort: p.targetPort, appProtocol: p.appProtocol })),
    ipFamilies: ipFamilies(spec),
  });
  const lb = loadBalancing(svc, spec, ctx);
  if (lb) out.loadBalancing = lb;
  if (binding.value) {
    out.waypoint = binding.value.address;
    out.ingressUseWaypoint = ingressUseWaypoint(svc, ctx);
  }
  return { value: out, problems };
}

/** spec.clusterIPs, else spec.clusterIP; none for headless ("None") services. */
function clusterIps(spec: Record<string, unknown>, ctx: ModelContext, bad: (message: string) => void): NetworkAddress[] {
  const list = arr(spec.clusterIPs);
  const entries = list.length > 0 ? list.map((ip, i) => ({ field: `spec.clusterIPs[${i}]`, ip })) : [{ field: 'spec.clusterIP', ip: spec.clusterIP }];
  const out: NetworkAddress[] = [];
  for (const { field, ip } of entries) {
    if (ip === undefined || ip === '' || ip === 'None') continue;
    const bytes = ipBytes(ip);
    if (!bytes) {
      bad(`${field}: ${show(ip)} is not an IP address; left out`);
      continue;
    }
    out.push(NetworkAddress.fromPartial({ network: ctx.opts.network, address: bytes }));
  }
  return out;
}

function ipFamilies(spec: Record<string, unknown>): IPFamilies {
  const families = arr(spec.ipFamilies);
  if (families.length === 2) return IPFamilies.DUAL;
  if (families.length === 1) return families[0] === 'IPv4' ? IPFamilies.IPV4_ONLY : families[0] === 'IPv6' ? IPFamilies.IPV6_ONLY : IPFamilies.AUTOMATIC;
  return IPFamilies.AUTOMATIC;
}

/**
 * istiod's order: spec.trafficDistribution when set, else the traffic-distribution annotation
 * (Ambit also reads it from the namespace, as Istio documents); internalTrafficPolicy Local
 * overrides both (node-local only); publishNotReadyAddresses admits unhealthy endpoints.
 */
function loadBalancing(svc: Service, spec: Record<string, unknown>, ctx: ModelContext): LoadBalancing | undefined {
  let close: boolean;
  if (typeof spec.trafficDistribution === 'string') {
    close = spec.trafficDistribution === PREFER_CLOSE || spec.trafficDistribution === PREFER_SAME_ZONE;
  } else {
    const ns = ctx.namespaces.get(namespaceOf(svc));
    const annotation = annotationsOf(svc).get(TRAFFIC_DISTRIBUTION_ANNOTATION) ?? (ns ? annotationsOf(ns).get(TRAFFIC_DISTRIBUTION_ANNOTATION) : undefined);
    close = annotation !== undefined && annotation.toLowerCase() === PREFER_CLOSE.toLowerCase();
  }
  let lb = close ? preferClose() : undefined;
  if (spec.internalTrafficPolicy === 'Local') {
    lb = LoadBalancing.fromPartial({ routingPreference: [LoadBalancing_Scope.NODE], mode: LoadBalancing_Mode.STRICT });
  }
  if (spec.publishNotReadyAddresses === true) {
    lb ??= LoadBalancing.fromPartial({});
    lb.healthPolicy = LoadBalancing_HealthPolicy.ALLOW_ALL;
  }
  return lb;
}

/** Label istio.io/ingress-use-waypoint=true on the service, else on its namespace (only meaningful with a waypoint). */
function ingressUseWaypoint(svc: Service, ctx: ModelContext): boolean {
  const ns = ctx.namespaces.get(namespaceOf(svc));
  const value = labelsOf(svc).get(INGRESS_USE_WAYPOINT_LABEL) ?? (ns ? labelsOf(ns).get(INGRESS_USE_WAYPOINT_LABEL) : undefined);
  return value !== undefined && value.toLowerCase() === 'true';
}

/**
 * What is wrong with the routes naming this service as their parent, reported here because it is
 * about the pair: a route in another namespace (a GAMMA consumer route, not supported yet), a
 * parentRef with the wrong group or a port the service lacks, and routes that do nothing because
 * the service has no waypoint. Problems name the route.
 */
function routeAttachmentProblems(svc: Service, binding: WaypointBinding | undefined, ctx: ModelContext): Problem[] {
  const parents = routeParentsByService(ctx).get(`${namespaceOf(svc)}/${svc.metadata.name}`);
  if (!parents) return [];
  const out: Problem[] = [];
  const key = `${namespaceOf(svc)}/${svc.metadata.name}`;
  for (const parent of parents) {
    const object = objectRef(parent.kind, parent.route);
    if (parent.invalid) {
      out.push({ object, severity: 'error', message: parent.invalid });
      continue;
    }
    if (namespaceOf(parent.route) !== namespaceOf(svc)) {
      out.push({ object, severity: 'error', message: `spec.parentRefs[${parent.index}]: service ${key} is in another namespace; consumer routes (GAMMA) are not supported yet, so the route is left out for it` });
      continue;
    }
    if (isExternalName(svc)) {
      out.push({ object, severity: 'warning', message: `spec.parentRefs[${parent.index}]: service ${key} is an ExternalName service, which has no waypoint; the route has no effect` });
      continue;
    }
    const port = parentPort(parent, svc);
    if (port.error) {
      out.push({ object, severity: 'error', message: `${port.error}; the route does not attach to it` });
      continue;
    }
    if (!binding) {
      out.push({ object, severity: 'warning', message: `spec.parentRefs[${parent.index}]: service ${key} has no waypoint (label istio.io/use-waypoint on it or its namespace), so the route has no effect until it has one` });
    } else if (!binding.gateway) {
      out.push({ object, severity: 'warning', message: `spec.parentRefs[${parent.index}]: the waypoint ${binding.key} of service ${key} ${binding.unusable ?? 'cannot serve it'}, so the route has no effect until that is fixed (the service's traffic is refused meanwhile)` });
    }
  }
  return out;
}
