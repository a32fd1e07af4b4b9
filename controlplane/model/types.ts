// What the model produces from a cluster view, and the options that shape it. The resources are
// the generated protobuf message types, so what the golden tests see is what goes on the wire.

import type { Workload, Service as WorkloadService } from '../../proto/gen/istio/workload/workload.js';
import type { Authorization } from '../../proto/gen/istio/security/authorization.js';
import type { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { StatusCondition } from '../../mesh/k8s/types.js';
import { DEFAULT_TRUST_DOMAIN } from '../../mesh/identity/spiffe.js';

export interface ModelOptions {
  /** Istio's cluster ID; the first part of every pod Workload uid. Istio's default is `Kubernetes`. */
  clusterId: string;
  trustDomain: string;
  /** Policies here without a selector are mesh-wide (GLOBAL); istiod's default `istio-system`. */
  rootNamespace: string;
  /** Service hostnames are `<name>.<namespace>.svc.<domainSuffix>`. */
  domainSuffix: string;
  /** The network every workload and address is on (Istio's default: empty). */
  network: string;
}

export const DEFAULT_MODEL_OPTIONS: Readonly<ModelOptions> = {
  clusterId: 'Kubernetes',
  trustDomain: DEFAULT_TRUST_DOMAIN,
  rootNamespace: 'istio-system',
  domainSuffix: 'cluster.local',
  network: '',
};

/** An object of the view, named as users name it. */
export interface ObjectRef {
  kind: string;
  namespace?: string;
  name: string;
}

/**
 * Something about one input object the user must hear of: it could not be translated (severity
 * `error`: the object, or the part named, is left out or fails closed) or it was translated with a
 * caveat (`warning`). Problems go to the log, the object's status where it has one, and the CLI.
 */
export interface Problem {
  object: ObjectRef;
  severity: 'error' | 'warning';
  message: string;
}

/** Where an AuthorizationPolicy is enforced and what was lost on the way: the answer to "which component enforces this?". */
export interface PolicyStatus {
  namespace: string;
  name: string;
  /** `ztunnel` and/or `waypoint <namespace>/<name>` for each waypoint that enforces it; empty: enforced nowhere. */
  enforcedBy: string[];
  /** Attributes removed from the ztunnel translation (e.g. `methods`, `when request.headers[x-user]`). */
  dropped: string[];
  /** One line for humans: what the policy does in the data path now. */
  summary: string;
  /** As Istio writes them to status.conditions: `ZtunnelAccepted` and/or `WaypointAccepted`. */
  conditions: StatusCondition[];
}

/** The resources of one model computation, keyed by their xDS resource names. */
export interface ModelSnapshot {
  /** `type.googleapis.com/istio.workload.Address` resources: workloads by uid. */
  workloads: ReadonlyMap<string, Workload>;
  /** ... and services by `<namespace>/<hostname>`. */
  services: ReadonlyMap<string, WorkloadService>;
  /** By `<namespace>/<name>`. */
  authorizations: ReadonlyMap<string, Authorization>;
  /** By `<namespace>/<gateway name>`. */
  waypoints: ReadonlyMap<string, Waypoint>;
  /** By `<namespace>/<name>` of each AuthorizationPolicy. */
  policyStatus: ReadonlyMap<string, PolicyStatus>;
  problems: readonly Problem[];
}
