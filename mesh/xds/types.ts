// The resource types the control plane serves over delta ADS (istio-ambient-spec.md §4.1).

/** Workloads and services, ztunnel's "WDS". */
export const ADDRESS_TYPE = 'type.googleapis.com/istio.workload.Address';
/** L4 policies, ztunnel's "WADS". */
export const AUTHORIZATION_TYPE = 'type.googleapis.com/istio.security.Authorization';
/** Ambit's own: what one waypoint proxy serves and enforces (proto/ambit/waypoint/v1alpha1). */
export const WAYPOINT_TYPE = 'type.ambit.dev/ambit.waypoint.v1alpha1.Waypoint';

export const SERVED_TYPES: readonly string[] = [ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_TYPE];

/** The wildcard subscription name. */
export const WILDCARD = '*';
