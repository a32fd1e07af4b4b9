// The model's resources as JSON for people: the golden files, the control plane's debug endpoint
// and the CLI. Protobuf JSON, except that addresses are shown as IP text instead of base64.

import { Address, Workload, Service as WorkloadService } from '../../proto/gen/istio/workload/workload.js';
import { Authorization } from '../../proto/gen/istio/security/authorization.js';
import { Waypoint } from '../../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import type { ModelSnapshot } from './types.js';
import { ipText } from '../../mesh/ip-text.js';

export { ipText };

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Replaces the base64 of `address`/`addresses` bytes fields in protobuf JSON with IP text. */
function withIpText(value: unknown, key = ''): Json {
  if (Array.isArray(value)) return value.map((v) => withIpText(v, key));
  if (typeof value === 'string' && (key === 'address' || key === 'addresses')) {
    return ipText(Buffer.from(value, 'base64'));
  }
  if (value !== null && typeof value === 'object') {
    const out: { [key: string]: Json } = {};
    for (const [k, v] of Object.entries(value)) out[k] = withIpText(v, k);
    return out;
  }
  return value as Json;
}

export function workloadJson(w: Workload): Json {
  return withIpText(Workload.toJSON(w));
}

export function serviceJson(s: WorkloadService): Json {
  return withIpText(WorkloadService.toJSON(s));
}

export function addressJson(a: Address): Json {
  return withIpText(Address.toJSON(a));
}

export function authorizationJson(a: Authorization): Json {
  return withIpText(Authorization.toJSON(a));
}

export function waypointJson(w: Waypoint): Json {
  return Waypoint.toJSON(w) as Json;
}

function sortedObject<T>(map: ReadonlyMap<string, T>, render: (value: T) => Json): { [key: string]: Json } {
  const out: { [key: string]: Json } = {};
  for (const key of [...map.keys()].sort()) out[key] = render(map.get(key)!);
  return out;
}

/** The whole snapshot, keys sorted: stable text for golden files and diffs. */
export function snapshotJson(snapshot: ModelSnapshot): Json {
  return {
    workloads: sortedObject(snapshot.workloads, workloadJson),
    services: sortedObject(snapshot.services, serviceJson),
    authorizations: sortedObject(snapshot.authorizations, authorizationJson),
    waypoints: sortedObject(snapshot.waypoints, waypointJson),
    policyStatus: sortedObject(snapshot.policyStatus, (s) => s as unknown as Json),
    problems: snapshot.problems
      .map((p) => ({ object: `${p.object.kind} ${p.object.namespace ? `${p.object.namespace}/` : ''}${p.object.name}`, severity: p.severity, message: p.message }))
      .sort((a, b) => (a.object + a.message < b.object + b.message ? -1 : 1)),
  };
}
