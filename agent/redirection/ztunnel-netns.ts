// The node's ztunnel, seen from the agent: where it is (address, MAC, veth, netns id) and the
// routing its namespace needs so that packets proxy_in assigns to a socket are delivered locally.
import { ipJson, run, type IpAddr, type IpLink, type IpRoute } from '../../mesh/exec.js';
import { AmbitError } from '../../mesh/errors.js';

/** Mark proxy_in sets on packets it assigned; a policy route turns it into local delivery. */
export const TPROXY_MARK = 0x400;
const TPROXY_MASK = 0xfff;
const TPROXY_TABLE = '100';
const TPROXY_RULE_PRIORITY = '20000';

export interface ZtunnelEndpoint {
  netns: string;
  ifname: string;
  /** eth0's ifindex inside ztunnel's netns. */
  ifindex: number;
  ip: string;
  mac: string;
  /** The host-side end of ztunnel's veth, in the node's netns. */
  hostIfindex: number;
  /** ztunnel's netns id as seen from the node's netns (what graceful-mode lookups need). */
  nsid: number;
}

export class ZtunnelNotFoundError extends AmbitError {
  constructor(message: string) {
    super('AMBIT_ZTUNNEL_NOT_FOUND', message);
  }
}

/** Reads ztunnel's interface from inside its netns and its veth peer from the node's (ours). */
export async function discoverZtunnel(netns: string, ifname = 'eth0'): Promise<ZtunnelEndpoint> {
  const [link] = await ipJson<IpLink>(['link', 'show', 'dev', ifname], netns);
  const [addr] = await ipJson<IpAddr>(['-4', 'addr', 'show', 'dev', ifname], netns);
  const ip = addr?.addr_info.find((a) => a.family === 'inet')?.local;
  if (!link || !ip || !link.address) throw new ZtunnelNotFoundError(`ztunnel netns ${netns}: ${ifname} has no IPv4 address or MAC`);
  if (link.link_index === undefined) throw new ZtunnelNotFoundError(`ztunnel netns ${netns}: ${ifname} is not one end of a veth pair`);
  const hostLinks = await ipJson<IpLink>(['link', 'show']);
  const host = hostLinks.find((l) => l.ifindex === link.link_index);
  if (!host || host.link_netnsid === undefined) {
    throw new ZtunnelNotFoundError(`ztunnel's veth peer (ifindex ${link.link_index}) is not in this agent's network namespace`);
  }
  return { netns, ifname, ifindex: link.ifindex, ip, mac: link.address, hostIfindex: host.ifindex, nsid: host.link_netnsid };
}

export function sameEndpoint(a: ZtunnelEndpoint | null, b: ZtunnelEndpoint | null): boolean {
  if (!a || !b) return a === b;
  return a.ifindex === b.ifindex && a.ip === b.ip && a.mac === b.mac && a.hostIfindex === b.hostIfindex && a.nsid === b.nsid;
}

interface IpRule {
  priority?: number;
  fwmark?: string;
  fwmask?: string;
  table?: string;
}

/**
 * Makes ztunnel's netns deliver assigned packets locally: fwmark 0x400/0xfff → table 100, where
 * everything is local. Reverse-path filtering is off because captured packets carry foreign
 * addresses. TIME_WAIT is off (tcp_max_tw_buckets=0): a relay socket that closes first would hold
 * the client's tuple for 60 s, and the kernel refuses a new connection on a tuple held in
 * TIME_WAIT unless a listener on the original port exists, which for transparent sockets it never
 * does (iptables TPROXY has code for this; bpf_sk_assign has none). See
 * docs/decisions/0003-no-time-wait-in-ztunnel-netns.md. Idempotent.
 */
export async function configureZtunnelNetns(ep: ZtunnelEndpoint): Promise<void> {
  const rules = await ipJson<IpRule>(['rule', 'show'], ep.netns);
  const mark = `0x${TPROXY_MARK.toString(16)}`;
  if (!rules.some((r) => r.fwmark === mark && r.table === TPROXY_TABLE)) {
    await run('ip', ['rule', 'add', 'fwmark', `${mark}/0x${TPROXY_MASK.toString(16)}`, 'lookup', TPROXY_TABLE, 'priority', TPROXY_RULE_PRIORITY], { netns: ep.netns });
  }
  // `ip route show table N` fails while the table is empty (it does not exist yet).
  const routes = await ipJson<IpRoute>(['route', 'show', 'table', TPROXY_TABLE], ep.netns).catch(() => [] as IpRoute[]);
  if (!routes.some((r) => r.type === 'local' && r.dst === 'default')) {
    await run('ip', ['route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', TPROXY_TABLE], { netns: ep.netns });
  }
  await run(
    'sysctl',
    ['-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', `net.ipv4.conf.${ep.ifname}.rp_filter=0`, 'net.ipv4.tcp_max_tw_buckets=0'],
    { netns: ep.netns },
  );
}
