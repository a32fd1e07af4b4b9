// Brings the node's datapath in line with the node's pods: every pod with a network gets the two
// tcx links on its host-side veth, its enrolment is one flag in the pod maps, and whatever belongs
// to pods that are gone is removed. Reconciling is idempotent; it runs on every change and on a
// timer, and after an agent restart it is what adopts the pinned state.
import { ipJson, type IpLink, type IpRoute } from '../../mesh/exec.js';
import { errorMessage } from '../../mesh/errors.js';
import type { Logger } from '../../mesh/log.js';
import { enrollmentReason, isEnrolled } from '../../mesh/enrollment.js';
import { podKey, type Pod } from '../../mesh/k8s/types.js';
import { POD_F_ENABLED, type ProxyConfig } from '../../bpf/maps.js';
import type { NodeView, RedirectionState } from '../config-source.js';
import type { Datapath } from './datapath.js';
import { TPROXY_MARK, configureZtunnelNetns, discoverZtunnel, sameEndpoint, type ZtunnelEndpoint } from './ztunnel-netns.js';

export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15006;
export const HBONE_PORT = 15008;

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

  constructor(opts: ManagerOptions) {
    this.opts = opts;
  }

  get ztunnelAddress(): string | null {
    return this.ztunnel?.ip ?? null;
  }

  /** Finds ztunnel and (re)configures its netns, link and the proxy map when anything changed. */
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
      outPort: OUTBOUND_PORT,
      inPort: INBOUND_PORT,
      hbonePort: HBONE_PORT,
      failOpen: this.opts.failOpen,
      tproxyMark: TPROXY_MARK,
      proxyNsid: ep.nsid,
    };
    const have = datapath.proxyConfig();
    if (!sameEndpoint(this.ztunnel, ep) || !have || JSON.stringify(have) !== JSON.stringify(want)) {
      try {
        await configureZtunnelNetns(ep);
        const how = datapath.attachProxy(ep.netns, ep.ifname, ep.ifindex);
        datapath.setProxyConfig(want);
        log.info({ ztunnel: ep.ip, hostIfindex: ep.hostIfindex, nsid: ep.nsid, link: how, failMode: this.opts.failOpen ? 'open' : 'closed' }, 'ztunnel datapath configured');
      } catch (err) {
        // Enrolled pods stay fail-closed meanwhile; the next reconcile tries again.
        log.error({ ztunnel: ep.ip, err: errorMessage(err) }, 'configuring the ztunnel datapath failed');
        this.ztunnel = null;
        return null;
      }
    }
    this.ztunnel = ep;
    return ep;
  }

  /** One pass: returns what each of the node's networked pods now has. */
  async reconcile(view: NodeView, ztunnelReady: boolean): Promise<PodRedirection[]> {
    const { datapath, log } = this.opts;
    await this.ensureZtunnel();
    const [routes, links] = await Promise.all([ipJson<IpRoute>(['route', 'show']), ipJson<IpLink>(['-d', 'link', 'show'])]);
    const devByIP = new Map(routes.filter((r) => r.dev && !r.gateway).map((r) => [r.dst.replace(/\/32$/, ''), r.dev!]));
    const linkByName = new Map(links.map((l) => [l.ifname, l]));
    const mapped = datapath.pods();

    const result: PodRedirection[] = [];
    const keepIfindex = new Set<number>();
    const keepIPs = new Set<string>();
    for (const pod of view.pods) {
      const ip = pod.status?.podIP;
      if (!ip || pod.spec.hostNetwork) continue;
      const ns = view.namespaces.get(pod.metadata.namespace ?? 'default');
      const enrolled = isEnrolled(pod, ns);
      const entry: PodRedirection = { pod, key: podKey(pod), ip, ifindex: null, enrolled, reason: enrollmentReason(pod, ns), state: null };
      result.push(entry);
      const dev = devByIP.get(ip);
      const link = dev ? linkByName.get(dev) : undefined;
      if (!link || link.linkinfo?.info_kind !== 'veth') {
        entry.error = dev ? `route to ${ip} leads to ${dev}, which is not a veth` : `no route to ${ip} in the node's namespace`;
        if (enrolled) log.warn({ pod: entry.key, err: entry.error }, 'cannot capture an enrolled pod');
        continue;
      }
      entry.ifindex = link.ifindex;
      keepIfindex.add(link.ifindex);
      keepIPs.add(ip);
      try {
        const how = datapath.attachPod(link.ifindex);
        const flags = enrolled ? POD_F_ENABLED : 0;
        const current = mapped.get(link.ifindex);
        if (!current || current.ip !== ip || current.flags !== flags) {
          datapath.setPod(link.ifindex, { ip, flags });
          log.info({ pod: entry.key, ip, ifindex: link.ifindex, enrolled, reason: entry.reason }, enrolled ? 'pod enrolled' : 'pod not enrolled');
        } else if (how === 'attached') {
          log.info({ pod: entry.key, ifindex: link.ifindex }, 'links re-attached');
        }
        entry.state = enrolled ? (ztunnelReady ? 'enabled' : 'pending') : null;
      } catch (err) {
        entry.error = errorMessage(err);
        log.error({ pod: entry.key, err: entry.error }, 'failed to set up redirection for a pod');
      }
    }

    for (const ifindex of new Set([...datapath.podLinkIfindexes(), ...mapped.keys()])) {
      if (keepIfindex.has(ifindex)) continue;
      datapath.detachPod(ifindex);
      datapath.deletePod(ifindex);
      log.info({ ifindex }, 'removed redirection of a pod that is gone');
    }
    for (const ip of datapath.podIPs().keys()) {
      if (!keepIPs.has(ip)) datapath.deletePodIP(ip);
    }
    return result;
  }
}
