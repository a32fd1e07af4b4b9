// The node ztunnel's view of the mesh: one delta xDS stream to the control plane for workloads,
// services and L4 policies (istio-ambient-spec.md §4), validated as ztunnel validates them, kept
// through control plane outages, and rendered for /config_dump in the shape Istio's ztunnel uses.

import { Address, TunnelProtocol, WorkloadStatus, WorkloadType, type Service as WorkloadService, type Workload } from '../../proto/gen/istio/workload/workload.js';
import { Action, Authorization, Scope } from '../../proto/gen/istio/security/authorization.js';
import { XdsClient, type XdsClientStatus } from '../../mesh/xds/client.js';
import { ipText } from '../../mesh/ip-text.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE } from '../../mesh/xds/types.js';
import type { Logger } from '../../mesh/log.js';


export interface ZtunnelDiscoveryOptions {
  address: string;
  rootCert: string;
  token: () => string;
  clusterId: string;
  node: string;
  /** This ztunnel's own address, for the xDS node id (Istio: INSTANCE_IP). */
  instanceIp: string;
  podName: string;
  podNamespace: string;
  log: Logger;
}

function validAddressBytes(a: Uint8Array): boolean {
  return a.length === 4 || a.length === 16;
}

/** Why ztunnel could not use this Address resource, or undefined. */
export function validateAddress(name: string, a: Address): string | undefined {
  if (a.workload && a.service) return 'both a workload and a service';
  if (a.workload) {
    const w = a.workload;
    if (w.uid !== name) return `workload uid ${JSON.stringify(w.uid)} is not the resource name`;
    if (w.addresses.length === 0 && w.hostname === '') return 'a workload needs an address or a hostname';
    if (!w.addresses.every(validAddressBytes)) return 'an address is neither 4 nor 16 bytes';
    return undefined;
  }
  if (a.service) {
    const s = a.service;
    if (`${s.namespace}/${s.hostname}` !== name) return `service ${s.namespace}/${s.hostname} is not the resource name`;
    if (!s.addresses.every((x) => validAddressBytes(x.address))) return 'a VIP is neither 4 nor 16 bytes';
    if (s.ports.some((p) => p.servicePort > 65535 || p.targetPort > 65535)) return 'a port is above 65535';
    return undefined;
  }
  return 'neither a workload nor a service';
}

export function validateAuthorization(name: string, a: Authorization): string | undefined {
  if (`${a.namespace}/${a.name}` !== name) return `policy ${a.namespace}/${a.name} is not the resource name`;
  return undefined;
}

export class ZtunnelDiscovery {
  readonly client: XdsClient;

  constructor(opts: ZtunnelDiscoveryOptions) {
    this.client = new XdsClient({
      address: opts.address,
      rootCert: opts.rootCert,
      token: opts.token,
      clusterId: opts.clusterId,
      // Istio's ztunnel node id and metadata, so an istiod (or any Istio-aware server) knows who asks.
      node: {
        id: `ztunnel~${opts.instanceIp}~${opts.podName}.${opts.podNamespace}~${opts.podNamespace}.svc.cluster.local`,
        cluster: opts.clusterId,
        metadata: { NAME: opts.podName, NAMESPACE: opts.podNamespace, INSTANCE_IPS: opts.instanceIp, NODE_NAME: opts.node, CLUSTER_ID: opts.clusterId },
      },
      types: [
        { typeUrl: ADDRESS_TYPE, decode: (b) => Address.decode(b), validate: (n, v) => validateAddress(n, v as Address) },
        { typeUrl: AUTHORIZATION_TYPE, decode: (b) => Authorization.decode(b), validate: (n, v) => validateAuthorization(n, v as Authorization) },
      ],
      log: opts.log,
    });
  }

  start(): void {
    this.client.start();
  }

  close(): void {
    this.client.close();
  }

  status(): XdsClientStatus {
    return this.client.status();
  }

  workloads(): Workload[] {
    return [...this.client.resources<Address>(ADDRESS_TYPE).values()].flatMap((r) => (r.value.workload ? [r.value.workload] : []));
  }

  services(): WorkloadService[] {
    return [...this.client.resources<Address>(ADDRESS_TYPE).values()].flatMap((r) => (r.value.service ? [r.value.service] : []));
  }

  policies(): Authorization[] {
    return [...this.client.resources<Authorization>(AUTHORIZATION_TYPE).values()].map((r) => r.value);
  }

  /** The config_dump sections, in Istio ztunnel's JSON shape (what istioctl ztunnel-config reads). */
  dump(): { workloads: DumpedWorkload[]; services: DumpedService[]; policies: DumpedPolicy[]; xds: XdsClientStatus } {
    const workloads = this.workloads();
    const endpoints = new Map<string, { total: number; healthy: number }>();
    for (const w of workloads) {
      for (const key of Object.keys(w.services)) {
        const e = endpoints.get(key) ?? { total: 0, healthy: 0 };
        e.total++;
        if (w.status === WorkloadStatus.HEALTHY) e.healthy++;
        endpoints.set(key, e);
      }
    }
    return {
      workloads: workloads.map(dumpWorkload).sort((a, b) => a.uid.localeCompare(b.uid)),
      services: this.services()
        .map((s) => dumpService(s, endpoints.get(`${s.namespace}/${s.hostname}`) ?? { total: 0, healthy: 0 }))
        .sort((a, b) => `${a.namespace}/${a.hostname}`.localeCompare(`${b.namespace}/${b.hostname}`)),
      policies: this.policies().map(dumpPolicy).sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`)),
      xds: this.status(),
    };
  }
}

export interface DumpedWorkload {
  uid: string;
  name: string;
  namespace: string;
  workloadIps: string[];
  protocol: 'HBONE' | 'TCP';
  serviceAccount: string;
  workloadName: string;
  workloadType: string;
  canonicalName: string;
  canonicalRevision: string;
  clusterId: string;
  trustDomain: string;
  node: string;
  network: string;
  status: 'Healthy' | 'Unhealthy';
  waypoint?: string;
  services: Record<string, Record<string, number>>;
  authorizationPolicies: string[];
}

export interface DumpedService {
  name: string;
  namespace: string;
  hostname: string;
  vips: string[];
  ports: Record<string, number>;
  waypoint?: string;
  endpoints: { total: number; healthy: number };
}

export interface DumpedPolicy {
  name: string;
  namespace: string;
  scope: string;
  action: string;
  dryRun: boolean;
  rules: unknown;
}

function gatewayText(g: Workload['waypoint']): string | undefined {
  if (!g) return undefined;
  if (g.hostname) return `${g.hostname.namespace}/${g.hostname.hostname}:${g.hboneMtlsPort}`;
  if (g.address) return `${g.address.network}/${ipText(g.address.address)}:${g.hboneMtlsPort}`;
  return undefined;
}

function dumpWorkload(w: Workload): DumpedWorkload {
  const services: Record<string, Record<string, number>> = {};
  for (const [key, list] of Object.entries(w.services)) services[key] = Object.fromEntries(list.ports.map((p) => [String(p.servicePort), p.targetPort]));
  const out: DumpedWorkload = {
    uid: w.uid,
    name: w.name,
    namespace: w.namespace,
    workloadIps: w.addresses.map(ipText),
    protocol: w.tunnelProtocol === TunnelProtocol.HBONE ? 'HBONE' : 'TCP',
    serviceAccount: w.serviceAccount || 'default',
    workloadName: w.workloadName,
    workloadType: WorkloadType[w.workloadType]?.toLowerCase() ?? 'pod',
    canonicalName: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    clusterId: w.clusterId,
    trustDomain: w.trustDomain || 'cluster.local',
    node: w.node,
    network: w.network,
    status: w.status === WorkloadStatus.HEALTHY ? 'Healthy' : 'Unhealthy',
    services,
    authorizationPolicies: w.authorizationPolicies,
  };
  const waypoint = gatewayText(w.waypoint);
  if (waypoint) out.waypoint = waypoint;
  return out;
}

function dumpService(s: WorkloadService, endpoints: { total: number; healthy: number }): DumpedService {
  const out: DumpedService = {
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    vips: s.addresses.map((a) => `${a.network}/${ipText(a.address)}`),
    ports: Object.fromEntries(s.ports.map((p) => [String(p.servicePort), p.targetPort])),
    endpoints,
  };
  const waypoint = gatewayText(s.waypoint);
  if (waypoint) out.waypoint = waypoint;
  return out;
}

function dumpPolicy(a: Authorization): DumpedPolicy {
  const scope = a.scope === Scope.GLOBAL ? 'Global' : a.scope === Scope.NAMESPACE ? 'Namespace' : a.scope === Scope.WORKLOAD_SELECTOR ? 'WorkloadSelector' : String(a.scope);
  return {
    name: a.name,
    namespace: a.namespace,
    scope,
    action: a.action === Action.DENY ? 'Deny' : 'Allow',
    dryRun: a.dryRun,
    rules: (Authorization.toJSON(a) as { rules?: unknown }).rules ?? [],
  };
}
