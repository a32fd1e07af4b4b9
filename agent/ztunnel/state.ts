// What the proxy knows of the mesh, indexed for the data path (ztunnel's state/): workloads by IP,
// services by VIP, each service's endpoints, and the L4 policies. Fed plain xDS resources, so the
// same code serves the main thread and worker threads (which receive them as messages).
import { WorkloadStatus, type Address, type Service, type Workload } from '../../proto/gen/istio/workload/workload.js';
import type { Authorization } from '../../proto/gen/istio/security/authorization.js';
import { PolicySet } from '../../mesh/authz/index.js';
import { ipText } from '../../mesh/ip-text.js';
import { identityUri, type Identity } from '../../mesh/identity/spiffe.js';

/** One change of the xDS state; `value` null removes the resource. */
export type StateUpdate =
  | { kind: 'address'; name: string; value: Address | null }
  | { kind: 'authorization'; name: string; value: Authorization | null };

export interface StateListener {
  /** A workload was replaced or removed: pooled connections to its addresses must go. */
  workloadChanged?(before: Workload, after: Workload | undefined): void;
  /** Policies, or which policies a workload lists, changed: open connections must be rechecked. */
  policiesChanged?(): void;
}

export function workloadIdentity(w: Workload): Identity {
  return { trustDomain: w.trustDomain || 'cluster.local', namespace: w.namespace, serviceAccount: w.serviceAccount || 'default' };
}

export function serviceKey(s: Pick<Service, 'namespace' | 'hostname'>): string {
  return `${s.namespace}/${s.hostname}`;
}

export class ProxyState {
  readonly policies = new PolicySet();
  private readonly workloads = new Map<string, Workload>();
  private readonly workloadByIp = new Map<string, Workload>();
  private readonly services = new Map<string, Service>();
  private readonly serviceByVip = new Map<string, Service>();
  /** Service key → uids of the workloads that name it. */
  private readonly endpoints = new Map<string, Set<string>>();
  private readonly listeners: StateListener[] = [];

  /** `node`: this ztunnel's node; only its workloads are served inbound. */
  constructor(readonly node: string) {}

  listen(l: StateListener): void {
    this.listeners.push(l);
  }

  apply(updates: readonly StateUpdate[]): void {
    let policies = false;
    for (const u of updates) {
      if (u.kind === 'authorization') {
        if (u.value) this.policies.upsert(u.value);
        else this.policies.remove(u.name);
        policies = true;
      } else if (this.applyAddress(u.name, u.value)) {
        policies = true;
      }
    }
    if (policies) for (const l of this.listeners) l.policiesChanged?.();
  }

  /** Returns whether the policies that apply to some workload may have changed. */
  private applyAddress(name: string, value: Address | null): boolean {
    const oldWorkload = this.workloads.get(name);
    const oldService = this.services.get(name);
    if (oldWorkload) this.removeWorkload(oldWorkload);
    if (oldService) this.removeService(oldService);
    if (value?.workload) this.addWorkload(value.workload);
    if (value?.service) this.addService(value.service);
    if (oldWorkload) for (const l of this.listeners) l.workloadChanged?.(oldWorkload, value?.workload);
    const before = oldWorkload?.authorizationPolicies.join('\n');
    const after = value?.workload?.authorizationPolicies.join('\n');
    return before !== after || oldWorkload?.namespace !== value?.workload?.namespace;
  }

  private addWorkload(w: Workload): void {
    this.workloads.set(w.uid, w);
    for (const a of w.addresses) this.workloadByIp.set(ipText(a), w);
    for (const key of Object.keys(w.services)) {
      let set = this.endpoints.get(key);
      if (!set) this.endpoints.set(key, (set = new Set()));
      set.add(w.uid);
    }
  }

  private removeWorkload(w: Workload): void {
    this.workloads.delete(w.uid);
    for (const a of w.addresses) {
      const ip = ipText(a);
      if (this.workloadByIp.get(ip) === w) this.workloadByIp.delete(ip);
    }
    for (const key of Object.keys(w.services)) {
      const set = this.endpoints.get(key);
      set?.delete(w.uid);
      if (set?.size === 0) this.endpoints.delete(key);
    }
  }

  private addService(s: Service): void {
    this.services.set(serviceKey(s), s);
    for (const a of s.addresses) this.serviceByVip.set(ipText(a.address), s);
  }

  private removeService(s: Service): void {
    this.services.delete(serviceKey(s));
    for (const a of s.addresses) {
      const ip = ipText(a.address);
      if (this.serviceByVip.get(ip) === s) this.serviceByVip.delete(ip);
    }
  }

  workloadAt(ip: string): Workload | undefined {
    return this.workloadByIp.get(ip);
  }

  /**
   * A workload of this node at that address. Its tunnel protocol is not required to be HBONE yet:
   * only pods the node's agent captures have their traffic handed to ztunnel at all, and the agent
   * enables capture before the control plane learns of it and says HBONE.
   */
  localWorkloadAt(ip: string): Workload | undefined {
    const w = this.workloadByIp.get(ip);
    return w && w.node === this.node ? w : undefined;
  }

  serviceAt(ip: string): Service | undefined {
    return this.serviceByVip.get(ip);
  }

  service(namespace: string, hostname: string): Service | undefined {
    return this.services.get(`${namespace}/${hostname}`);
  }

  workload(uid: string): Workload | undefined {
    return this.workloads.get(uid);
  }

  /** The healthy endpoints of a service, each with the port that serves `servicePort`. */
  endpointsOf(s: Service, servicePort: number): { workload: Workload; port: number }[] {
    const key = serviceKey(s);
    const uids = this.endpoints.get(key);
    if (!uids) return [];
    const declared = s.ports.find((p) => p.servicePort === servicePort);
    const out: { workload: Workload; port: number }[] = [];
    for (const uid of uids) {
      const w = this.workloads.get(uid);
      if (!w || w.status !== WorkloadStatus.HEALTHY || w.addresses.length === 0) continue;
      // The workload's own mapping resolves named target ports; then the service's; a port the
      // service does not declare is used as dialled (ztunnel does the same for such services).
      const own = w.services[key]?.ports.find((p) => p.servicePort === servicePort)?.targetPort;
      const port = own || declared?.targetPort || (declared ? 0 : servicePort);
      if (port > 0) out.push({ workload: w, port });
    }
    return out;
  }

  /** The identities a peer serving `w` may prove: its own, plus the service's extra SANs. */
  expectedIdentities(w: Workload, via?: Service): string[] {
    const ids = [identityUri(workloadIdentity(w))];
    for (const san of via?.subjectAltNames ?? []) if (!ids.includes(san)) ids.push(san);
    return ids;
  }
}
