// The ztunnel's data path on a real two-node lab (root): pod-to-service traffic is HBONE (mutual
// TLS 1.3 to the destination pod's 15008, seen on the fabric, payload never in the clear) across
// nodes and handled in-process on one node; the access log and the metrics carry the SPIFFE
// identities and the service; app connections between two workloads share one mTLS connection; L4
// AuthorizationPolicy (principal, namespace, port, source address; ALLOW and DENY) and
// PeerAuthentication (STRICT, PERMISSIVE) are enforced on the destination; a policy edit closes an
// open connection it now denies; a service VIP spreads connections over endpoints on both nodes.
//
// Fixture test/fixtures/ztunnel.yaml (its header lists the pods and where they run). Clients are on
// node-1, targets on node-2 unless a test says otherwise, so their traffic crosses the fabric.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { privilegedSkipReason } from '../support/env.js';
import { EchoConnection, TestLab, ipOf, waitFor } from '../support/lab.js';
import {
  FabricCapture,
  TLS13,
  TLS_CLIENT_HELLO,
  TLS_SERVER_HELLO,
  clientHelloVersions,
  describeTcp,
  framesContaining,
  isSyn,
  serverHelloVersion,
  tcpSegments,
  tcpStreams,
  tlsHandshakeMessages,
  type CapturedFrame,
} from '../support/capture.js';
import { connectFrom, httpGetFrom } from '../../lab/connect.js';
import { netnsPath } from '../../lab/topology.js';
import { enrolledPods } from '../../lab/up.js';
import { ADMIN_PORT, type ConfigDump } from '../../agent/ztunnel/admin.js';
import type { EchoReply } from '../../lab/echo.js';
import type { LabPodPlan } from '../../lab/plan.js';

const skip = privilegedSkipReason();
const LAB = 'zt-lab';
const METRICS_PORT = 15020;
const HBONE_PORT = 15008;

/** What became of a connection attempt from a pod. */
type Outcome =
  | { kind: 'reply'; reply: EchoReply; local: string }
  /** Accepted, then closed (FIN or RST) before any byte came back: how a denial looks. */
  | { kind: 'closed'; how: string }
  /** The connect itself failed (refused, reset). */
  | { kind: 'refused'; how: string }
  | { kind: 'timeout' }
  /** Bytes came back but not an echo identity line. */
  | { kind: 'garbage'; text: string };

/** Connects from `from` to host:port, sends a line and waits for the echo's identity line. */
async function attempt(from: LabPodPlan, host: string, port: number, timeoutMs = 4000): Promise<Outcome> {
  let socket;
  try {
    socket = await connectFrom(netnsPath(from.netns), host, port, { timeoutMs });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return e.code === 'ETIMEDOUT' ? { kind: 'timeout' } : { kind: 'refused', how: e.code ?? e.message };
  }
  const local = `${socket.localAddress}:${socket.localPort}`;
  return new Promise<Outcome>((resolve) => {
    let text = '';
    const done = (o: Outcome): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => done(text ? { kind: 'garbage', text } : { kind: 'timeout' }), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl === -1) return;
      try {
        done({ kind: 'reply', reply: JSON.parse(text.slice(0, nl)) as EchoReply, local });
      } catch {
        done({ kind: 'garbage', text });
      }
    });
    socket.on('end', () => done(text ? { kind: 'garbage', text } : { kind: 'closed', how: 'FIN' }));
    socket.on('error', (err: NodeJS.ErrnoException) => done(text ? { kind: 'garbage', text } : { kind: 'closed', how: err.code ?? err.message }));
    socket.on('close', () => done(text ? { kind: 'garbage', text } : { kind: 'closed', how: 'close' }));
    socket.write(`probe-${randomBytes(4).toString('hex')}\n`);
  });
}

function show(o: Outcome): string {
  return o.kind === 'reply' ? `an answer from ${o.reply.namespace}/${o.reply.pod}` : JSON.stringify(o);
}

async function assertAllowed(from: LabPodPlan, to: LabPodPlan, port = 8080): Promise<void> {
  const o = await attempt(from, to.ip, port);
  assert.ok(o.kind === 'reply' && o.reply.pod === to.name && o.reply.namespace === to.namespace, `${from.key} -> ${to.key}:${port} must be allowed, got ${show(o)}`);
}

/** Denied: the connection is closed or reset (or refused) without a byte of data; not a hang. */
async function assertDenied(from: LabPodPlan, to: LabPodPlan, port = 8080): Promise<void> {
  const o = await attempt(from, to.ip, port);
  assert.ok(o.kind === 'closed' || o.kind === 'refused', `${from.key} -> ${to.key}:${port} must be denied (connection closed or reset without data), got ${show(o)}`);
}

/** Where the frames carrying `needle` went, for assertion messages. */
function inTheClear(frames: CapturedFrame[], needle: string): string[] {
  return framesContaining(frames, needle).map((f) => (f.tcp ? `${f.tcp.src}:${f.tcp.srcPort} > ${f.tcp.dst}:${f.tcp.dstPort}` : 'a frame that is not IPv4 TCP'));
}

/** A Prometheus text sample. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The sum of `name` over the samples whose labels include `match`. */
function total(samples: Sample[], name: string, match: Record<string, string>): number {
  return samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

describe('ztunnel: HBONE, telemetry, pooling and L4 policy on a two-node lab', { skip }, () => {
  let lab: TestLab;

  before(async () => {
    lab = await TestLab.up('ztunnel.yaml', LAB);
    // Lab up waits for redirection; wait too for every ztunnel to know every enrolled pod as HBONE
    // and to hold the fixture's policies, so no test races the initial configuration.
    const enrolled = lab.plan.nodes.flatMap((n) => enrolledPods(lab.plan, n.name));
    for (const node of lab.plan.nodes) {
      await waitFor(`${node.name}: every enrolled pod as HBONE and the fixture's policies`, async () => {
        const d = await dump(node.name);
        const hbone = new Set((d.workloads ?? []).filter((w) => w.protocol === 'HBONE').map((w) => `${w.namespace}/${w.name}`));
        const policies = new Set((d.policies ?? []).map((p) => `${p.namespace}/${p.name}`));
        return enrolled.every((k) => hbone.has(k)) && ['mesh/by-principal', 'mesh/by-namespace', 'mesh/by-port'].every((p) => policies.has(p));
      }, 30_000);
    }
  });

  after(async () => {
    await lab?.down();
  });

  const node = (name: string) => lab.plan.nodes.find((n) => n.name === name)!;
  const service = (key: string) => lab.plan.services.find((s) => s.key === key)!;
  const spiffe = (ns: string, sa: string) => `spiffe://${lab.plan.trustDomain}/ns/${ns}/sa/${sa}`;

  async function dump(nodeName: string): Promise<ConfigDump> {
    const r = await httpGetFrom(netnsPath(node(nodeName).ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump');
    return JSON.parse(r.body) as ConfigDump;
  }

  async function metrics(nodeName: string): Promise<Sample[]> {
    const n = node(nodeName);
    const r = await httpGetFrom(netnsPath(n.netns), n.ztunnelIP, METRICS_PORT, '/metrics');
    assert.equal(r.status, 200, `GET /metrics on ${nodeName}'s ztunnel`);
    return parsePrometheus(r.body);
  }

  /** Appends a document to the lab file; returns the function that removes it again. */
  function addDoc(doc: string): () => void {
    const text = `---\n${doc.trim()}\n`;
    lab.editFile((t) => `${t.endsWith('\n') ? t : `${t}\n`}${text}`);
    return () => lab.editFile((t) => t.replace(text, ''));
  }

  /** Waits until `nodeName`'s ztunnel holds policy ns/name attached to `workload` (or, with
   * present=false, no longer holds it). */
  async function policyOn(nodeName: string, key: string, workload: string, present = true): Promise<void> {
    const [ns, name] = key.split('/');
    await waitFor(`${nodeName}'s ztunnel to ${present ? 'get' : 'drop'} policy ${key}`, async () => {
      const d = await dump(nodeName);
      const held = (d.policies ?? []).some((p) => p.namespace === ns && p.name === name);
      const attached = (d.workloads ?? []).find((w) => `${w.namespace}/${w.name}` === workload)?.authorizationPolicies.includes(key) ?? false;
      return present ? held && attached : !held && !attached;
    }, 15_000);
  }

  /** The access-log lines a ztunnel wrote after `since` lines. */
  const accessSince = (nodeName: string, since: number) => lab.accessLog(nodeName).slice(since);

  /** Asserts the capture shows HBONE to `pod`: a SYN to its 15008, a ClientHello offering TLS 1.3
   * and a ServerHello selecting it, and nothing to the app port in the clear. */
  function assertHbone(frames: CapturedFrame[], pod: LabPodPlan, appPort: number): void {
    const segments = tcpSegments(frames);
    const flows = describeTcp(frames);
    assert.ok(segments.some((s) => isSyn(s) && s.dst === pod.ip && s.dstPort === HBONE_PORT), `a TCP connection to ${pod.ip}:${HBONE_PORT} on the fabric; saw:\n${flows}`);
    assert.ok(!segments.some((s) => (s.dst === pod.ip && s.dstPort === appPort) || (s.src === pod.ip && s.srcPort === appPort)), `nothing to ${pod.ip}:${appPort} in the clear; saw:\n${flows}`);
    const streams = tcpStreams(frames).filter((s) => s.fromStart);
    const toHbone = streams.filter((s) => s.dst === pod.ip && s.dstPort === HBONE_PORT);
    const hellos = toHbone.map((s) => tlsHandshakeMessages(s.data)[0]).filter((m) => m?.type === TLS_CLIENT_HELLO);
    assert.ok(hellos.length > 0, `a TLS ClientHello opens a stream to ${pod.ip}:${HBONE_PORT}`);
    assert.ok(hellos.every((h) => clientHelloVersions(h!.body).includes(TLS13)), 'the ClientHello offers TLS 1.3');
    const back = streams.filter((s) => s.src === pod.ip && s.srcPort === HBONE_PORT);
    const serverHellos = back.map((s) => tlsHandshakeMessages(s.data)[0]).filter((m) => m?.type === TLS_SERVER_HELLO);
    assert.ok(serverHellos.length > 0, `a TLS ServerHello answers from ${pod.ip}:${HBONE_PORT}`);
    for (const h of serverHellos) assert.equal(serverHelloVersion(h!.body), TLS13, 'the ServerHello selects TLS 1.3 (supported_versions 0x0304)');
  }

  test('pod to a service on the other node is HBONE: TLS 1.3 to the pod\'s 15008 on the fabric, the payload never in the clear', async () => {
    const client = lab.pod('mesh/client');
    const server = lab.pod('mesh/server');
    const vip = service('mesh/server').vip!;
    const marker = `ambit-marker-${randomBytes(16).toString('hex')}`;
    const capture = await FabricCapture.start(lab.plan);
    let frames: CapturedFrame[];
    try {
      const c = await EchoConnection.open(client, vip, 80);
      assert.equal(c.identity.pod, 'server', 'the service\'s only endpoint answered');
      await c.roundTrip(marker);
      await c.roundTrip(`${marker}-again`);
      c.close();
    } finally {
      frames = await capture.stop();
    }
    assert.ok(frames.length > 0, `the capture saw the fabric (${capture.messages.trim()})`);
    assert.deepEqual(inTheClear(frames, marker), [], 'the payload never crosses the fabric in the clear');
    assert.ok(!tcpSegments(frames).some((s) => s.dst === vip || s.src === vip), 'the VIP never reaches the fabric: ztunnel picked the endpoint');
    assertHbone(frames, server, 8080);
  });

  test('pod to a service on the same node stays off the fabric and is still mutual TLS with the same checks', async () => {
    const client = lab.pod('mesh/client');
    const local = lab.pod('mesh/local');
    const vip = service('mesh/local').vip!;
    const marker = `ambit-local-${randomBytes(16).toString('hex')}`;
    const since = lab.accessLog('node-1').length;
    const capture = await FabricCapture.start(lab.plan);
    let frames: CapturedFrame[];
    let local4 = '';
    try {
      const c = await EchoConnection.open(client, vip, 80);
      local4 = c.local;
      assert.equal(c.identity.pod, 'local');
      await c.roundTrip(marker);
      c.close();
    } finally {
      frames = await capture.stop();
    }
    assert.deepEqual(inTheClear(frames, marker), [], 'the payload is not on the fabric');
    assert.ok(!tcpSegments(frames).some((s) => [s.src, s.dst].some((a) => a === local.ip || a === vip)), `nothing to or from ${local.ip} or the VIP on the fabric; saw:\n${describeTcp(frames)}`);
    const out = await waitFor(`node-1's outbound line for ${local4}`, () =>
      accessSince('node-1', since).find((x) => x.msg === 'connection complete' && x.direction === 'outbound' && x['src.addr'] === local4),
    );
    assert.equal(out['dst.hbone_addr'], `${local.ip}:8080`, 'the chosen endpoint and target port');
    assert.equal(out['dst.service'], 'local.mesh.svc.cluster.local');
    assert.equal(out['dst.workload'], 'local');
    assert.equal(out['src.identity'], spiffe('mesh', 'client'), 'mutual TLS identities on the same node too');
    assert.equal(out['dst.identity'], spiffe('mesh', 'local'));
  });

  test('the access log on both nodes names the workloads, their SPIFFE identities, the service and the HBONE address', async () => {
    const client = lab.pod('mesh/client');
    const server = lab.pod('mesh/server');
    const vip = service('mesh/server').vip!;
    const since1 = lab.accessLog('node-1').length;
    const since2 = lab.accessLog('node-2').length;
    const payload = `access-${randomBytes(64).toString('hex')}`;
    const c = await EchoConnection.open(client, vip, 80);
    await c.roundTrip(payload);
    c.close();

    const outbound = await waitFor('node-1\'s outbound line', () =>
      accessSince('node-1', since1).find((l) => l.msg === 'connection complete' && l['src.addr'] === c.local),
    );
    assert.equal(outbound.direction, 'outbound');
    assert.equal(outbound['src.workload'], 'client');
    assert.equal(outbound['src.namespace'], 'mesh');
    assert.equal(outbound['src.identity'], spiffe('mesh', 'client'));
    assert.equal(outbound['dst.hbone_addr'], `${server.ip}:8080`, 'the CONNECT authority is the chosen pod and target port');
    assert.equal(ipOf(outbound['dst.addr'] ?? ''), server.ip, 'the connection went to the pod, not the VIP');
    assert.equal(outbound['dst.service'], 'server.mesh.svc.cluster.local');
    assert.equal(outbound['dst.workload'], 'server');
    assert.equal(outbound['dst.namespace'], 'mesh');
    assert.equal(outbound['dst.identity'], spiffe('mesh', 'server'));
    assert.ok(Number(outbound.bytes_sent) > payload.length && Number(outbound.bytes_recv) > payload.length, `bytes counted both ways: ${outbound.bytes_sent} sent, ${outbound.bytes_recv} received`);
    assert.match(String(outbound.duration), /^\d+ms$/);

    const inbound = await waitFor('node-2\'s inbound line', () =>
      accessSince('node-2', since2).find((l) => l.msg === 'connection complete' && l.direction === 'inbound' && l['dst.hbone_addr'] === `${server.ip}:8080`),
    );
    assert.equal(ipOf(inbound['src.addr'] ?? ''), client.ip, 'the destination sees the client pod\'s address');
    assert.equal(inbound['src.workload'], 'client');
    assert.equal(inbound['src.namespace'], 'mesh');
    assert.equal(inbound['src.identity'], spiffe('mesh', 'client'), 'the identity proven by the client certificate');
    assert.equal(inbound['dst.service'], 'server.mesh.svc.cluster.local');
    assert.equal(inbound['dst.workload'], 'server');
    assert.equal(inbound['dst.namespace'], 'mesh');
    assert.equal(inbound['dst.identity'], spiffe('mesh', 'server'));
    assert.ok(Number(inbound.bytes_sent) > payload.length && Number(inbound.bytes_recv) > payload.length, `bytes counted both ways: ${inbound.bytes_sent} sent, ${inbound.bytes_recv} received`);
    assert.match(String(inbound.duration), /^\d+ms$/);
  });

  test('metrics on both ztunnels count the connection with the identities, the service and mutual_tls', async () => {
    const client = lab.pod('mesh/client');
    const vip = service('mesh/server').vip!;
    const common = {
      source_workload: 'client',
      source_workload_namespace: 'mesh',
      source_principal: spiffe('mesh', 'client'),
      destination_service: 'server.mesh.svc.cluster.local',
      destination_service_namespace: 'mesh',
      destination_service_name: 'server',
      destination_workload: 'server',
      destination_workload_namespace: 'mesh',
      destination_principal: spiffe('mesh', 'server'),
      request_protocol: 'tcp',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
    };
    const sides = [
      { node: 'node-1', labels: { ...common, reporter: 'source' } },
      { node: 'node-2', labels: { ...common, reporter: 'destination' } },
    ];
    const counters = ['istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total', 'istio_tcp_received_bytes_total', 'istio_tcp_sent_bytes_total'];
    const snapshot = async (n: string, labels: Record<string, string>) => {
      const s = await metrics(n);
      return Object.fromEntries(counters.map((c) => [c, total(s, c, labels)]));
    };
    const before = await Promise.all(sides.map((s) => snapshot(s.node, s.labels)));
    const payload = `metrics-${randomBytes(200).toString('hex')}`;
    const c = await EchoConnection.open(client, vip, 80);
    await c.roundTrip(payload);
    c.close();
    for (const [i, side] of sides.entries()) {
      let now = before[i]!;
      const counted = async () => {
        now = await snapshot(side.node, side.labels);
        return now['istio_tcp_connections_closed_total']! > before[i]!['istio_tcp_connections_closed_total']! &&
          now['istio_tcp_received_bytes_total']! - before[i]!['istio_tcp_received_bytes_total']! >= payload.length;
      };
      await waitFor(`${side.node} (reporter ${side.labels.reporter}) to count the closed connection`, counted).catch(() => undefined);
      const delta = (c: string) => now[c]! - before[i]![c]!;
      assert.ok(delta('istio_tcp_connections_opened_total') >= 1, `${side.node}: opened counted with ${JSON.stringify(side.labels)}`);
      assert.ok(delta('istio_tcp_connections_closed_total') >= 1, `${side.node}: closed counted`);
      assert.ok(delta('istio_tcp_received_bytes_total') >= payload.length, `${side.node}: client-to-server bytes counted (${delta('istio_tcp_received_bytes_total')})`);
      assert.ok(delta('istio_tcp_sent_bytes_total') >= payload.length, `${side.node}: server-to-client bytes counted (${delta('istio_tcp_sent_bytes_total')})`);
    }
  });

  test('twenty connections between two workloads share one mTLS connection', async () => {
    // mesh/pooler talks to mesh/server only here: its pool towards server starts empty.
    const pooler = lab.pod('mesh/pooler');
    const server = lab.pod('mesh/server');
    const since2 = lab.accessLog('node-2').length;
    const capture = await FabricCapture.start(lab.plan);
    let frames: CapturedFrame[];
    const conns: EchoConnection[] = [];
    try {
      conns.push(await EchoConnection.open(pooler, server.ip, 8080));
      // The rest while the first is open: streams multiplexed on the pooled connection.
      conns.push(...(await Promise.all(Array.from({ length: 19 }, () => EchoConnection.open(pooler, server.ip, 8080)))));
      await Promise.all(conns.map((c, i) => c.roundTrip(`pooled-${i}`)));
      for (const c of conns) assert.equal(c.identity.pod, 'server');
    } finally {
      for (const c of conns) c.close();
      frames = await capture.stop();
    }
    const syns = tcpSegments(frames).filter((s) => isSyn(s) && s.dst === server.ip);
    assert.deepEqual(
      syns.map((s) => `${s.dst}:${s.dstPort}`),
      [`${server.ip}:${HBONE_PORT}`],
      `one connection opened towards ${server.ip} on the fabric, to ${HBONE_PORT}; saw:\n${describeTcp(frames)}`,
    );
    const carried = await waitFor('node-2 to log the twenty connections', () => {
      const l = accessSince('node-2', since2).filter((x) => x.msg === 'connection complete' && x.direction === 'inbound' && x['src.identity'] === spiffe('mesh', 'pooler'));
      return l.length >= 20 ? l : null;
    }).catch(() => []);
    assert.equal(carried.length, 20, 'twenty app connections, each its own stream, arrived over mTLS from mesh/pooler');
  });

  test('L4 policy by principal (ALLOW): the named service account gets in, another is refused', async () => {
    const target = lab.pod('mesh/by-principal');
    await assertAllowed(lab.pod('mesh/client'), target);
    await assertDenied(lab.pod('mesh/intruder'), target);
    await assertAllowed(lab.pod('mesh/intruder'), lab.pod('mesh/server')); // not a broken client
  });

  test('L4 policy by namespace (DENY): the named namespace is refused, another gets in', async () => {
    const target = lab.pod('mesh/by-namespace');
    await assertAllowed(lab.pod('mesh/client'), target);
    await assertDenied(lab.pod('friends/client'), target);
    await assertAllowed(lab.pod('friends/client'), lab.pod('mesh/server'));
  });

  test('L4 policy by port (DENY): the named target port is refused, another port of the same pod answers', async () => {
    const target = lab.pod('mesh/by-port');
    await assertAllowed(lab.pod('mesh/client'), target, 8080);
    await assertDenied(lab.pod('mesh/client'), target, 9090);
  });

  test('L4 policy by source address (ALLOW ipBlocks): the client pod\'s address gets in, another is refused', async () => {
    const client = lab.pod('mesh/client');
    const target = lab.pod('mesh/by-ip');
    // Before the policy both clients get in.
    await assertAllowed(lab.pod('mesh/intruder'), target);
    const remove = addDoc(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: by-ip
  namespace: mesh
spec:
  selector:
    matchLabels:
      app: by-ip
  action: ALLOW
  rules:
    - from:
        - source:
            ipBlocks: ["${client.ip}/32"]
`);
    try {
      await policyOn('node-2', 'mesh/by-ip', 'mesh/by-ip');
      await assertAllowed(client, target);
      await assertDenied(lab.pod('mesh/intruder'), target);
    } finally {
      remove();
      await policyOn('node-2', 'mesh/by-ip', 'mesh/by-ip', false);
    }
  });

  test('PERMISSIVE lets a plaintext client from outside the mesh in', async () => {
    const door = lab.pod('lenient/door');
    await assertAllowed(lab.pod('plain/outsider'), door);
    await assertAllowed(lab.pod('mesh/client'), door);
  });

  test('STRICT refuses a plaintext client from outside the mesh; mesh clients still get in', async () => {
    const vault = lab.pod('strict/vault');
    await assertDenied(lab.pod('plain/outsider'), vault);
    await assertAllowed(lab.pod('mesh/client'), vault);
    await assertAllowed(lab.pod('plain/outsider'), lab.pod('lenient/door')); // the outsider is not broken
  });

  test('a service VIP spreads connections over endpoints on both nodes', async () => {
    const echo = service('mesh/echo');
    const nodesOf = new Map(echo.ports[0]!.endpoints.map((e) => [e.pod, e.node]));
    assert.deepEqual(new Set(nodesOf.values()), new Set(['node-1', 'node-2']), 'precondition (fixture): echo has replicas on both nodes');
    const client = lab.pod('mesh/client');
    const reached = new Map<string, number>();
    for (let batch = 0; batch < 3; batch++) {
      const conns = await Promise.all(Array.from({ length: 10 }, () => EchoConnection.open(client, echo.vip!, 80)));
      for (const c of conns) {
        const key = `${c.identity.namespace}/${c.identity.pod}`;
        reached.set(key, (reached.get(key) ?? 0) + 1);
        c.close();
      }
    }
    for (const key of reached.keys()) assert.ok(nodesOf.has(key), `${key} is an endpoint of the service`);
    const nodes = new Set([...reached.keys()].map((k) => nodesOf.get(k)));
    assert.deepEqual(nodes, new Set(['node-1', 'node-2']), `30 connections reached endpoints on both nodes: ${JSON.stringify(Object.fromEntries(reached))}`);
  });

  test('a policy change closes an open connection it now denies, and leaves others be', async () => {
    const client = lab.pod('mesh/client');
    const intruder = lab.pod('mesh/intruder');
    const server = lab.pod('mesh/server');
    const doomed = await EchoConnection.open(client, server.ip, 8080);
    const spared = await EchoConnection.open(intruder, server.ip, 8080);
    await doomed.roundTrip('before-the-policy');
    const closed = new Promise<void>((resolve) => {
      doomed.socket.once('end', () => resolve());
      doomed.socket.once('close', () => resolve());
      doomed.socket.once('error', () => resolve());
    });
    const remove = addDoc(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: cut-client
  namespace: mesh
spec:
  selector:
    matchLabels:
      app: server
  action: DENY
  rules:
    - from:
        - source:
            principals: ["cluster.local/ns/mesh/sa/client"]
`);
    try {
      await policyOn('node-2', 'mesh/cut-client', 'mesh/server');
      const outcome = await Promise.race([closed.then(() => 'closed'), new Promise<string>((r) => setTimeout(() => r('still open'), 10_000))]);
      assert.equal(outcome, 'closed', 'the open connection the new policy denies is closed within seconds of the policy reaching the ztunnel');
      await assertDenied(client, server);
      await spared.roundTrip('after-the-policy'); // a connection the policy does not match stays up
    } finally {
      doomed.close();
      spared.close();
      remove();
      await policyOn('node-2', 'mesh/cut-client', 'mesh/server', false);
    }
    await assertAllowed(client, server); // removing the policy lets the client in again
  });
});
