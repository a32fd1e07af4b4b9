// `ambit ztunnel --workers 2` on a real two-node lab (root): connections are spread over both
// worker threads by SO_REUSEPORT, every one is proxied over HBONE, /metrics sums the workers,
// /config_dump lists every worker's open connections, and xDS policy updates reach every worker
// (a new DENY closes open connections whichever worker holds them).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { privilegedSkipReason } from '../support/env.js';
import { EchoConnection, TestLab, waitFor } from '../support/lab.js';
import { httpGetFrom } from '../../lab/connect.js';
import { netnsPath } from '../../lab/topology.js';
import { ADMIN_PORT, type ConfigDump } from '../../agent/ztunnel/admin.js';

const skip = privilegedSkipReason();
const CONNECTIONS = 24;

describe('ztunnel with two worker threads', { skip }, () => {
  let lab: TestLab;
  const node = (name: string) => lab.plan.nodes.find((n) => n.name === name)!;

  before(async () => {
    lab = await TestLab.up('ztunnel-workers.yaml', 'zt-workers');
    await waitFor('node-1 to know the server as HBONE', async () => {
      const d = await dump('node-1');
      return d.workloads?.some((w) => w.name === 'server' && w.protocol === 'HBONE');
    }, 30_000);
  });

  after(async () => {
    await lab?.down();
  });

  async function dump(nodeName: string): Promise<ConfigDump> {
    const r = await httpGetFrom(netnsPath(node(nodeName).ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump');
    assert.equal(r.status, 200, `config_dump of ${nodeName}`);
    return JSON.parse(r.body) as ConfigDump;
  }

  async function openedTotal(nodeName: string, reporter: string): Promise<number> {
    const n = node(nodeName);
    const r = await httpGetFrom(netnsPath(n.netns), n.ztunnelIP, 15020, '/metrics');
    assert.equal(r.status, 200);
    let sum = 0;
    for (const line of r.body.split('\n')) {
      if (line.startsWith('istio_tcp_connections_opened_total{') && line.includes(`reporter="${reporter}"`) && line.includes('destination_workload="server"')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }

  test('connections are spread over both workers, all over HBONE, and /metrics and /config_dump cover both', async () => {
    const client = lab.pod('mesh/client');
    const server = lab.pod('mesh/server');
    const before1 = await openedTotal('node-1', 'source');
    const logBefore = lab.accessLog('node-1').length;
    const conns: EchoConnection[] = [];
    try {
      for (let i = 0; i < CONNECTIONS; i++) conns.push(await EchoConnection.open(client, server.ip, 8080));
      for (const c of conns) assert.equal(c.identity.pod, 'server');
      // Each open connection is listed, whichever worker holds it.
      const d = await dump('node-1');
      const mine = (d.connections?.outbound ?? []).filter((c) => c.src.startsWith(`${client.ip}:`));
      assert.equal(mine.length, CONNECTIONS, `node-1's config_dump lists ${CONNECTIONS} outbound connections of the client, got ${mine.length}`);
      assert.ok(mine.every((c) => c.protocol === 'HBONE'), 'every one is tunnelled');
    } finally {
      for (const c of conns) c.close();
    }
    const lines = await waitFor('the outbound access-log lines', () => {
      const l = lab.accessLog('node-1').slice(logBefore).filter((x) => x.direction === 'outbound' && x.msg === 'connection complete');
      return l.length >= CONNECTIONS ? l : null;
    });
    const workers = new Set(lines.map((l) => String(l.worker)));
    assert.deepEqual([...workers].sort(), ['0', '1'], 'both worker threads proxied some of the connections (SO_REUSEPORT)');
    assert.ok(lines.every((l) => l['src.identity'] === `spiffe://${lab.plan.trustDomain}/ns/mesh/sa/client` && l['dst.addr'] === `${server.ip}:15008`), 'every line is HBONE with the client\'s identity');
    assert.equal((await openedTotal('node-1', 'source')) - before1, CONNECTIONS, '/metrics sums the workers\' counters');
  });

  test('a policy change reaches every worker: the open connections it denies are closed', async () => {
    const client = lab.pod('mesh/client');
    const server = lab.pod('mesh/server');
    const conns: EchoConnection[] = [];
    for (let i = 0; i < 8; i++) conns.push(await EchoConnection.open(client, server.ip, 8080));
    // Reading keeps the sockets watching for the reset or FIN that the policy change must cause.
    for (const c of conns) c.socket.on('error', () => undefined).resume();
    const policy = `---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-client\n  namespace: mesh\nspec:\n  action: DENY\n  rules:\n    - from:\n        - source:\n            principals: ["${lab.plan.trustDomain}/ns/mesh/sa/client"]\n`;
    lab.editFile((t) => `${t}${policy}`);
    try {
      await waitFor('every open connection to be closed by the policy change', () => conns.every((c) => c.socket.destroyed || c.socket.readableEnded), 15_000);
    } finally {
      for (const c of conns) c.close();
      lab.editFile((t) => t.replace(policy, ''));
    }
  });
});
