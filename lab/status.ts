// `ambit lab status`: what a lab is made of and how it is doing, for people (a summary) and for
// scripts and tests (-o json). Read from the lab's state directory; nothing is probed over the
// network except each ztunnel's readiness, reached from inside its node's namespace.
import { existsSync } from 'node:fs';
import { enrollment } from '../mesh/enrollment.js';
import { LabNotFoundError } from '../mesh/errors.js';
import { podKey, type Namespace, type Pod } from '../mesh/k8s/types.js';
import type { RedirectionRecord } from '../mesh/config/sources/file.js';
import { loadManifests } from '../mesh/k8s/manifest.js';
import type { LabPlan } from './plan.js';
import { isOurs } from './processes.js';
import { labDir, listLabs, paths, readJson, readState, type LabState } from './state.js';
import { ztunnelReady } from './topology.js';

export interface ComponentStatus {
  component: string;
  node: string;
  address: string | null;
  netns: string;
  pid: number;
  running: boolean;
  log: string;
}

export interface LabStatus {
  name: string;
  source: string;
  phase: LabState['phase'];
  failMode: 'closed' | 'open';
  nodes: { name: string; podCIDR: string; fabricIP: string; netns: string; ztunnel: { ip: string; netns: string; ready: boolean } }[];
  pods: {
    namespace: string;
    name: string;
    node: string;
    ip: string;
    netns: string;
    enrolled: boolean;
    reason: string;
    redirection: 'enabled' | 'pending' | null;
    ports: number[];
  }[];
  services: { namespace: string; name: string; vip: string | null; ports: { name?: string; port: number; protocol: string; endpoints: string[] }[] }[];
  components: ComponentStatus[];
  /** Per-node credentials for the control plane (written by the control plane once it runs). */
  credentials: string[];
  /** The mesh root certificate (written by the control plane once it runs). */
  rootCertificate: string | null;
  stateDir: string;
}

/** The lab to act on: the one named, or the only one there is. */
export function resolveLabName(name?: string): string {
  if (name) {
    if (!readState(name)) throw new LabNotFoundError(`no lab named '${name}' (labs: ${listLabs().join(', ') || 'none'})`);
    return name;
  }
  const labs = listLabs();
  if (labs.length === 1) return labs[0]!;
  if (labs.length === 0) throw new LabNotFoundError("no lab is running: start one with 'ambit lab up FILE'");
  throw new LabNotFoundError(`several labs exist (${labs.join(', ')}): name one with --lab`);
}

export function loadPlan(name: string): LabPlan {
  const plan = readJson<LabPlan>(paths.plan(name));
  if (!plan) throw new LabNotFoundError(`lab '${name}' has no plan (it may still be starting, or failed): see ${labDir(name)}`);
  return plan;
}

interface CurrentObjects {
  namespaces: Map<string, Namespace>;
  pods: Map<string, Pod>;
}

/** Namespaces and pods as the lab file has them now (labels may have changed since `up`); the
 * plan's when the file does not parse, as the agents keep their last good view. */
function currentObjects(plan: LabPlan): CurrentObjects {
  let namespaces = plan.namespaces;
  let pods = plan.pods.map((p) => p.pod);
  try {
    const m = loadManifests([plan.source]);
    namespaces = m.namespaces;
    pods = m.pods;
  } catch {
    // Keep the plan's.
  }
  return { namespaces: new Map(namespaces.map((ns) => [ns.metadata.name, ns])), pods: new Map(pods.map((p) => [podKey(p), p])) };
}

export async function labStatus(name: string): Promise<LabStatus> {
  const state = readState(name);
  if (!state) throw new LabNotFoundError(`no lab named '${name}'`);
  const plan = loadPlan(name);
  const current = currentObjects(plan);
  const records = new Map(plan.nodes.map((n) => [n.name, readJson<RedirectionRecord>(paths.redirection(name, n.name))]));
  const ready = await Promise.all(plan.nodes.map((n) => ztunnelReady(n)));
  const credentials = plan.nodes.map((n) => paths.nodeToken(name, n.name)).filter((p) => existsSync(p));
  const root = paths.rootCert(name);
  return {
    name,
    source: plan.source,
    phase: state.phase,
    failMode: plan.failMode,
    nodes: plan.nodes.map((n, i) => ({
      name: n.name,
      podCIDR: n.podCIDR,
      fabricIP: n.fabricIP,
      netns: n.netns,
      ztunnel: { ip: n.ztunnelIP, netns: n.ztunnelNetns, ready: ready[i]! },
    })),
    pods: plan.pods.map((p) => {
      const pod = current.pods.get(p.key);
      const redirection = records.get(p.node)?.pods[p.key]?.state ?? null;
      const e = pod
        ? enrollment(pod, current.namespaces.get(p.namespace))
        : { enrolled: redirection !== null, reason: 'removed from the lab file; the pod still runs, and keeps its capture while its veth exists' };
      return {
        namespace: p.namespace,
        name: p.name,
        node: p.node,
        ip: p.ip,
        netns: p.netns,
        enrolled: e.enrolled,
        reason: e.reason,
        redirection,
        ports: p.pod.spec.containers.flatMap((c) => c.ports ?? []).map((x) => x.containerPort),
      };
    }),
    services: plan.services.map((s) => ({
      namespace: s.namespace,
      name: s.name,
      vip: s.vip,
      ports: s.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), port: p.port, protocol: p.protocol, endpoints: p.endpoints.map((e) => `${e.ip}:${e.port}`) })),
    })),
    components: state.processes.map((p) => {
      const node = plan.nodes.find((n) => n.name === p.node);
      return {
        component: p.component,
        node: p.node,
        address: p.address ?? null,
        netns: !node ? plan.controlPlane.netns : p.component === 'ztunnel' ? node.ztunnelNetns : node.netns,
        pid: p.pid,
        running: isOurs(p),
        log: p.log,
      };
    }),
    credentials,
    rootCertificate: existsSync(root) ? root : null,
    stateDir: labDir(name),
  };
}
