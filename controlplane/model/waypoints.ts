// Waypoint binding (istio.io/use-waypoint, in waypoint-binding.ts) and Ambit's Waypoint resource
// per waypoint Gateway: what one waypoint proxy serves, with the routes and policies it runs.
import { Route, ServicePort, Waypoint, WaypointService } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { Gateway, Pod, Service } from '../../mesh/k8s/types.js';
import { WAYPOINT_FOR_LABEL } from '../../mesh/k8s/types.js';
import { waypointPolicies } from './authorization.js';
import type { ModelContext } from './context.js';
import { annotationsOf, arr, isRecord, labelsOf, namespaceOf, objectRef, show, str } from './labels.js';
import { perView } from './memo.js';
import { isWorkloadPod } from './pods.js';
import { servicePorts } from './ports.js';
import { compareRoutes, parentPort, routeParentsByService, translateRoute, type AnyRoute } from './routes.js';
import { isExternalName, serviceHostname } from './selection.js';
import type { Translation } from './translation.js';
import type { Problem } from './types.js';
import { GATEWAY_NAME_LABEL, hbonePort, isWaypointGateway, podWaypoint, serviceWaypoint, waypointTrafficType } from './waypoint-binding.js';
import { podUid } from './workloads.js';

export { podWaypoint, serviceWaypoint, type WaypointBinding } from './waypoint-binding.js';

/** Overrides the service account istiod's deployment controller gives a Gateway's pods (its name). */
export const GATEWAY_SERVICE_ACCOUNT_ANNOTATION = 'gateway.istio.io/service-account';

interface Members {
  services: Service[];
  pods: Pod[];
}

/** Services and pods bound to each waypoint, by `<namespace>/<name>`: one pass over the view per computation. */
const waypointMembers = perView((ctx: ModelContext): ReadonlyMap<string, Members> => {
  const out = new Map<string, Members>();
  const members = (key: string): Members => {
    let m = out.get(key);
    if (!m) out.set(key, (m = { services: [], pods: [] }));
    return m;
  };
  for (const svc of ctx.view.services) {
    if (isExternalName(svc)) continue;
    const binding = serviceWaypoint(svc, ctx).value;
    if (binding?.gateway) members(binding.key).services.push(svc);
  }
  for (const pod of ctx.view.pods) {
    if (!isWorkloadPod(pod, ctx)) continue;
    const binding = podWaypoint(pod, ctx).value;
    if (binding?.gateway) members(binding.key).pods.push(pod);
  }
  return out;
});

/** The attachments (route, port) of a service that a waypoint runs: same-namespace routes naming a port it has. */
function serviceRoutes(svc: Service, ctx: ModelContext): { route: AnyRoute; port: number }[] {
  const parents = routeParentsByService(ctx).get(`${namespaceOf(svc)}/${svc.metadata.name}`) ?? [];
  const out: { route: AnyRoute; port: number }[] = [];
  for (const parent of parents) {
    if (parent.invalid || namespaceOf(parent.route) !== namespaceOf(svc)) continue;
    const { port } = parentPort(parent, svc);
    if (port === undefined || out.some((o) => o.route === parent.route && o.port === port)) continue;
    out.push({ route: parent.route, port });
  }
  return out.sort((a, b) => compareRoutes(a.route, b.route) || a.port - b.port);
}

/**
 * The waypoint that reports a route's problems: the first (by key) of the waypoints running it,
 * so a route attached to services of two waypoints is reported once.
 */
const routeReporters = perView((ctx: ModelContext): ReadonlyMap<AnyRoute, string> => {
  const out = new Map<AnyRoute, string>();
  for (const [key, members] of [...waypointMembers(ctx)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    for (const svc of members.services) for (const { route } of serviceRoutes(svc, ctx)) if (!out.has(route)) out.set(route, key);
  }
  return out;
});

/** Ambit's Waypoint resource for a Gateway of class istio-waypoint; no value for other classes. */
export function waypointResource(gateway: Gateway, ctx: ModelContext): Translation<Waypoint> {
  if (!isWaypointGateway(gateway)) return { value: undefined, problems: [] };
  const key = `${namespaceOf(gateway)}/${gateway.metadata.name}`;
  const problems: Problem[] = [];
  const warnings: string[] = [];

  let trafficType = waypointTrafficType(gateway);
  if (trafficType === undefined) {
    const message = `metadata.labels[${WAYPOINT_FOR_LABEL}]: ${show(labelsOf(gateway).get(WAYPOINT_FOR_LABEL))} is not service, workload, all or none; no traffic is bound to this waypoint`;
    problems.push({ object: objectRef('Gateway', gateway), severity: 'error', message });
    warnings.push(message);
    trafficType = 'none';
  }

  const members = waypointMembers(ctx).get(key) ?? { services: [], pods: [] };
  const reporters = routeReporters(ctx);
  const reported = new Set<AnyRoute>();
  const services = [...members.services].sort((a, b) => compareKeys(`${namespaceOf(a)}/${a.metadata.name}`, `${namespaceOf(b)}/${b.metadata.name}`)).map((svc) => {
    const routes: Route[] = [];
    for (const { route, port } of serviceRoutes(svc, ctx)) {
      const translated = translateRoute(route, ctx);
      if (!reported.has(route)) {
        reported.add(route);
        warnings.push(...translated.warnings);
        if (reporters.get(route) === key) problems.push(...translated.problems);
      }
      if (translated.leftOut) continue;
      const r = Route.fromPartial({ kind: route.kind === 'GRPCRoute' ? 'GRPCRoute' : 'HTTPRoute', name: route.metadata.name, namespace: namespaceOf(route), port });
      // Shared with every waypoint running the route; fromPartial would copy them each time.
      r.rules = translated.rules;
      r.hostnames = translated.hostnames;
      routes.push(r);
    }
    return waypointService(svc, routes, ctx);
  });

  const policies = waypointPolicies(gateway, services.map((s) => s.hostname), ctx);
  problems.push(...policies.problems);
  for (const p of policies.problems) warnings.push(`${p.object.kind} ${p.object.namespace ? `${p.object.namespace}/` : ''}${p.object.name}: ${p.message}`);

  const waypoint = Waypoint.fromPartial({ name: gateway.metadata.name, namespace: namespaceOf(gateway), trafficType, hbonePort: hbonePort(gateway) });
  waypoint.identities = identities(gateway, ctx);
  waypoint.services = services;
  waypoint.workloads = members.pods.map((p) => podUid(p, ctx)).sort();
  waypoint.policies = policies.policies;
  waypoint.warnings = warnings;
  return { value: waypoint, problems };
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function waypointService(svc: Service, routes: Route[], ctx: ModelContext): WaypointService {
  const spec: Record<string, unknown> = isRecord(svc.spec) ? svc.spec : {};
  const ips = arr(spec.clusterIPs).length > 0 ? arr(spec.clusterIPs) : [spec.clusterIP];
  const out = WaypointService.fromPartial({ name: svc.metadata.name, namespace: namespaceOf(svc), hostname: serviceHostname(svc, ctx) });
  // Text as given; serviceResource reports any that is not an address.
  out.addresses = ips.filter((ip): ip is string => typeof ip === 'string' && ip !== '' && ip !== 'None');
  out.ports = servicePorts(svc).ports.map((p) =>
    ServicePort.fromPartial({ port: p.port, targetPort: p.targetPort, targetPortName: p.targetPortName, protocol: p.protocolName, name: p.name }),
  );
  out.routes = routes;
  return out;
}

/**
 * The SPIFFE identities (without spiffe://) the waypoint's pods present: the service account
 * istiod's deployment controller gives them (named after the Gateway, or annotation
 * gateway.istio.io/service-account) and those of the pods the view shows running it.
 */
function identities(gateway: Gateway, ctx: ModelContext): string[] {
  const namespace = namespaceOf(gateway);
  const accounts = new Set<string>([annotationsOf(gateway).get(GATEWAY_SERVICE_ACCOUNT_ANNOTATION) || gateway.metadata.name]);
  for (const pod of ctx.podsByNamespace.get(namespace) ?? []) {
    if (labelsOf(pod).get(GATEWAY_NAME_LABEL) !== gateway.metadata.name || !isWorkloadPod(pod, ctx)) continue;
    const spec: Record<string, unknown> = isRecord(pod.spec) ? pod.spec : {};
    accounts.add(str(spec.serviceAccountName) || 'default');
  }
  return [...accounts].sort().map((sa) => `${ctx.opts.trustDomain}/ns/${namespace}/sa/${sa}`);
}
