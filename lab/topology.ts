// Builds a lab's network from its plan: a fabric namespace with a bridge, one namespace per node on
// it, and behind each node its ztunnel and pods, each a namespace joined to the node by a veth pair
// with /32 addresses and routes (the CNI ptp layout). Commands run in batches per namespace
// (`ip -n NS -batch -`), and every address exists only inside the lab's namespaces.
import { mkdirSync, writeFileSync } from 'node:fs';
import { run } from '../mesh/exec.js';
import { READINESS_PORT } from '../mesh/ports.js';
import { httpGetFrom } from './connect.js';
import type { LabNodePlan, LabPlan, LabPodPlan } from './plan.js';
import { hostsFileFor } from './hosts.js';
import { kubeProxyRuleset } from './kubeproxy.js';
import { paths, type LabState } from './state.js';

/** The ztunnel's host-side veth in each node's namespace. */
export const ZTUNNEL_HOST_VETH = 'ztunnel0';

export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}

function ipBatch(netns: string, lines: string[]): Promise<string> {
  return run('ip', ['-n', netns, '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

function sysctl(netns: string, settings: string[]): Promise<string> {
  return run('sysctl', ['-qw', ...settings], { netns: netnsPath(netns) });
}

/** Creates the namespaces, recording each in `state` before the next so a failure can be undone. */
export async function createNamespaces(plan: LabPlan, state: LabState, save: () => void): Promise<void> {
  const all = [plan.fabric.netns, plan.controlPlane.netns, ...plan.nodes.flatMap((n) => [n.netns, n.ztunnelNetns]), ...plan.pods.map((p) => p.netns)];
  for (const ns of all) {
    await run('ip', ['netns', 'add', ns]);
    state.netns.push(ns);
  }
  save();
}

/** The ip commands, in the node's namespace, that join an endpoint namespace (pod or ztunnel). */
function endpointLinkCommands(node: LabNodePlan, hostVeth: string, peerNetns: string, ip: string): string[] {
  return [
    `link add ${hostVeth} type veth peer name eth0 netns ${peerNetns}`,
    `addr add ${node.gatewayIP}/32 dev ${hostVeth}`,
    `link set ${hostVeth} up`,
    `route add ${ip}/32 dev ${hostVeth} scope link`,
  ];
}

/** The ip commands inside an endpoint namespace: its /32, and the node as its only gateway. */
function endpointSideCommands(node: LabNodePlan, ip: string): string[] {
  return [
    'link set lo up',
    `addr add ${ip}/32 dev eth0`,
    'link set eth0 up',
    `route add ${node.gatewayIP}/32 dev eth0 scope link`,
    `route add default via ${node.gatewayIP} dev eth0`,
  ];
}

export async function buildNetwork(plan: LabPlan): Promise<void> {
  const fabricPrefix = plan.fabric.cidr.split('/')[1];
  await ipBatch(plan.fabric.netns, ['link set lo up', `link add ${plan.fabric.bridge} type bridge`, `link set ${plan.fabric.bridge} up`]);

  // The control plane sits on the fabric, and reaches the pods (ztunnels) through their nodes.
  await ipBatch(plan.controlPlane.netns, [
    'link set lo up',
    `link add eth0 type veth peer name vcp netns ${plan.fabric.netns}`,
    `addr add ${plan.controlPlane.ip}/${fabricPrefix} dev eth0`,
    'link set eth0 up',
    ...plan.nodes.map((n) => `route add ${n.podCIDR} via ${n.fabricIP} dev eth0`),
  ]);
  await ipBatch(plan.fabric.netns, [`link set vcp master ${plan.fabric.bridge}`, 'link set vcp up']);

  for (const node of plan.nodes) {
    // Forwarding on; reverse-path filtering off, because captured flows come back out of the
    // ztunnel's veth carrying the pods' addresses. `default` applies to the veths created below.
    await sysctl(node.netns, [
      'net.ipv4.ip_forward=1',
      'net.ipv4.conf.all.rp_filter=0',
      'net.ipv4.conf.default.rp_filter=0',
    ]);
    const fabricVeth = `vn${node.index}`;
    const lines = [
      'link set lo up',
      `link add eth0 type veth peer name ${fabricVeth} netns ${plan.fabric.netns}`,
      `addr add ${node.fabricIP}/${fabricPrefix} dev eth0`,
      'link set eth0 up',
    ];
    for (const other of plan.nodes) {
      if (other.name !== node.name) lines.push(`route add ${other.podCIDR} via ${other.fabricIP} dev eth0`);
    }
    // Service VIPs leave through the fabric unless kube-proxy rewrote them; what it did not
    // rewrite (unknown port, no endpoints) its filter chains reject.
    lines.push(`route add ${plan.serviceCIDR} dev eth0 scope link`);
    lines.push(...endpointLinkCommands(node, ZTUNNEL_HOST_VETH, node.ztunnelNetns, node.ztunnelIP));
    for (const pod of plan.pods.filter((p) => p.node === node.name)) {
      lines.push(...endpointLinkCommands(node, pod.hostVeth, pod.netns, pod.ip));
    }
    await ipBatch(node.netns, lines);
    await ipBatch(plan.fabric.netns, [`link set ${fabricVeth} master ${plan.fabric.bridge}`, `link set ${fabricVeth} up`]);
    await ipBatch(node.ztunnelNetns, endpointSideCommands(node, node.ztunnelIP));
    await Promise.all(
      plan.pods.filter((p) => p.node === node.name).map((pod) => ipBatch(pod.netns, endpointSideCommands(node, pod.ip))),
    );
    await run('nft', ['-f', '-'], { netns: netnsPath(node.netns), input: kubeProxyRuleset(plan, node.name) });
  }
}

/** /etc/netns/<pod>/hosts: how `ip netns exec` (and so `ambit lab exec`) resolves service names. */
export function writeHostsFiles(plan: LabPlan, state: LabState, save: () => void): void {
  for (const pod of plan.pods) writeHosts(plan, pod, state);
  save();
}

function writeHosts(plan: LabPlan, pod: LabPodPlan, state: LabState): void {
  const dir = paths.etcNetns(pod.netns);
  mkdirSync(dir, { recursive: true });
  state.etcNetns.push(pod.netns);
  writeFileSync(`${dir}/hosts`, hostsFileFor(plan, pod));
}

/** Whether a node's ztunnel answers /healthz/ready, asked from inside the node's namespace. */
export async function ztunnelReady(node: LabNodePlan): Promise<boolean> {
  const r = await httpGetFrom(netnsPath(node.netns), node.ztunnelIP, READINESS_PORT, '/healthz/ready', 1000).catch(() => null);
  return r?.status === 200;
}
