// Waypoint binding (istio.io/use-waypoint) and Ambit's Waypoint resource per waypoint Gateway.
import type { GatewayAddress } from '../../proto/gen/istio/workload/workload.js';
import type { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { Gateway, Pod, Service } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import type { Translation } from './translation.js';

/** A service's or pod's binding to a waypoint, as `<namespace>/<name>` of the Gateway and its address. */
export interface WaypointBinding {
  /** `<namespace>/<gateway name>`. */
  key: string;
  address: GatewayAddress;
}

/** The waypoint the service's traffic must go through, if any. */
export function serviceWaypoint(svc: Service, ctx: ModelContext): Translation<WaypointBinding> {
  void svc; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { value: undefined, problems: [] };
}

/** The waypoint the pod's (workload-addressed) traffic must go through, if any. */
export function podWaypoint(pod: Pod, ctx: ModelContext): Translation<WaypointBinding> {
  void pod; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { value: undefined, problems: [] };
}

/** Ambit's Waypoint resource for a Gateway of class istio-waypoint; no value for other classes. */
export function waypointResource(gateway: Gateway, ctx: ModelContext): Translation<Waypoint> {
  void gateway; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { value: undefined, problems: [] };
}
