// Turns a parsed lab file into every name and address the lab builder needs, before anything is
// created: a bad file must fail here, whole, rather than leave a half-built lab behind. The plan is
// a pure function of the file, so `lab up`, `lab status` and the tests all agree on it.

import { createHash } from 'node:crypto';
import { CidrExhaustedError, ConfigError } from '../mesh/errors.js';
import {
  cidrContains,
  cidrsOverlap,
  describeObject,
  formatIpv4,
  parseIpv4,
  parseIpv4Cidr,
  type Ipv4Cidr,
  type LabDocument,
  type LabFailMode,
  type Manifest,
} from '../mesh/k8s/manifest.js';
import type { Namespace, Pod, Service } from '../mesh/k8s/types.js';

export interface LabNodePlan {
  name: string;
  /** 0-based position in spec.nodes. */
  index: number;
  podCIDR: string;
  /** The node's address on the fabric bridge: fabricCIDR host index+11. */
  fabricIP: string;
  /** First host of the pod CIDR: the node side of every pod's /32 route. */
  gatewayIP: string;
  /** Second host of the pod CIDR: the node's ztunnel. */
  ztunnelIP: string;
  netns: string;
  ztunnelNetns: string;
}

export interface LabFabricPlan {
  netns: string;
  bridge: string;
  cidr: string;
}

export interface LabPodPlan {
  /** `ns/name`. */
  key: string;
  namespace: string;
  name: string;
  node: string;
  ip: string;
  netns: string;
  /** The node-side end of the pod's veth pair (14 characters, within IFNAMSIZ). */
  hostVeth: string;
  /** A copy of the Pod with spec.nodeName and status.podIP filled in. */
  pod: Pod;
}

export interface LabEndpoint {
  /** `ns/name` of the pod. */
  pod: string;
  node: string;
  ip: string;
  /** The resolved target port on the pod. */
  port: number;
}

export interface LabServicePortPlan {
  name?: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  /** Pods selected by the service that expose this port's target (in pod order). */
  endpoints: LabEndpoint[];
}

export interface LabServicePlan {
  /** `ns/name`. */
  key: string;
  namespace: string;
  name: string;
  /** The cluster IP; null for headless (clusterIP: None) and ExternalName services. */
  vip: string | null;
  headless: boolean;
  ports: LabServicePortPlan[];
  /** Every pod the selector picks, whatever its ports: what a headless name resolves to. */
  selected: { pod: string; node: string; ip: string }[];
  service: Service;
}

export interface LabControlPlanePlan {
  netns: string;
  /** Its address on the fabric: fabricCIDR host .2. */
  ip: string;
}

export interface LabPlan {
  name: string;
  /** The lab file (or directory) the plan was made from. */
  source: string;
  failMode: LabFailMode;
  trustDomain: string;
  controlPlane: LabControlPlanePlan;
  serviceCIDR: string;
  fabric: LabFabricPlan;
  nodes: LabNodePlan[];
  /** Sorted by namespace, then name. */
  pods: LabPodPlan[];
  /** Sorted by namespace, then name. */
  services: LabServicePlan[];
  namespaces: Namespace[];
  lab: LabDocument;
}

/** Nodes take fabric hosts from .11 up; .1-.10 are left for lab-wide components. */
export const FABRIC_NODE_OFFSET = 11;
/** The control plane's fabric host. */
export const FABRIC_CONTROL_PLANE_OFFSET = 2;
/** Pods take pod-CIDR hosts from .3 up: .1 is the node's gateway, .2 its ztunnel. */
export const POD_IP_OFFSET = 3;
/** Allocated service VIPs start at .10 of the service CIDR, leaving room for fixed ones below. */
export const SERVICE_VIP_OFFSET = 10;
export const FABRIC_BRIDGE = 'br0';
const NETNS_MAX = 200;

export function netnsName(lab: string, ...parts: string[]): string {
  const full = ['ambit', lab, ...parts].join('_');
  if (full.length <= NETNS_MAX) return full;
  // Keep the readable prefix; the hash keeps distinct long names distinct.
  return `${full.slice(0, NETNS_MAX - 13)}_${sha256(full).slice(0, 12)}`;
}

export function hostVethName(namespace: string, name: string): string {
  return `amb${sha256(`${namespace}/${name}`).slice(0, 11)}`;
}

export function planLab(manifest: Manifest, source: string): LabPlan {
  const lab = theLab(manifest, source);
  const where = describeObject(manifest, source, 'Lab', undefined, lab.metadata.name);
  const fail = (path: string, message: string): never => {
    throw new ConfigError(`${where}: ${path}: ${message}`);
  };
  const name = lab.metadata.name;
  const serviceCIDR = mustCidr(lab.spec.serviceCIDR, 'spec.serviceCIDR', fail);
  const fabricCIDR = mustCidr(lab.spec.fabricCIDR, 'spec.fabricCIDR', fail);
  if (cidrsOverlap(serviceCIDR, fabricCIDR)) fail('spec.serviceCIDR', `${serviceCIDR.text} overlaps spec.fabricCIDR ${fabricCIDR.text}`);

  const nodes = planNodes(lab, name, serviceCIDR, fabricCIDR, fail);
  const pods = planPods(manifest, source, name, nodes);
  const services = planServices(manifest, source, serviceCIDR, pods);
  return {
    name,
    source,
    failMode: lab.spec.failMode,
    trustDomain: lab.spec.trustDomain,
    controlPlane: { netns: netnsName(name, 'controlplane'), ip: formatIpv4(fabricCIDR.network + FABRIC_CONTROL_PLANE_OFFSET) },
    serviceCIDR: serviceCIDR.text,
    fabric: { netns: netnsName(name, 'fabric'), bridge: FABRIC_BRIDGE, cidr: fabricCIDR.text },
    nodes: nodes.map((n) => n.plan),
    pods,
    services,
    namespaces: manifest.namespaces,
    lab,
  };
}

function theLab(manifest: Manifest, source: string): LabDocument {
  if (manifest.labs.length === 1) return manifest.labs[0]!;
  const hint = `exactly one document with apiVersion: ambit.dev/v1alpha1, kind: Lab naming the lab and its nodes`;
  if (manifest.labs.length === 0) throw new ConfigError(`${source}: no Lab document: a lab file needs ${hint}`);
  const found = manifest.labs.map((l) => describeObject(manifest, source, 'Lab', undefined, l.metadata.name)).join(', ');
  throw new ConfigError(`${source}: ${manifest.labs.length} Lab documents (${found}): a lab file needs ${hint}`);
}

type Fail = (path: string, message: string) => never;

function mustCidr(text: string, path: string, fail: Fail): Ipv4Cidr {
  const cidr = parseIpv4Cidr(text);
  return typeof cidr === 'string' ? fail(path, cidr) : cidr;
}

interface NodeState {
  plan: LabNodePlan;
  cidr: Ipv4Cidr;
  /** The field an address problem of this node points at. */
  path: string;
  pods: string[];
}

function planNodes(lab: LabDocument, name: string, serviceCIDR: Ipv4Cidr, fabricCIDR: Ipv4Cidr, fail: Fail): NodeState[] {
  const room = fabricCIDR.size - 1 - FABRIC_NODE_OFFSET;
  if (lab.spec.nodes.length > room) {
    fail('spec.nodes', `${lab.spec.nodes.length} nodes do not fit spec.fabricCIDR ${fabricCIDR.text}, which has room for ${Math.max(room, 0)} (from host .${FABRIC_NODE_OFFSET}): use a larger fabricCIDR`);
  }
  const states: NodeState[] = [];
  lab.spec.nodes.forEach((node, index) => {
    const path = `spec.nodes[${index}].podCIDR`;
    let text = node.podCIDR;
    if (text === undefined) {
      if (index >= 255) fail(path, `no default pod CIDR for node ${index + 1} (defaults are 10.244.1.0/24 to 10.244.255.0/24): set podCIDR`);
      text = `10.244.${index + 1}.0/24`;
    }
    const cidr = mustCidr(text, path, fail);
    const which = node.podCIDR === undefined ? `the default pod CIDR ${cidr.text}` : cidr.text;
    if (cidrsOverlap(cidr, serviceCIDR)) fail(path, `${which} overlaps spec.serviceCIDR ${serviceCIDR.text}`);
    if (cidrsOverlap(cidr, fabricCIDR)) fail(path, `${which} overlaps spec.fabricCIDR ${fabricCIDR.text}`);
    for (const other of states) {
      if (cidrsOverlap(cidr, other.cidr)) fail(path, `${which} overlaps node ${other.plan.name}'s pod CIDR ${other.cidr.text}`);
    }
    states.push({
      plan: {
        name: node.name,
        index,
        podCIDR: cidr.text,
        fabricIP: formatIpv4(fabricCIDR.network + FABRIC_NODE_OFFSET + index),
        gatewayIP: formatIpv4(cidr.network + 1),
        ztunnelIP: formatIpv4(cidr.network + 2),
        netns: netnsName(name, 'node', node.name),
        ztunnelNetns: netnsName(name, 'zt', node.name),
      },
      cidr,
      path: `spec.nodes[${index}].podCIDR`,
      pods: [],
    });
  });
  return states;
}

function byNamespaceThenName(a: { metadata: { namespace?: string; name: string } }, b: { metadata: { namespace?: string; name: string } }): number {
  const an = a.metadata.namespace ?? 'default';
  const bn = b.metadata.namespace ?? 'default';
  // Code-unit order, not localeCompare: the plan must not depend on the machine's locale.
  if (an !== bn) return an < bn ? -1 : 1;
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}

function planPods(manifest: Manifest, source: string, lab: string, nodes: NodeState[]): LabPodPlan[] {
  const sorted = [...manifest.pods].sort(byNamespaceThenName);
  const byName = new Map(nodes.map((n) => [n.plan.name, n]));
  const placement = new Map<Pod, NodeState>();
  const describe = (pod: Pod): string => describeObject(manifest, source, 'Pod', pod.metadata.namespace ?? 'default', pod.metadata.name);

  // Pinned pods first, so the spread of the others sees every node's final pinned load.
  for (const pod of sorted) {
    if (pod.spec.hostNetwork === true) {
      throw new ConfigError(`${describe(pod)}: spec.hostNetwork: the lab has no host network (nodes are network namespaces): remove hostNetwork`);
    }
    const wanted = pod.spec.nodeName;
    if (wanted === undefined) continue;
    const node = byName.get(wanted);
    if (!node) {
      throw new ConfigError(`${describe(pod)}: spec.nodeName: unknown node ${JSON.stringify(wanted)} (the lab's nodes: ${nodes.map((n) => n.plan.name).join(', ')})`);
    }
    placement.set(pod, node);
    node.pods.push(keyOf(pod));
  }
  for (const pod of sorted) {
    if (placement.has(pod)) continue;
    let best = nodes[0]!;
    for (const node of nodes) if (node.pods.length < best.pods.length) best = node;
    placement.set(pod, best);
    best.pods.push(keyOf(pod));
  }

  for (const node of nodes) {
    const capacity = node.cidr.size - POD_IP_OFFSET - 1;
    if (node.pods.length > capacity) {
      throw new CidrExhaustedError(
        `${describeObject(manifest, source, 'Lab', undefined, lab)}: ${node.path}: node ${node.plan.name}'s pod CIDR ${node.cidr.text} has ${capacity} addresses for pods (from host .${POD_IP_OFFSET}), but ${node.pods.length} pods are placed on it: give the node a larger podCIDR or move pods to other nodes`,
      );
    }
  }

  const next = new Map<NodeState, number>(nodes.map((n) => [n, n.cidr.network + POD_IP_OFFSET]));
  const veths = new Map<string, string>();
  return sorted.map((pod) => {
    const node = placement.get(pod)!;
    const ip = formatIpv4(next.get(node)!);
    next.set(node, next.get(node)! + 1);
    const namespace = pod.metadata.namespace ?? 'default';
    const key = `${namespace}/${pod.metadata.name}`;
    const hostVeth = hostVethName(namespace, pod.metadata.name);
    const clash = veths.get(hostVeth);
    if (clash !== undefined) throw new ConfigError(`${describe(pod)}: its interface name ${hostVeth} collides with pod ${clash}'s (a 44-bit hash collision): rename one of them`);
    veths.set(hostVeth, key);
    const copy = structuredClone(pod);
    copy.spec.nodeName = node.plan.name;
    copy.status = { ...copy.status, podIP: ip, podIPs: [{ ip }] };
    return {
      key,
      namespace,
      name: pod.metadata.name,
      node: node.plan.name,
      ip,
      netns: netnsName(lab, 'pod', namespace, pod.metadata.name),
      hostVeth,
      pod: copy,
    };
  });
}

function keyOf(obj: { metadata: { namespace?: string; name: string } }): string {
  return `${obj.metadata.namespace ?? 'default'}/${obj.metadata.name}`;
}

function planServices(manifest: Manifest, source: string, serviceCIDR: Ipv4Cidr, pods: LabPodPlan[]): LabServicePlan[] {
  const sorted = [...manifest.services].sort(byNamespaceThenName);
  const describe = (svc: Service): string => describeObject(manifest, source, 'Service', svc.metadata.namespace ?? 'default', svc.metadata.name);
  const taken = new Map<number, string>();
  const fixed = new Map<Service, number>();

  for (const svc of sorted) {
    const ip = svc.spec.clusterIP;
    if (ip === undefined || ip === 'None' || svc.spec.type === 'ExternalName') continue;
    const n = parseIpv4(ip);
    if (n === undefined) throw new ConfigError(`${describe(svc)}: spec.clusterIP: must be an IPv4 address or "None", got ${JSON.stringify(ip)}`);
    if (!cidrContains(serviceCIDR, n) || n === serviceCIDR.network || n === serviceCIDR.network + serviceCIDR.size - 1) {
      throw new ConfigError(`${describe(svc)}: spec.clusterIP: ${ip} is not a usable address of the lab's serviceCIDR ${serviceCIDR.text}`);
    }
    const other = taken.get(n);
    if (other !== undefined) throw new ConfigError(`${describe(svc)}: spec.clusterIP: ${ip} is already the cluster IP of Service ${other}`);
    taken.set(n, keyOf(svc));
    fixed.set(svc, n);
  }

  let cursor = serviceCIDR.network + SERVICE_VIP_OFFSET;
  const last = serviceCIDR.network + serviceCIDR.size - 2;
  return sorted.map((svc) => {
    const namespace = svc.metadata.namespace ?? 'default';
    const externalName = svc.spec.type === 'ExternalName';
    const headless = svc.spec.clusterIP === 'None';
    let vip: string | null = null;
    if (!headless && !externalName) {
      let n = fixed.get(svc);
      if (n === undefined) {
        while (cursor <= last && taken.has(cursor)) cursor++;
        if (cursor > last) {
          throw new CidrExhaustedError(`${describe(svc)}: no cluster IP left: the lab's serviceCIDR ${serviceCIDR.text} has ${Math.max(last - (serviceCIDR.network + SERVICE_VIP_OFFSET) + 1, 0)} addresses for services (from host .${SERVICE_VIP_OFFSET}) and all are in use: use a larger spec.serviceCIDR`);
        }
        n = cursor;
        taken.set(n, keyOf(svc));
      }
      vip = formatIpv4(n);
    }
    const selected = externalName ? [] : selectPods(svc, namespace, pods);
    return {
      key: `${namespace}/${svc.metadata.name}`,
      namespace,
      name: svc.metadata.name,
      vip,
      headless,
      ports: svc.spec.ports.map((port) => {
        const protocol = port.protocol ?? 'TCP';
        const out: LabServicePortPlan = { port: port.port, protocol, endpoints: [] };
        if (port.name !== undefined) out.name = port.name;
        for (const pod of selected) {
          const target = resolveTargetPort(pod.pod, port.targetPort ?? port.port, protocol);
          if (target !== undefined) out.endpoints.push({ pod: pod.key, node: pod.node, ip: pod.ip, port: target });
        }
        return out;
      }),
      selected: selected.map((p) => ({ pod: p.key, node: p.node, ip: p.ip })),
      service: svc,
    };
  });
}

/** Kubernetes' EndpointSlice controller: an absent or empty selector manages no endpoints. */
function selectPods(svc: Service, namespace: string, pods: LabPodPlan[]): LabPodPlan[] {
  const selector = Object.entries(svc.spec.selector ?? {});
  if (selector.length === 0) return [];
  return pods.filter((p) => p.namespace === namespace && selector.every(([k, v]) => p.pod.metadata.labels?.[k] === v));
}

/** A named target is the pod's container port of that name and protocol (Kubernetes' FindPort). */
function resolveTargetPort(pod: Pod, target: number | string, protocol: string): number | undefined {
  if (typeof target === 'number') return target;
  for (const container of pod.spec.containers) {
    for (const port of container.ports ?? []) {
      if (port.name === target && (port.protocol ?? 'TCP') === protocol) return port.containerPort;
    }
  }
  return undefined;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
