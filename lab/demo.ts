// What `npm start` shows after the demo lab is up: real requests from the demo's client pods to the
// echo service, and what each one proves about capture, read from the echo replies and the
// ztunnels' access logs. Then the commands to try by hand.
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { PROJECT_ROOT } from '../native/index.js';
import { connectFrom, httpGetFrom } from './connect.js';
import { ADMIN_PORT, type ConfigDump } from '../agent/ztunnel/admin.js';
import type { EchoReply } from './echo.js';
import type { LabPlan, LabPodPlan } from './plan.js';
import { paths } from './state.js';
import { netnsPath } from './topology.js';
import { sleep } from './processes.js';
import { enrolledPods } from './up.js';
import { HEALTH_PORT } from '../controlplane/controlplane.js';
import type { PolicyStatus } from '../controlplane/model/types.js';

interface AccessLine {
  msg: string;
  time?: string;
  direction?: string;
  error?: string;
  'src.addr'?: string;
  'src.identity'?: string;
  'dst.addr'?: string;
  'dst.hbone_addr'?: string;
  'dst.identity'?: string;
  'dst.service'?: string;
}

/** One HTTP/1.1 GET from inside a pod's namespace; resolves with the echo's JSON and our local address. */
export async function echoGet(netns: string, host: string, port: number): Promise<{ reply: EchoReply; local: string }> {
  const socket = await connectFrom(netns, host, port);
  const local = `${socket.localAddress}:${socket.localPort}`;
  socket.end(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  const chunks: Buffer[] = [];
  for await (const c of socket) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  return { reply: JSON.parse(body) as EchoReply, local };
}

function accessLines(plan: LabPlan, node: string): AccessLine[] {
  try {
    return readFileSync(paths.log(plan.name, 'ztunnel', node), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AccessLine & { target?: string })
      .filter((l) => l.target === 'access');
  } catch {
    return [];
  }
}

function whoIs(plan: LabPlan, ip: string): string {
  const pod = plan.pods.find((p) => p.ip === ip);
  if (pod) return `pod ${pod.key}`;
  const zt = plan.nodes.find((n) => n.ztunnelIP === ip);
  if (zt) return `the ztunnel of ${zt.name}`;
  const node = plan.nodes.find((n) => n.fabricIP === ip || n.gatewayIP === ip);
  return node ? `node ${node.name}` : ip;
}

/** Which certificates each node's ztunnel holds, read from its admin endpoint. */
async function identitySection(plan: LabPlan): Promise<string[]> {
  const out = [`Identity: the control plane's CA (${plan.controlPlane.ip}:15012) signed each ztunnel's workload certificates, asked for with the node's credential.`];
  for (const node of plan.nodes) {
    const r = await httpGetFrom(netnsPath(node.ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump').catch(() => null);
    const certs = r?.status === 200 ? (JSON.parse(r.body) as ConfigDump).certificates : [];
    if (certs.length === 0) out.push(`  ${node.name}: no enrolled pods, no certificates`);
    for (const c of certs) {
      const leaf = c.certChain[0];
      out.push(`  ${node.name}: ${c.identity}  ${c.state}${leaf ? `, serial ${leaf.serialNumber.slice(0, 12)}…, valid until ${leaf.expirationTime}` : ''}`);
    }
  }
  out.push('');
  return out;
}

function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * What the control plane told each ztunnel over delta xDS (read back from the ztunnel's admin
 * endpoint), and where each AuthorizationPolicy is enforced (the control plane's own report).
 */
async function discoverySection(plan: LabPlan): Promise<string[]> {
  const out = [`Discovery: the control plane (${plan.controlPlane.ip}:15012) streams Istio's workload API over delta xDS to every ztunnel.`];
  for (const node of plan.nodes) {
    const r = await httpGetFrom(netnsPath(node.ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump').catch(() => null);
    const d = r?.status === 200 ? (JSON.parse(r.body) as ConfigDump) : null;
    if (!d?.xds?.ready) {
      out.push(`  ${node.name}: no initial state yet`);
      continue;
    }
    const workloads = d.workloads ?? [];
    const hbone = workloads.filter((w) => w.protocol === 'HBONE').map((w) => `${w.namespace}/${w.name}`);
    out.push(
      `  ${node.name}'s ztunnel knows ${count(workloads.length, 'workload')} (every node's), ${count(d.services?.length ?? 0, 'service')}, ${count(d.policies?.length ?? 0, 'L4 policy', 'L4 policies')}; ` +
        `HBONE (enrolled, redirection confirmed by their node's agent): ${hbone.sort().join(', ') || 'none'}`,
    );
  }
  const r = await httpGetFrom(netnsPath(plan.controlPlane.netns), '127.0.0.1', HEALTH_PORT, '/debug/policies').catch(() => null);
  const policies = r?.status === 200 ? (JSON.parse(r.body) as PolicyStatus[]) : [];
  for (const p of policies) out.push(`  policy ${p.namespace}/${p.name}: enforced by ${p.enforcedBy.join(', ') || 'nowhere'}; ${p.summary}`);
  out.push('');
  return out;
}

/** One GET from a client pod to the service, and what each ztunnel did with it (from the access logs). */
async function demoRequest(plan: LabPlan, client: LabPodPlan, node: string, enrolled: boolean, vip: string, port: number): Promise<string[]> {
  const out: string[] = [];
  const started = new Date().toISOString();
  let result: { reply: EchoReply; local: string } | Error;
  try {
    result = await echoGet(netnsPath(client.netns), vip, port);
  } catch (err) {
    result = err as Error;
  }
  await sleep(200);
  const recent = (n: string) => accessLines(plan, n).filter((l) => (l.time ?? '') >= started);
  const everywhere = plan.nodes.flatMap((n) => recent(n.name).map((l) => ({ ...l, node: n.name })));
  const outbound = recent(node).find((l) => l.direction === 'outbound' && l['src.addr']?.startsWith(`${client.ip}:`));
  const inbound = everywhere.find((l) => l.direction === 'inbound' && l['src.addr']?.startsWith(`${client.ip}:`));
  if (result instanceof Error) {
    out.push(`  ${client.key} (${enrolled ? 'enrolled' : 'not enrolled'}) → refused (${result.message})`);
    if (inbound?.error) out.push(`      ${inbound.node}'s ztunnel, for ${inbound['dst.addr']}: ${inbound.error}${inbound['src.identity'] ? ` (peer ${inbound['src.identity']})` : ' (plaintext: no identity)'}`);
    return out;
  }
  const { reply } = result;
  out.push(`  ${client.key} (${enrolled ? 'enrolled' : 'not enrolled'}) → answered by ${reply.namespace}/${reply.pod} on ${reply.node}, which saw ${whoIs(plan, reply.source.split(':')[0]!)} (${reply.source})`);
  if (!outbound) {
    out.push('      not captured (the pod is not enrolled): plaintext, straight to kube-proxy and the network');
  } else if (outbound['dst.hbone_addr'] && reply.node !== node) {
    out.push(`      ${node}'s ztunnel: HBONE (mTLS 1.3) to ${outbound['dst.addr']}, CONNECT ${outbound['dst.hbone_addr']}, as ${outbound['src.identity']}, peer proved ${outbound['dst.identity']}`);
  } else if (outbound['dst.hbone_addr']) {
    out.push(`      ${node}'s ztunnel: same node, handed to its inbound side in-process (no network hop), as ${outbound['src.identity']}`);
  } else {
    out.push(`      ${node}'s ztunnel: plain TCP to ${outbound['dst.addr']} (not an HBONE destination)`);
  }
  if (inbound) out.push(`      ${inbound.node}'s ztunnel: policy allowed ${inbound['src.identity'] ?? 'the plaintext client'} → ${inbound['dst.service'] ?? inbound['dst.addr']}`);
  return out;
}

/** How to run the CLI from where the user is: `./bin/ambit` in the checkout. */
function ambitCommand(): string {
  const rel = relative(process.cwd(), join(PROJECT_ROOT, 'bin/ambit'));
  return rel.startsWith('.') || rel.startsWith('/') ? rel : `./${rel}`;
}

export async function demoWalkthrough(plan: LabPlan): Promise<string> {
  const svc = plan.services.find((s) => s.vip && s.ports.length);
  const clients = plan.pods.filter((p) => p.pod.spec.containers.every((c) => !c.ports?.length));
  const enrolled = new Set(plan.nodes.flatMap((n) => enrolledPods(plan, n.name)));
  const out: string[] = [];
  if (svc) {
    out.push(`Traffic, live: each client pod asks the ${svc.namespace}/${svc.name} service (${svc.vip}:${svc.ports[0]!.port}) who answered.`);
    for (const client of clients) {
      const node = plan.nodes.find((n) => n.name === client.node)!;
      out.push(...(await demoRequest(plan, client, node.name, enrolled.has(client.key), svc.vip!, svc.ports[0]!.port)));
    }
    out.push('');
  }
  out.push(...(await discoverySection(plan)));
  out.push(...(await identitySection(plan)));
  const first = clients.find((c) => enrolled.has(c.key)) ?? clients[0];
  const host = svc ? `${svc.name}.${svc.namespace}` : 'SERVICE.NAMESPACE';
  const ambit = ambitCommand();
  out.push('Try:');
  if (first) out.push(`  ${ambit} lab exec ${first.key} -- curl -s http://${host}/     # from a pod; service names resolve`);
  out.push(`  ${ambit} lab status [-o json]          # nodes, pods, enrolment, components`);
  out.push(`  ${ambit} check --node ${plan.nodes[0]!.name}          # preflight, and the node's pinned tcx links`);
  out.push(`  ${ambit} ztunnel-config certificates --node ${plan.nodes[0]!.name}   # the workload certificates a ztunnel holds`);
  out.push(`  ${ambit} ztunnel-config workloads --node ${plan.nodes[0]!.name}      # what the ztunnel learnt over xDS (also: services, policies)`);
  out.push(`  ${ambit} ztunnel-config connections --node ${plan.nodes[0]!.name}    # open connections (run a long curl beside it)`);
  out.push(`  ip netns exec ${plan.nodes[0]!.netns} curl -s ${plan.nodes[0]!.ztunnelIP}:15020/metrics | grep istio_tcp   # Istio's metrics`);
  out.push(`  ${ambit} mesh-config policies            # where each AuthorizationPolicy is enforced, what was dropped`);
  out.push(`  ${ambit} mesh-config proxies             # every connected ztunnel and whether it ACKed the latest push`);
  out.push(`  tail -f ${paths.log(plan.name, 'ztunnel', plan.nodes[0]!.name)}     # one access-log line per connection and side`);
  out.push(`  edit ${plan.source}: remove a dataplane-mode label; new connections go direct, open ones stay`);
  out.push(`  ${ambit} lab down                      # removes everything`);
  return out.join('\n');
}
