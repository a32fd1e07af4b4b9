// Brings the node's datapath in line with the node's pods: every pod with a network gets the two
// tcx links on its host-side veth, its enrolment is one flag in the pod maps, and whatever belongs
// to pods that are gone is removed. Reconciling is idempotent; it runs on every change and on a
// timer, and after an agent restart it is what adopts the pinned state.
import { ipJson, type IpLink, type IpRoute } from '../../mesh/exec.js';
import { errorMessage } from '../../mesh/errors.js';
import type { Logger } from '../../mesh/log.js';
import { enrollmentReason, isEnrolled } from '../../mesh/enrollment.js';
import { podKey, type Pod } from '../../mesh/k8s/types.js';
import { isFinished } from '../../mesh/k8s/pods.js';
import { POD_F_ENABLED, type PodState, type ProxyConfig } from '../../bpf/maps.js';
import { HBONE_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT } from '../../mesh/ports.js';
import type { NodeView, RedirectionState } from '../../mesh/config/source.js';
import type { Datapath } from './datapath.js';
import { TPROXY_MARK, configureZtunnelNetns, discoverZtunnel, sameEndpoint, type ZtunnelEndpoint } from './ztunnel-netns.js';


export interface PodRedirection {
  pod: Pod;
  key: string;
  ip: string;
  /** Host-side veth, or null when the pod's route does not lead to one. */
  ifindex: number | null;
  enrolled: boolean;
  reason: string;
  state: RedirectionState;
  error?: string;
}

export interface ManagerOptions {
  datapath: Datapath;
  ztunnelNetns: string;
  failOpen: boolean;
  log: Logger;
}

export class RedirectionManager {
  private readonly opts: ManagerOptions;
  private ztunnel: ZtunnelEndpoint | null = null;
  /** Veths kept without a pod in the view, so that each is reported once. */
  private orphans = new Set<number>();

  constructor(opts: ManagerOptions) {
    this.opts = opts;
  }

  get ztunnelAddress(): string | null {
    return this.ztunnel?.ip ?? null;
  }

  /** Finds ztunnel; (re)configures its netns and the proxy map when anything changed, and checks
   * its link on every pass. */
  async ensureZtunnel(): Promise<ZtunnelEndpoint | null> {
    const { datapath, log } = this.opts;
    let ep: ZtunnelEndpoint;
    try {
      ep = await discoverZtunnel(this.opts.ztunnelNetns);
    } catch (err) {
      if (this.ztunnel) log.error({ err: errorMessage(err) }, 'lost the node ztunnel; enrolled pods fail closed until it is back');
      this.ztunnel = null;
      return null;
    }
    const want: ProxyConfig = {
      proxyIP: ep.ip,
      hostIfindex: ep.hostIfindex,
      proxyMac: ep.mac,
      outPort: OUTBOUND_CAPTURE_PORT,
      inPort: INBOUND_CAPTURE_PORT,
      hbonePort: HBONE_PORT,
      failOpen: this.opts.failOpen,
      tproxyMark: TPROXY_MARK,
      proxyNsid: ep.nsid,
    };
    const have = datapath.proxyConfig();
    const changed = !sameEndpoint(this.ztunnel, ep) || !have || JSON.stringify(have) !== JSON.stringify(want);
    try {
      if (changed) await configureZtunnelNetns(ep);
      // Every pass, not only on change: the link must be on this namespace's eth0 and alive. And
      // before the proxy map points here, so no packet arrives ahead of proxy_in.
      if (datapath.attachProxy(ep.netns, ep.ifname, ep.ifindex) === 'attached') log.info({ ztunnel: ep.ip }, 'ztunnel link attached');
      if (changed) {
        datapath.setProxyConfig(want);
        log.info({ ztunnel: ep.ip, hostIfindex: ep.hostIfindex, nsid: ep.nsid, failMode: this.opts.failOpen ? 'open' : 'closed' }, 'ztunnel datapath configured');
      }
    } catch (err) {
      // Enrolled pods stay fail-closed meanwhile; the next reconcile tries again.
      log.error({ ztunnel: ep.ip, err: errorMessage(err) }, 'configuring the ztunnel datapath failed');
      this.ztunnel = null;
      return null;
    }
    this.ztunnel = ep;
    return ep;
  }

  /** One pass: returns what each of the node's networked pods now has. */
  async reconcile(view: NodeView, ztunnelReady: boolean): Promise<PodRedirection[]> {
    const { datapath, log } = this.opts;
    const ztunnel = await this.ensureZtunnel();
    const [routes, links] = await Promise.all([ipJson<IpRoute>(['route', 'show']), ipJson<IpLink>(['-d', 'link', 'show'])]);
    const devByIP = new Map(routes.filter((r) => r.dev && !r.gateway).map((r) => [r.dst.replace(/\/32$/, ''), r.dev!]));
    const linkByName = new Map(links.map((l) => [l.ifname, l]));
    const liveIfindexes = new Set(links.map((l) => l.ifindex));
    const mapped = datapath.pods();

    const result: PodRedirection[] = [];
    /** Every veth whose redirection state stays, and that state. */
    const keep = new Map<number, PodState>();
    for (const pod of view.pods) {
      const ip = pod.status?.podIP;
      if (!ip || pod.spec.hostNetwork || isFinished(pod)) continue;
      const ns = view.namespaces.get(pod.metadata.namespace ?? 'default');
      const enrolled = isEnrolled(pod, ns);
      const entry: PodRedirection = { pod, key: podKey(pod), ip, ifindex: null, enrolled, reason: enrollmentReason(pod, ns), state: null };
      result.push(entry);
      const dev = devByIP.get(ip);
      const link = dev ? linkByName.get(dev) : undefined;
      if (!link || link.linkinfo?.info_kind !== 'veth') {
        entry.error = dev ? `route to ${ip} leads to ${dev}, which is not a veth` : `no route to ${ip} in the node's namespace`;
      } else if (link.ifindex === ztunnel?.hostIfindex) {
        entry.error = "this is the node ztunnel's own veth";
      } else if (keep.has(link.ifindex)) {
        entry.error = `veth ${dev} already belongs to another pod with IP ${keep.get(link.ifindex)!.ip}`;
      }
      if (entry.error) {
        if (enrolled) log.warn({ pod: entry.key, err: entry.error }, 'cannot capture an enrolled pod');
        continue;
      }
      const ifindex = link!.ifindex;
      entry.ifindex = ifindex;
      const want: PodState = { ip, flags: enrolled ? POD_F_ENABLED : 0 };
      keep.set(ifindex, want);
      try {
        const how = datapath.attachPod(ifindex);
        const current = mapped.get(ifindex);
        if (!current || current.ip !== ip || current.flags !== want.flags) {
          datapath.setPod(ifindex, want);
          log.info({ pod: entry.key, ip, ifindex, enrolled, reason: entry.reason }, enrolled ? 'pod enrolled' : 'pod not enrolled');
        } else if (how === 'attached') {
          log.info({ pod: entry.key, ifindex }, 'links re-attached');
        }
        entry.state = enrolled ? (ztunnelReady ? 'enabled' : 'pending') : null;
      } catch (err) {
        entry.error = errorMessage(err);
        log.error({ pod: entry.key, err: entry.error }, 'failed to set up redirection for a pod');
      }
    }

    // A veth with state but no pod in the view (removed from the API or the file while its
    // sandbox still runs) keeps its capture until the veth itself is gone: fail closed.
    for (const [ifindex, state] of mapped) {
      if (keep.has(ifindex)) continue;
      if (liveIfindexes.has(ifindex) && ifindex !== ztunnel?.hostIfindex) {
        keep.set(ifindex, state);
        if (!this.orphans.has(ifindex)) log.warn({ ifindex, ip: state.ip }, 'a captured veth has no pod in the view; keeping its redirection until the veth is gone');
        continue;
      }
      datapath.detachPod(ifindex);
      datapath.deletePod(ifindex);
      log.info({ ifindex, ip: state.ip }, 'removed redirection of a pod that is gone');
    }
    this.orphans = new Set([...keep.keys()].filter((i) => !result.some((r) => r.ifindex === i)));
    // Links with no map entry: the agent stopped between attaching them and writing the entry.
    for (const ifindex of datapath.podLinkIfindexes()) {
      if (!keep.has(ifindex)) datapath.detachPod(ifindex);
    }
    datapath.syncPodIPs(new Map([...keep.values()].map((s) => [s.ip, s.flags])));
    return result;
  }
}
