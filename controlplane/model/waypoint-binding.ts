// Which waypoint a Service's or Pod's traffic goes through: label istio.io/use-waypoint on the
// object, else on its namespace (istiod's fetchWaypointForTarget, pilot/pkg/serviceregistry/kube/
// controller/ambient/waypoints.go), checked against the Gateway's istio.io/waypoint-for and the
// namespaces its HBONE listener admits.
//
// Where istiod sends no waypoint because the named Gateway does not exist (or is not a waypoint),
// or because the waypoint refuses the object (its istio.io/waypoint-for does not take this kind of
// traffic, or its HBONE listener does not admit the object's namespace), traffic silently skips L7
// policy. Ambit fails closed instead: the binding keeps the waypoint's hostname address but no
// Gateway (`gateway` undefined, `unusable` says why), so the Waypoint resource does not list the
// object as served and ztunnel cannot reach the destination around the waypoint; the user gets an
// error naming the object, the label and the reason.
// Still "no waypoint", as in Istio: the explicit opt-out `istio.io/use-waypoint: none`, a waypoint
// with `istio.io/waypoint-for: none`, and a waypoint-for mismatch with a label inherited from the
// namespace (a `service` waypoint named by the namespace is meant to leave its pods alone, and a
// `workload` one its services: their pods are bound, so nothing goes around the waypoint).

import { GatewayAddress } from '../../proto/gen/istio/workload/workload.js';
import type { Gateway, Namespace, Pod, Service } from '../../mesh/k8s/types.js';
import {
  USE_WAYPOINT_LABEL,
  USE_WAYPOINT_NAMESPACE_LABEL,
  WAYPOINT_FOR_LABEL,
  WAYPOINT_GATEWAY_CLASS,
} from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { ipBytes } from '../../mesh/ip-text.js';
import { arr, isDns1123Label, isRecord, labelsOf, namespaceOf, objectRef, portNumber, show, str, type Labels } from './labels.js';
import { perObject } from './memo.js';
import type { Translation } from './translation.js';
import type { ObjectRef, Problem } from './types.js';

/** Set by istiod (and Ambit's chart) on the Deployment, Service and Pods it runs for a Gateway. */
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
/** istiod's marker on the Service it generates for a waypoint. */
export const GATEWAY_MANAGED_LABEL = 'gateway.istio.io/managed';
export const GATEWAY_MANAGED_MESH = 'istio.io-mesh-controller';
export const DEFAULT_HBONE_PORT = 15008;
export const NONE = 'none';

export type TrafficType = 'service' | 'workload' | 'all' | 'none';
const TRAFFIC_TYPES: ReadonlySet<string> = new Set(['service', 'workload', 'all', 'none']);

/** A service's or pod's binding to a waypoint, as `<namespace>/<name>` of the Gateway and its address. */
export interface WaypointBinding {
  /** `<namespace>/<gateway name>`. */
  key: string;
  address: GatewayAddress;
  /**
   * The waypoint Gateway; undefined when the label names one that does not exist, is not a
   * waypoint, or refuses the object, and Ambit fails closed (the address is then the hostname form).
   */
  gateway?: Gateway | undefined;
  /** Why there is no usable gateway, completing "waypoint <key> ..." (`does not exist`); set exactly when `gateway` is not. */
  unusable?: string;
}

/** A Gateway of class istio-waypoint: the only kind a use-waypoint label can bind to. */
export function isWaypointGateway(gateway: Gateway | undefined): boolean {
  return gateway !== undefined && isRecord(gateway.spec) && gateway.spec.gatewayClassName === WAYPOINT_GATEWAY_CLASS;
}

/**
 * The gateway's istio.io/waypoint-for (`service` when unset, as istiod); undefined for a value
 * that is none of service, workload, all, none (istiod then binds nothing to it).
 */
export function waypointTrafficType(gateway: Gateway): TrafficType | undefined {
  const value = labelsOf(gateway).get(WAYPOINT_FOR_LABEL);
  if (value === undefined) return 'service';
  return TRAFFIC_TYPES.has(value) ? (value as TrafficType) : undefined;
}

/**
 * The port the waypoint takes HBONE on: 15008 when it has an HBONE listener on 15008 (the listener
 * istiod treats as the waypoint's, and the one admitsNamespace reads), else the first HBONE
 * listener's port, else 15008. (istiod always sends 15008 as hbone_mtls_port; Ambit follows the
 * Gateway when its only HBONE listener is elsewhere.)
 */
export function hbonePort(gateway: Gateway): number {
  let first: number | undefined;
  for (const listener of arr(isRecord(gateway.spec) ? gateway.spec.listeners : undefined)) {
    if (!isRecord(listener) || listener.protocol !== 'HBONE') continue;
    const port = portNumber(listener.port);
    if (port === DEFAULT_HBONE_PORT) return port;
    if (port !== undefined && first === undefined) first = port;
  }
  return first ?? DEFAULT_HBONE_PORT;
}

export function waypointHostname(name: string, namespace: string, ctx: ModelContext): string {
  return `${name}.${namespace}.svc.${ctx.opts.domainSuffix}`;
}

/**
 * The address ztunnel sends the waypoint's traffic to. As istiod: a Hostname in the Gateway's
 * status.addresses first, else an IPAddress there; Ambit adds the service hostname istiod's
 * deployment controller would give it when the status has neither (no controller wrote it yet).
 */
export function waypointAddress(gateway: Gateway, ctx: ModelContext): GatewayAddress {
  const namespace = namespaceOf(gateway);
  const port = hbonePort(gateway);
  const addresses = arr(isRecord(gateway.status) ? gateway.status.addresses : undefined).filter(isRecord);
  for (const a of addresses) {
    const value = str(a.value);
    if (a.type === 'Hostname' && value !== undefined && value !== '') {
      return GatewayAddress.fromPartial({ hostname: { namespace, hostname: value }, hboneMtlsPort: port });
    }
  }
  for (const a of addresses) {
    // Gateway API's default address type is IPAddress.
    const bytes = a.type === undefined || a.type === 'IPAddress' ? ipBytes(a.value) : undefined;
    if (bytes) return GatewayAddress.fromPartial({ address: { network: ctx.opts.network, address: bytes }, hboneMtlsPort: port });
  }
  return hostnameAddress(gateway.metadata.name, namespace, port, ctx);
}

function hostnameAddress(name: string, namespace: string, port: number, ctx: ModelContext): GatewayAddress {
  return GatewayAddress.fromPartial({ hostname: { namespace, hostname: waypointHostname(name, namespace, ctx) }, hboneMtlsPort: port });
}

/** The waypoint Gateway this pod or service is part of (label gateway-name naming a waypoint in its namespace). */
export function waypointInstanceOf(obj: Pod | Service, ctx: ModelContext): Gateway | undefined {
  const name = labelsOf(obj).get(GATEWAY_NAME_LABEL);
  if (name === undefined) return undefined;
  const gateway = ctx.gateways.get(`${namespaceOf(obj)}/${name}`);
  return gateway && isWaypointGateway(gateway) ? gateway : undefined;
}

/** The waypoint the service's traffic must go through, if any. Problems are the service's (serviceResource reports them). */
export const serviceWaypoint = perObject((svc: Service, ctx: ModelContext): Translation<WaypointBinding> => {
  // The waypoint's own service: traffic to it must not loop back into it. ExternalName services
  // have no resource to carry a waypoint (istiod builds none for them).
  if (labelsOf(svc).get(GATEWAY_MANAGED_LABEL) === GATEWAY_MANAGED_MESH || waypointInstanceOf(svc, ctx) || (isRecord(svc.spec) && svc.spec.type === 'ExternalName')) {
    return { value: undefined, problems: [] };
  }
  return bind(svc, objectRef('Service', svc), 'service', ctx);
});

/** The waypoint the pod's (workload-addressed) traffic must go through, if any. Problems are the pod's (podWorkload reports them). */
export const podWaypoint = perObject((pod: Pod, ctx: ModelContext): Translation<WaypointBinding> => {
  // A waypoint's own pods never go through a waypoint (istiod: fetchWaypointForInstance first).
  if (waypointInstanceOf(pod, ctx)) return { value: undefined, problems: [] };
  return bind(pod, objectRef('Pod', pod), 'workload', ctx);
});

interface Target {
  name: string;
  namespace: string;
  /** Where the label was: the object itself or its namespace. */
  from: 'object' | 'namespace';
}

/** The use-waypoint label in effect: the object's (whose `none` opts out), else its namespace's. */
function target(obj: Pod | Service, ctx: ModelContext): Target | undefined {
  const namespace = namespaceOf(obj);
  const own = useWaypoint(labelsOf(obj), namespace);
  if (own === NONE) return undefined;
  if (own) return { ...own, from: 'object' };
  const ns: Namespace | undefined = ctx.namespaces.get(namespace);
  const inherited = ns ? useWaypoint(labelsOf(ns), namespace) : undefined;
  if (inherited === undefined || inherited === NONE) return undefined;
  return { ...inherited, from: 'namespace' };
}

function useWaypoint(labels: Labels, defaultNamespace: string): { name: string; namespace: string } | typeof NONE | undefined {
  const name = labels.get(USE_WAYPOINT_LABEL);
  if (name === undefined) return undefined;
  // istiod reserves `none`: a waypoint of that name cannot be used.
  if (name === NONE) return NONE;
  return { name, namespace: labels.get(USE_WAYPOINT_NAMESPACE_LABEL) ?? defaultNamespace };
}

function bind(obj: Pod | Service, ref: ObjectRef, traffic: 'service' | 'workload', ctx: ModelContext): Translation<WaypointBinding> {
  const t = target(obj, ctx);
  if (!t) return { value: undefined, problems: [] };
  const key = `${t.namespace}/${t.name}`;
  // One mistake in a namespace's label is the same for every pod and service there: the
  // services report it (a namespace has few), the pods do not, so that ten thousand pods do not
  // repeat it. The object's own label is always reported.
  const problem = (message: string): Problem[] => {
    if (t.from === 'namespace' && traffic === 'workload') return [];
    const where = t.from === 'object' ? `label ${USE_WAYPOINT_LABEL}=${show(t.name)}` : `label ${USE_WAYPOINT_LABEL}=${show(t.name)} on namespace ${namespaceOf(obj)}`;
    return [{ object: ref, severity: 'error', message: `${where}: ${message}` }];
  };
  // A waypoint never routes through itself, whatever its namespace's label says.
  if (labelsOf(obj).get(GATEWAY_NAME_LABEL) === t.name && namespaceOf(obj) === t.namespace) return { value: undefined, problems: [] };

  const gateway = ctx.gateways.get(key);
  const objectWhat = t.from === 'namespace' ? 'its traffic and that of the namespace\'s pods' : 'its traffic';
  if (!gateway || !isWaypointGateway(gateway)) {
    const what = !isDns1123Label(t.name) || !isDns1123Label(t.namespace)
      ? `${show(key)} is not a valid Gateway name`
      : gateway
        ? `Gateway ${key} is not a waypoint (gatewayClassName ${show(isRecord(gateway.spec) ? gateway.spec.gatewayClassName : undefined)}, want ${WAYPOINT_GATEWAY_CLASS})`
        : `Gateway ${key} does not exist`;
    const unusable = gateway && isDns1123Label(t.name) && isDns1123Label(t.namespace) ? 'is not a waypoint' : 'does not exist';
    return {
      value: { key, address: hostnameAddress(t.name, t.namespace, DEFAULT_HBONE_PORT, ctx), gateway: undefined, unusable },
      problems: problem(`${what}; ${objectWhat} is refused until that waypoint exists (Ambit fails closed where Istio would skip the waypoint)`),
    };
  }
  // The waypoint exists but refuses the object: fail closed as for a missing one (istiod binds
  // nothing, and traffic silently skips the waypoint's policies).
  const refused = (why: string): Translation<WaypointBinding> => ({
    value: { key, address: hostnameAddress(t.name, t.namespace, hbonePort(gateway), ctx), gateway: undefined, unusable: why },
    problems: problem(`waypoint ${key} ${why}; ${objectWhat} is refused until the label or the waypoint is fixed (Ambit fails closed where Istio would skip the waypoint)`),
  });

  const type = waypointTrafficType(gateway);
  if (type !== 'all' && type !== traffic) {
    // With the namespace's label, a mismatch is how waypoint-for is meant to work (a `service`
    // waypoint leaves the namespace's pods alone; a `workload` one its services, whose pods are
    // bound themselves): no waypoint and no problem, as in Istio. An unknown value is a mistake.
    if (t.from === 'namespace' && type !== undefined) return { value: undefined, problems: [] };
    // waypoint-for none: the waypoint takes nothing, an explicit choice: no waypoint, as in Istio.
    if (type === 'none') {
      return { value: undefined, problems: problem(`waypoint ${key} has ${WAYPOINT_FOR_LABEL}=none and takes no traffic; as in Istio, no waypoint is used, so its L7 policies and routes do not apply`) };
    }
    const kind = traffic === 'service' ? 'service' : 'workload (pod)';
    const label = type === undefined ? `an unknown ${WAYPOINT_FOR_LABEL} value ${show(labelsOf(gateway).get(WAYPOINT_FOR_LABEL))}` : `${WAYPOINT_FOR_LABEL}=${type}`;
    return refused(`has ${label} and does not take ${kind} traffic`);
  }

  if (!admitsNamespace(gateway, namespaceOf(obj), ctx)) {
    return refused(`does not admit namespace ${namespaceOf(obj)} (allowedRoutes.namespaces of its HBONE listener on 15008; Same when unset)`);
  }
  return { value: { key, address: waypointAddress(gateway, ctx), gateway }, problems: [] };
}

/**
 * Istio's attachment rule (makeAllowedRoutes): the listener with protocol HBONE on 15008 decides
 * through allowedRoutes.namespaces (`Same` when unset); a Gateway without one admits only its own
 * namespace.
 */
function admitsNamespace(gateway: Gateway, namespace: string, ctx: ModelContext): boolean {
  if (namespace === namespaceOf(gateway)) return true;
  const listener = arr(isRecord(gateway.spec) ? gateway.spec.listeners : undefined).find(
    (l) => isRecord(l) && l.protocol === 'HBONE' && l.port === DEFAULT_HBONE_PORT,
  );
  const namespaces = isRecord(listener) && isRecord(listener.allowedRoutes) ? listener.allowedRoutes.namespaces : undefined;
  if (!isRecord(namespaces)) return false;
  if (namespaces.from === 'All') return true;
  if (namespaces.from !== 'Selector') return false;
  const ns = ctx.namespaces.get(namespace);
  return labelSelectorMatches(namespaces.selector, ns ? labelsOf(ns) : new Map());
}

/** metav1.LabelSelector semantics; a malformed selector matches nothing. */
export function labelSelectorMatches(selector: unknown, labels: Labels): boolean {
  if (!isRecord(selector)) return false;
  if (selector.matchLabels !== undefined) {
    if (!isRecord(selector.matchLabels)) return false;
    for (const [k, v] of Object.entries(selector.matchLabels)) if (typeof v !== 'string' || labels.get(k) !== v) return false;
  }
  if (selector.matchExpressions !== undefined) {
    if (!Array.isArray(selector.matchExpressions)) return false;
    for (const e of selector.matchExpressions) {
      if (!isRecord(e) || typeof e.key !== 'string') return false;
      const values = Array.isArray(e.values) && e.values.every((v) => typeof v === 'string') ? (e.values as string[]) : undefined;
      const value = labels.get(e.key);
      switch (e.operator) {
        case 'In':
          if (!values || values.length === 0 || value === undefined || !values.includes(value)) return false;
          break;
        case 'NotIn':
          if (!values || values.length === 0 || (value !== undefined && values.includes(value))) return false;
          break;
        case 'Exists':
          if (value === undefined) return false;
          break;
        case 'DoesNotExist':
          if (value !== undefined) return false;
          break;
        default:
          return false;
      }
    }
  }
  return true;
}
