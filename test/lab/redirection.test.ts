// The redirection datapath on a real two-node lab (root): capture of enrolled pods' traffic in both
// directions, with the original destination and client address recovered; label changes at
// runtime; agent crash and restart; ztunnel outage (fail-closed and fail-open); complete removal.
//
// Fixture test/fixtures/two-node.yaml. node-1: mesh/client, mesh/echo-1, mesh/optout (opted out),
// plain/client. node-2: mesh/echo-0, mesh/server, plain/server. `mesh` is ambient, `plain` is not.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { privilegedSkipReason } from '../support/env.js';
import { EchoConnection, TestLab, ipOf, waitFor } from '../support/lab.js';
import { killComponent, restartComponent } from '../../lab/components.js';
import { closeFd, linkFdById, linkInfo, objGet, progFdById, progInfo, tcxQuery } from '../../native/index.js';
import { netnsPath } from '../../lab/topology.js';
import { paths, readState } from '../../lab/state.js';
import { isOurs } from '../../lab/processes.js';
import { run } from '../../mesh/exec.js';
import { connectFrom, httpGetFrom } from '../../lab/connect.js';
import { ADMIN_PORT, type ConfigDump } from '../../agent/ztunnel/admin.js';
import type { EchoReply } from '../../lab/echo.js';
import type { LabPodPlan } from '../../lab/plan.js';

/** GET / with Connection: close from a fixed local port; resolves once the socket is closed. */
async function httpGetClose(from: LabPodPlan, host: string, port: number, localPort: number): Promise<EchoReply> {
  const socket = await connectFrom(netnsPath(from.netns), host, port, { localPort, timeoutMs: 3000 });
  socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  let text = '';
  for await (const chunk of socket) text += String(chunk);
  socket.end();
  if (!socket.closed) await new Promise((r) => socket.once('close', r));
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as EchoReply;
}

const skip = privilegedSkipReason();
const LAB = 't-redirect';
/** The ids of the links and programs pinned for a lab: what must not outlive `lab down`. */
function pinnedIds(lab: string, nodes: string[]): { links: number[]; programs: number[] } {
  const links: number[] = [];
  const programs: number[] = [];
  for (const node of nodes) {
    const root = paths.bpfRoot(lab, node);
    for (const pin of readdirSync(join(root, 'links'))) {
      const fd = objGet(join(root, 'links', pin));
      links.push(linkInfo(fd).id);
      closeFd(fd);
    }
    for (const prog of ['from_pod', 'to_pod', 'proxy_in']) {
      const fd = objGet(join(root, `prog_${prog}`));
      programs.push(progInfo(fd).id);
      closeFd(fd);
    }
  }
  return { links, programs };
}

describe('redirection on a two-node lab', { skip }, () => {
  let lab: TestLab;

  before(async () => {
    lab = await TestLab.up('two-node.yaml', LAB);
  });

  after(async () => {
    await lab?.down();
  });

  const ztunnelIP = (node: string) => lab.plan.nodes.find((n) => n.name === node)!.ztunnelIP;

  test('outbound from an enrolled pod to a pod on the other node passes the source ztunnel, original destination recovered', async () => {
    const client = lab.pod('mesh/client');
    const server = lab.pod('mesh/server');
    // The server is tunnelled once the control plane has heard from node-2's agent that it is captured.
    await waitFor('node-1 to know mesh/server as HBONE', async () => {
      const r = await httpGetFrom(netnsPath(lab.plan.nodes[0]!.ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump');
      return (JSON.parse(r.body) as ConfigDump).workloads?.some((w) => w.name === 'server' && w.namespace === 'mesh' && w.protocol === 'HBONE');
    }, 20_000);
    const c = await EchoConnection.open(client, server.ip, 8080);
    c.close();
    const line = await waitFor('the outbound access log line', () =>
      lab.accessLog('node-1').find((l) => l.msg === 'connection complete' && l.direction === 'outbound' && l['src.addr'] === c.local),
    );
    assert.equal(line['dst.hbone_addr'], `${server.ip}:8080`, 'the original destination is recovered from the accepted socket');
    // The server is enrolled too: node-2's ztunnel took the inbound leg, and the server still saw the client.
    await waitFor('the inbound access log line on node-2', () => lab.accessLog('node-2').find((l) => l.direction === 'inbound' && l['src.addr'] === c.local));
    assert.equal(ipOf(c.identity.source), client.ip, 'the client address (not its port) is preserved to the server');
  });

  test('outbound to a service is captured before kube-proxy: ztunnel sees the VIP', async () => {
    const svc = lab.plan.services.find((s) => s.key === 'mesh/echo')!;
    const c = await EchoConnection.open(lab.pod('mesh/client'), svc.vip!, 80);
    c.close();
    const line = await waitFor('the outbound access log line', () =>
      lab.accessLog('node-1').find((l) => l.msg === 'connection complete' && l.direction === 'outbound' && l['src.addr'] === c.local),
    );
    assert.equal(line['dst.service'], 'echo.mesh.svc.cluster.local', 'ztunnel resolved the VIP to its service itself');
    assert.match(c.identity.pod, /^echo-[01]$/);
    assert.equal(line['dst.hbone_addr'] ?? line['dst.addr'], c.identity.destination, 'and picked the endpoint the connection reached');
  });

  test('inbound to an enrolled pod from a non-enrolled pod lands on 15006 with the real client address', async () => {
    const client = lab.pod('plain/client');
    const server = lab.pod('mesh/server');
    const c = await EchoConnection.open(client, server.ip, 8080);
    c.close();
    const line = await waitFor('the inbound access log line', () =>
      lab.accessLog('node-2').find((l) => l.msg === 'connection complete' && l['src.addr'] === c.local),
    );
    assert.equal(line.direction, 'inbound');
    assert.equal(ipOf(line['src.addr']!), client.ip, 'ztunnel sees the real client address');
    assert.equal(line['dst.addr'], `${server.ip}:8080`);
    assert.equal(line['src.identity'], undefined, 'plaintext carries no identity');
    assert.ok(!lab.accessLog('node-1').some((l) => l['src.addr'] === c.local), 'the non-enrolled client was not captured outbound');
  });

  test("a client may reuse at once a 4-tuple ztunnel still holds in TIME_WAIT", async () => {
    // The server closes first (Connection: close), so ztunnel's accepted socket, not the client,
    // ends in TIME_WAIT. The client's next SYN on the same tuple must reach the listener again.
    const client = lab.pod('mesh/client');
    const server = lab.pod('plain/server');
    const localPort = 40000 + (process.pid % 20000);
    for (let i = 0; i < 3; i++) {
      const reply = await httpGetClose(client, server.ip, 8080, localPort);
      assert.equal(ipOf(reply.source), ztunnelIP('node-1'), `connection ${i + 1} on the same tuple was captured`);
    }
  });

  test('non-enrolled and opted-out pods are untouched', async () => {
    const server = lab.pod('plain/server');
    for (const key of ['plain/client', 'mesh/optout']) {
      const c = await EchoConnection.open(lab.pod(key), server.ip, 8080);
      c.close();
      assert.equal(c.identity.source, c.local, `${key}: the server saw the client's own address and port`);
      await new Promise((r) => setTimeout(r, 100));
      for (const node of ['node-1', 'node-2']) {
        assert.ok(!lab.accessLog(node).some((l) => l['src.addr'] === c.local), `${key}: no ztunnel saw it`);
      }
    }
  });

  test('changing the namespace label in the lab file changes capture for new connections without resetting open ones', async () => {
    const client = lab.pod('mesh/client');
    const server = lab.pod('plain/server');
    const captured = await EchoConnection.open(client, server.ip, 8080);
    assert.equal(ipOf(captured.identity.source), ztunnelIP('node-1'), 'captured while the namespace is ambient');
    // A captured connection the server closes leaves ztunnel holding its tuple in TIME_WAIT.
    const reusedPort = 30000 + (process.pid % 2000);
    assert.equal(ipOf((await httpGetClose(client, server.ip, 8080, reusedPort)).source), ztunnelIP('node-1'));

    lab.editFile((t) => t.replace(/(name: mesh\n\s+labels:\n\s+)istio\.io\/dataplane-mode: ambient/, '$1team: mesh'));
    await waitFor('the agent to disable mesh/client', () => !lab.redirection('node-1')?.pods['mesh/client']);
    const direct = await EchoConnection.open(client, server.ip, 8080);
    assert.equal(direct.identity.source, direct.local, 'new connections go direct');
    const reused = await httpGetClose(client, server.ip, 8080, reusedPort);
    assert.equal(reused.source, `${client.ip}:${reusedPort}`, 'a direct connection on a tuple ztunnel holds in TIME_WAIT works');
    await captured.roundTrip('still-captured', 3000);

    lab.editFile((t) => t.replace(/(name: mesh\n\s+labels:\n\s+)team: mesh/, '$1istio.io/dataplane-mode: ambient'));
    await waitFor('the agent to enable mesh/client again', () => lab.redirection('node-1')?.pods['mesh/client']?.state === 'enabled');
    const again = await EchoConnection.open(client, server.ip, 8080);
    assert.equal(ipOf(again.identity.source), ztunnelIP('node-1'), 'new connections are captured again');
    await direct.roundTrip('still-direct', 3000);
    await captured.roundTrip('captured-throughout', 3000);
    for (const c of [captured, direct, again]) c.close();
  });

  test('a malformed edit of the lab file is reported by the agents and changes nothing', async () => {
    lab.editFile((t) => t.replace(/(name: mesh\n\s+labels:\n\s+)istio\.io\/dataplane-mode: ambient/, '$1istio.io/dataplane-mode: [ambient'));
    await waitFor('the agent to reject the edit', () => /config rejected/.test(lab.log('agent', 'node-1')));
    const c = await EchoConnection.open(lab.pod('mesh/client'), lab.pod('plain/server').ip, 8080);
    assert.equal(ipOf(c.identity.source), ztunnelIP('node-1'), 'the last good config stays in force');
    c.close();
    const state = readState(lab.name)!;
    for (const p of state.processes) assert.ok(isOurs(p), `${p.component} on ${p.node} still runs`);
    lab.editFile((t) => t.replace('istio.io/dataplane-mode: [ambient', 'istio.io/dataplane-mode: ambient'));
  });

  test('a pod removed from the config while it still runs keeps its capture: fail closed', async () => {
    const doc = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: mesh\n  labels:\n    app: client\nspec:\n  nodeName: node-1\n  containers:\n    - name: client\n---\n';
    const client = lab.pod('mesh/client');
    lab.editFile((t) => t.replace(doc, ''));
    try {
      await waitFor('the agent to notice', () => /a captured veth has no pod in the view/.test(lab.log('agent', 'node-1')));
      // Still captured, and refused by the ztunnel, which no longer knows the pod's identity:
      // neither sent direct nor sent under no identity.
      await waitFor('the ztunnel to refuse the unknown source', async () => {
        await EchoConnection.open(client, lab.pod('plain/server').ip, 8080, 1500).then((c) => c.close(), () => undefined);
        return lab.accessLog('node-1').some((l) => l.msg === 'connection failed' && ipOf(l['src.addr'] ?? '') === client.ip && /unknown source workload/.test(l.error ?? ''));
      }, 15_000);
    } finally {
      lab.editFile((t) => t.replace('apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\n  namespace: mesh', `${doc}apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\n  namespace: mesh`));
    }
    await waitFor('mesh/client back in the view', () => lab.redirection('node-1')?.pods['mesh/client']?.state === 'enabled');
    await waitFor('mesh/client served again', () => EchoConnection.open(client, lab.pod('plain/server').ip, 8080, 1500).then((c) => (c.close(), true), () => false), 15_000);
  });

  test("a connection addressed to ztunnel's own capture port is refused, not relayed to itself", async () => {
    const before = lab.accessLog('node-1').length;
    await assert.rejects(EchoConnection.open(lab.pod('plain/client'), ztunnelIP('node-1'), 15006, 2000), /ECONNRESET|closed|timed out/);
    await waitFor('the refusal in the access log', () => lab.accessLog('node-1').some((l) => l.msg === 'connection failed' && l['dst.addr'] === `${ztunnelIP('node-1')}:15006`));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(lab.accessLog('node-1').length - before <= 2, 'one refusal, no loop of self-connections');
    const state = readState(lab.name)!;
    assert.ok(state.processes.filter((p) => p.component === 'ztunnel').every((p) => isOurs(p)), 'the ztunnels still run');
  });

  test('a killed agent leaves redirection working, and its restart adopts the pinned state without duplicates', async () => {
    const node = lab.plan.nodes.find((n) => n.name === 'node-1')!;
    const pods = lab.plan.pods.filter((p) => p.node === 'node-1');
    const attached = () =>
      pods.map((p) => [
        tcxQuery({ netns: netnsPath(node.netns), name: p.hostVeth }, 'ingress').length,
        tcxQuery({ netns: netnsPath(node.netns), name: p.hostVeth }, 'egress').length,
      ]);
    const linksDir = join(paths.bpfRoot(lab.name, 'node-1'), 'links');
    const pinsBefore = readdirSync(linksDir).sort();
    assert.deepEqual(attached(), pods.map(() => [1, 1]), 'one program on each hook of each pod veth');

    await killComponent(lab.name, 'agent', 'node-1', 'SIGKILL');
    const server = lab.pod('plain/server');
    const whileDead = await EchoConnection.open(lab.pod('mesh/client'), server.ip, 8080);
    assert.equal(ipOf(whileDead.identity.source), ztunnelIP('node-1'), 'still captured with no agent running');

    await restartComponent(lab.name, 'agent', 'node-1');
    await waitFor('the restarted agent to adopt', () => /adopted pinned redirection state/.test(lab.log('agent', 'node-1')) && /"msg":"agent ready"/.test(lab.log('agent', 'node-1').split('adopted pinned')[1] ?? ''));
    assert.deepEqual(attached(), pods.map(() => [1, 1]), 'no duplicate attachment after the restart');
    assert.deepEqual(readdirSync(linksDir).sort(), pinsBefore, 'the same pins, adopted rather than recreated');
    const after = await EchoConnection.open(lab.pod('mesh/client'), server.ip, 8080);
    assert.equal(ipOf(after.identity.source), ztunnelIP('node-1'));
    await whileDead.roundTrip('across-the-restart');
    whileDead.close();
    after.close();
  });

  test('with the ztunnel down, enrolled pods fail closed (never bypass); fail-open sends them direct', async () => {
    const client = lab.pod('mesh/client');
    const server = lab.pod('plain/server');
    await killComponent(lab.name, 'ztunnel', 'node-1', 'SIGKILL');

    await assert.rejects(EchoConnection.open(client, server.ip, 8080, 1500), /timed out|ETIMEDOUT/, 'outbound of an enrolled pod must not go direct');
    await assert.rejects(EchoConnection.open(lab.pod('plain/client'), lab.pod('mesh/echo-1').ip, 8080, 1500), /timed out|ETIMEDOUT/, 'inbound to an enrolled pod must not go direct');
    const plain = await EchoConnection.open(lab.pod('plain/client'), server.ip, 8080);
    assert.equal(plain.identity.source, plain.local, 'pods outside the mesh are unaffected');
    plain.close();

    await restartComponent(lab.name, 'agent', 'node-1', { failOpen: true });
    await waitFor('the agent to switch to fail-open', () => /"failMode":"open"/.test(lab.log('agent', 'node-1')));
    const direct = await EchoConnection.open(client, server.ip, 8080);
    assert.equal(direct.identity.source, direct.local, 'fail-open: the connection went direct');
    direct.close();

    await restartComponent(lab.name, 'ztunnel', 'node-1');
    await restartComponent(lab.name, 'agent', 'node-1');
    await waitFor('mesh/client enabled again', async () => {
      const r = lab.redirection('node-1')?.pods['mesh/client']?.state === 'enabled';
      return r && /"failMode":"closed"/.test(lab.log('agent', 'node-1').split('"failMode":"open"').pop() ?? '');
    });
    const back = await EchoConnection.open(client, server.ip, 8080);
    assert.equal(ipOf(back.identity.source), ztunnelIP('node-1'), 'captured again once ztunnel is back');
    back.close();
  });

  test('lab down leaves no namespace, pin, link, hosts file or process behind', async () => {
    const state = readState(lab.name)!;
    const ids = pinnedIds(lab.name, lab.plan.nodes.map((n) => n.name));
    assert.ok(ids.links.length > 0 && ids.programs.length > 0);
    const netns = [...state.netns];
    const processes = [...state.processes];
    await lab.down();
    const listed = await run('ip', ['netns', 'list']);
    assert.ok(!listed.split('\n').some((l) => l.startsWith(`ambit_${lab.name}_`)), 'no namespace of the lab is left');
    assert.ok(!existsSync(paths.bpfRoot(lab.name, 'node-1')) && !existsSync(join('/sys/fs/bpf/ambit/lab', lab.name)), 'no pins are left');
    for (const id of ids.links) assert.equal(linkFdById(id), null, `link ${id} is gone`);
    for (const id of ids.programs) assert.equal(progFdById(id), null, `program ${id} is gone`);
    for (const ns of netns) assert.ok(!existsSync(paths.etcNetns(ns)), `no /etc/netns/${ns}`);
    for (const p of processes) assert.ok(!isOurs(p), `${p.component} on ${p.node} (pid ${p.pid}) is gone`);
    assert.ok(!existsSync(paths.state(lab.name)), 'no state is left');
  });
});
