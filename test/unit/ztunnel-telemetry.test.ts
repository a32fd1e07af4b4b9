// The ztunnel's telemetry against Istio's shapes: metric names and label sets (in Istio's order) for
// the connection kinds the proxy reports, byte deltas, idempotent close, deny accounting, summing of
// worker registries, the 15020 server; access-log lines captured from pino; live log levels and the
// admin endpoint's /logging and connections dump; the CLI's connections table.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { Workload, type Workload as WorkloadT } from '../../proto/gen/istio/workload/workload.js';
import { TRAFFIC_LABELS, TrafficMetrics, aggregateMetrics, trafficLabels } from '../../agent/ztunnel/telemetry/metrics.js';
import { logComplete, logFailed, logOpened } from '../../agent/ztunnel/telemetry/access-log.js';
import { startStatsServer } from '../../agent/ztunnel/telemetry/stats-server.js';
import { LogLevelError, LogLevels } from '../../mesh/log-levels.js';
import { AdminServer, dumpConnection, dumpConnections, type ConfigDump } from '../../agent/ztunnel/admin.js';
import { connectionsTable } from '../../cli/commands/ztunnel-config.js';
import type { ConnectionInfo } from '../../agent/ztunnel/proxy/connection.js';
import type { DumpedService, DumpedWorkload } from '../../agent/ztunnel/discovery.js';

const CLIENT_ID = 'spiffe://cluster.local/ns/shop/sa/client';
const WEB_ID = 'spiffe://cluster.local/ns/shop/sa/web';

function workload(name: string, over: Partial<WorkloadT> = {}): WorkloadT {
  return Workload.fromPartial({
    uid: `Kubernetes//Pod/shop/${name}`,
    name,
    namespace: 'shop',
    serviceAccount: name.split('-')[0]!,
    trustDomain: 'cluster.local',
    workloadName: name.split('-')[0]!,
    canonicalName: name.split('-')[0]!,
    canonicalRevision: 'v1',
    clusterId: 'Kubernetes',
    ...over,
  });
}

const client = workload('client-7d9f', { locality: { region: 'eu-west', zone: 'eu-west-1a', subzone: '' } });
const web = workload('web-5c4b', { canonicalRevision: 'v2' });
const webService = { hostname: 'web.shop.svc.cluster.local', namespace: 'shop', name: 'web' };

/** Inbound HBONE, as the destination node's ztunnel sees it: the client's identity proven by mTLS. */
function inboundHbone(): ConnectionInfo {
  return {
    id: 1,
    reporter: 'destination',
    direction: 'inbound',
    src: { addr: '10.0.1.5', port: 40000, workload: client, identity: CLIENT_ID },
    dst: { addr: '10.0.2.7', port: 8080, workload: web, identity: WEB_ID, service: webService, hboneAddr: '10.0.2.7:8080' },
    mtls: true,
    startedAt: Date.now() - 1500,
  };
}

/** Outbound over HBONE from the client's node: the destination's identity proven, the source's not. */
function outboundHbone(): ConnectionInfo {
  return {
    id: 2,
    reporter: 'source',
    direction: 'outbound',
    src: { addr: '10.0.1.5', port: 40001, workload: client },
    dst: { addr: '10.0.2.7', port: 15008, workload: web, identity: WEB_ID, service: webService, hboneAddr: '10.0.2.7:8080', original: '10.96.0.10:80' },
    mtls: true,
    startedAt: Date.now() - 20,
  };
}

/** Plaintext captured on 15006: nobody's identity is known. */
function inboundPlaintext(): ConnectionInfo {
  return {
    id: 3,
    reporter: 'destination',
    direction: 'inbound',
    src: { addr: '10.0.1.5', port: 40002, workload: client },
    dst: { addr: '10.0.2.7', port: 8080, workload: web },
    mtls: false,
    startedAt: Date.now(),
  };
}

/** Outbound to an address the mesh does not know (passthrough). */
function outboundUnknown(): ConnectionInfo {
  return {
    id: 4,
    reporter: 'source',
    direction: 'outbound',
    src: { addr: '10.0.1.9', port: 40003 },
    dst: { addr: '192.0.2.1', port: 443 },
    mtls: false,
    startedAt: Date.now(),
  };
}

/** The label text Prometheus shows for a label object, in its key order. */
function labelText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
}

async function value(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric, `${name} is registered`);
  const got = await metric.get();
  const v = got.values.find((x) => Object.entries(labels).every(([k, want]) => String((x.labels as Record<string, unknown>)[k]) === want));
  return v?.value;
}

describe('ztunnel metrics', () => {
  test('label names are Istio CommonTrafficLabels in Istio order', () => {
    assert.deepEqual(Object.keys(trafficLabels(inboundHbone())), [...TRAFFIC_LABELS]);
    assert.equal(TRAFFIC_LABELS.length, 27);
    assert.deepEqual(TRAFFIC_LABELS.slice(0, 3), ['reporter', 'source_workload', 'source_canonical_service']);
    assert.deepEqual(TRAFFIC_LABELS.slice(20, 23), ['request_protocol', 'response_flags', 'connection_security_policy']);
  });

  test('inbound HBONE: both workloads, the proven source principal, mutual_tls, service and locality', async () => {
    const registry = new Registry();
    const m = new TrafficMetrics(registry, '1.0.0');
    m.open(inboundHbone());
    const want =
      'reporter="destination",source_workload="client",source_canonical_service="client",source_canonical_revision="v1",' +
      'source_workload_namespace="shop",source_principal="spiffe://cluster.local/ns/shop/sa/client",source_app="client",source_version="v1",' +
      'source_cluster="Kubernetes",destination_service="web.shop.svc.cluster.local",destination_service_namespace="shop",' +
      'destination_service_name="web",destination_workload="web",destination_canonical_service="web",destination_canonical_revision="v2",' +
      'destination_workload_namespace="shop",destination_principal="spiffe://cluster.local/ns/shop/sa/web",destination_app="web",' +
      'destination_version="v2",destination_cluster="Kubernetes",request_protocol="tcp",response_flags="-",' +
      'connection_security_policy="mutual_tls",source_region="eu-west",source_zone="eu-west-1a",destination_region="unknown",' +
      'destination_zone="unknown"';
    const text = await registry.metrics();
    assert.ok(text.includes(`istio_tcp_connections_opened_total{${want}} 1\n`), text);
  });

  test('outbound: reporter source, destination principal only, source principal unknown', () => {
    const l = trafficLabels(outboundHbone());
    assert.equal(l.reporter, 'source');
    assert.equal(l.source_principal, 'unknown');
    assert.equal(l.destination_principal, WEB_ID);
    assert.equal(l.connection_security_policy, 'mutual_tls');
    assert.equal(l.destination_service, 'web.shop.svc.cluster.local');
  });

  test('plaintext: connection_security_policy unknown, no principals, no service', () => {
    const l = trafficLabels(inboundPlaintext());
    assert.equal(l.connection_security_policy, 'unknown');
    assert.equal(l.source_principal, 'unknown');
    assert.equal(l.destination_principal, 'unknown');
    assert.equal(l.destination_service, 'unknown');
    assert.equal(l.destination_service_name, 'unknown');
    assert.equal(l.destination_workload, 'web');
    assert.equal(l.source_workload, 'client');
  });

  test('unknown workloads: every workload label unknown and no locality labels at all', async () => {
    const registry = new Registry();
    new TrafficMetrics(registry).open(outboundUnknown());
    const l = trafficLabels(outboundUnknown());
    assert.equal(l.source_region, undefined);
    assert.deepEqual(Object.keys(l), TRAFFIC_LABELS.slice(0, 23));
    for (const k of Object.keys(l)) if (!['reporter', 'request_protocol', 'response_flags'].includes(k)) assert.equal(l[k as keyof typeof l], 'unknown', k);
    const text = await registry.metrics();
    const line = text.split('\n').find((x) => x.startsWith('istio_tcp_connections_opened_total{'));
    assert.ok(line && !line.includes('region') && line.endsWith(' 1'), line);
  });

  test('empty workload fields are unknown, not empty', () => {
    const info = outboundUnknown();
    info.src.workload = workload('job-1', { workloadName: '', canonicalRevision: '' });
    const l = trafficLabels(info);
    assert.equal(l.source_workload, 'unknown');
    assert.equal(l.source_version, 'unknown');
    assert.equal(l.source_region, 'unknown');
    assert.equal(l.destination_region, 'unknown');
  });

  test('flush adds only the delta of cumulative counts; received is client→server, sent server→client', async () => {
    const registry = new Registry();
    const m = new TrafficMetrics(registry);
    const c = m.open(inboundHbone());
    const labels = { reporter: 'destination', response_flags: '-' };
    c.flush({ sent: 100, received: 10 });
    assert.equal(await value(registry, 'istio_tcp_sent_bytes_total', labels), 100);
    assert.equal(await value(registry, 'istio_tcp_received_bytes_total', labels), 10);
    c.flush({ sent: 150, received: 10 });
    c.flush({ sent: 150, received: 10 });
    assert.equal(await value(registry, 'istio_tcp_sent_bytes_total', labels), 150);
    assert.equal(await value(registry, 'istio_tcp_received_bytes_total', labels), 10);
    c.close({ sent: 170, received: 25 });
    assert.equal(await value(registry, 'istio_tcp_sent_bytes_total', labels), 170);
    assert.equal(await value(registry, 'istio_tcp_received_bytes_total', labels), 25);
  });

  test('close is idempotent and counts the socket out once; flush after close adds nothing', async () => {
    const registry = new Registry();
    const m = new TrafficMetrics(registry);
    const c = m.open(outboundHbone());
    assert.equal(await value(registry, 'istio_tcp_sockets_open', { reporter: 'source' }), 1);
    c.close({ sent: 5, received: 5 });
    c.close({ sent: 9, received: 9 }, 'CONNECT');
    c.flush({ sent: 50, received: 50 });
    assert.equal(await value(registry, 'istio_tcp_connections_closed_total'), 1);
    assert.equal(await value(registry, 'istio_tcp_connections_closed_total', { response_flags: 'CONNECT' }), undefined);
    assert.equal(await value(registry, 'istio_tcp_sockets_open', { reporter: 'source' }), 0);
    assert.equal(await value(registry, 'istio_tcp_sent_bytes_total'), 5);
    assert.equal(await value(registry, 'istio_tcp_connections_failed_total'), undefined);
  });

  test('a flagged close counts closed and failed with the flag; bytes keep the open labels', async () => {
    const registry = new Registry();
    const c = new TrafficMetrics(registry).open(inboundHbone());
    c.close({ sent: 0, received: 3 }, 'DENY');
    assert.equal(await value(registry, 'istio_tcp_connections_closed_total', { response_flags: 'DENY' }), 1);
    assert.equal(await value(registry, 'istio_tcp_connections_failed_total', { response_flags: 'DENY' }), 1);
    assert.equal(await value(registry, 'istio_tcp_received_bytes_total', { response_flags: '-' }), 3);
  });

  test('failed(): opened, closed and failed with the flag, as Istio records a deny; no socket left open', async () => {
    const registry = new Registry();
    const m = new TrafficMetrics(registry);
    m.failed(inboundHbone(), 'DENY');
    m.failed(outboundHbone(), 'CONNECT');
    assert.equal(await value(registry, 'istio_tcp_connections_opened_total', { reporter: 'destination', response_flags: '-' }), 1);
    assert.equal(await value(registry, 'istio_tcp_connections_closed_total', { reporter: 'destination', response_flags: 'DENY' }), 1);
    assert.equal(await value(registry, 'istio_tcp_connections_failed_total', { reporter: 'destination', response_flags: 'DENY' }), 1);
    assert.equal(await value(registry, 'istio_tcp_connections_failed_total', { reporter: 'source', response_flags: 'CONNECT' }), 1);
    assert.equal(await value(registry, 'istio_tcp_sockets_open', { reporter: 'destination' }), 0);
    assert.equal(await value(registry, 'istio_tcp_received_bytes_total'), undefined);
  });

  test('istio_build names the component and tag', async () => {
    const registry = new Registry();
    new TrafficMetrics(registry, '1.26.0-ambit');
    assert.ok((await registry.metrics()).includes('istio_build{component="ztunnel",tag="1.26.0-ambit"} 1\n'));
  });

  test('aggregation sums two worker registries (counters and the sockets gauge), istio_build stays 1', async () => {
    const a = new Registry();
    const b = new Registry();
    const ma = new TrafficMetrics(a, 't');
    const mb = new TrafficMetrics(b, 't');
    ma.open(inboundHbone()).close({ sent: 10, received: 1 });
    mb.open(inboundHbone()).close({ sent: 32, received: 2 });
    mb.open(inboundHbone());
    const text = await aggregateMetrics([await a.getMetricsAsJSON(), await b.getMetricsAsJSON()]);
    const line = (name: string) => text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
    assert.match(line('istio_tcp_connections_opened_total')!, / 3$/);
    assert.match(line('istio_tcp_connections_closed_total')!, / 2$/);
    assert.match(line('istio_tcp_sent_bytes_total')!, / 42$/);
    assert.match(line('istio_tcp_received_bytes_total')!, / 3$/);
    assert.equal(line('istio_tcp_sockets_open'), 'istio_tcp_sockets_open{reporter="destination"} 1');
    assert.equal(line('istio_build'), 'istio_build{component="ztunnel",tag="t"} 1');
    assert.ok(line('istio_tcp_connections_opened_total')!.startsWith(`istio_tcp_connections_opened_total{${labelText(trafficLabels(inboundHbone()) as Record<string, string>)}}`));
  });
});

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('stats server (15020)', () => {
  let server: http.Server;
  let port = 0;
  let mode: 'ok' | 'reject' | 'throw' = 'ok';

  before(async () => {
    server = await startStatsServer({
      port: 0,
      host: '127.0.0.1',
      render: () => {
        if (mode === 'throw') throw new Error('registry gone');
        if (mode === 'reject') return Promise.reject(new Error('worker 2 did not answer'));
        return Promise.resolve('istio_tcp_sockets_open{reporter="source"} 0\n');
      },
    });
    port = (server.address() as AddressInfo).port;
  });

  after(() => {
    server.close();
    server.closeAllConnections();
  });

  test('serves /metrics and /stats/prometheus with the Prometheus content type, query ignored', async () => {
    for (const path of ['/metrics', '/stats/prometheus', '/metrics?x=1']) {
      const r = await get(port, path);
      assert.equal(r.status, 200, path);
      assert.equal(r.type, 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(r.body, 'istio_tcp_sockets_open{reporter="source"} 0\n');
    }
  });

  test('GET only, other paths 404', async () => {
    assert.equal((await get(port, '/metrics', 'POST')).status, 405);
    assert.equal((await get(port, '/stats/prometheus', 'DELETE')).status, 405);
    assert.equal((await get(port, '/')).status, 404);
    assert.equal((await get(port, '/stats')).status, 404);
  });

  test('a failed render answers 500 and the server keeps serving', async () => {
    mode = 'reject';
    const r1 = await get(port, '/metrics');
    assert.equal(r1.status, 500);
    assert.match(r1.body, /worker 2 did not answer/);
    mode = 'throw';
    const r2 = await get(port, '/metrics');
    assert.equal(r2.status, 500);
    assert.match(r2.body, /registry gone/);
    mode = 'ok';
    assert.equal((await get(port, '/metrics')).status, 200);
  });

  test('a taken port rejects instead of crashing', async () => {
    await assert.rejects(startStatsServer({ port, host: '127.0.0.1', render: async () => '' }), /EADDRINUSE/);
  });
});

/** A pino logger writing parsed JSON lines into `lines`. */
function capture(level = 'debug'): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level, base: undefined, timestamp: false }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log: log.child({ target: 'access' }), lines };
}

/** The access-log fields of a line (pino's own and the child binding left out). */
function fields(line: Record<string, unknown>): Record<string, unknown> {
  const { level: _l, msg: _m, target: _t, ...rest } = line;
  return rest;
}

describe('access log', () => {
  test('connection opened: DEBUG with Istio field names, absent fields omitted', () => {
    const { log, lines } = capture();
    logOpened(log, inboundHbone());
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.level, 20);
    assert.equal(lines[0]!.msg, 'connection opened');
    assert.equal(lines[0]!.target, 'access');
    assert.deepEqual(fields(lines[0]!), {
      'src.addr': '10.0.1.5:40000',
      'src.workload': 'client-7d9f',
      'src.namespace': 'shop',
      'src.identity': CLIENT_ID,
      'src.cluster': 'Kubernetes',
      'dst.addr': '10.0.2.7:8080',
      'dst.hbone_addr': '10.0.2.7:8080',
      'dst.service': 'web.shop.svc.cluster.local',
      'dst.workload': 'web-5c4b',
      'dst.namespace': 'shop',
      'dst.identity': WEB_ID,
      'dst.cluster': 'Kubernetes',
      direction: 'inbound',
    });
  });

  test('connection complete: INFO with bytes from the reporter side and duration in ms', () => {
    const { log, lines } = capture();
    logComplete(log, inboundHbone(), { sent: 490, received: 67 });
    logComplete(log, outboundHbone(), { sent: 490, received: 67 });
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.direction, l.bytes_sent, l.bytes_recv]),
      [
        [30, 'connection complete', 'inbound', 490, 67],
        // The source side's "sent" is what its client sent.
        [30, 'connection complete', 'outbound', 67, 490],
      ],
    );
    assert.match(String(lines[0]!.duration), /^\d+ms$/);
    assert.ok(Number.parseInt(String(lines[0]!.duration), 10) >= 1500);
    assert.equal(lines[0]!.error, undefined);
  });

  test('connection complete with an error: ERROR and the error text', () => {
    const { log, lines } = capture();
    logComplete(log, inboundHbone(), { sent: 0, received: 0 }, new Error('connection closed due to policy change'));
    logComplete(log, inboundHbone(), { sent: 0, received: 0 }, 'upstream reset');
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.error]),
      [
        [50, 'connection complete', 'connection closed due to policy change'],
        [50, 'connection complete', 'upstream reset'],
      ],
    );
  });

  test('plaintext: no identities; unknown peer: no workload, namespace or cluster', () => {
    const { log, lines } = capture();
    logOpened(log, inboundPlaintext());
    logOpened(log, outboundUnknown());
    assert.equal(lines[0]!['src.identity'], undefined);
    assert.equal(lines[0]!['dst.identity'], undefined);
    assert.equal(lines[0]!['src.workload'], 'client-7d9f');
    assert.deepEqual(fields(lines[1]!), { 'src.addr': '10.0.1.9:40003', 'dst.addr': '192.0.2.1:443', direction: 'outbound' });
  });

  test('workload falls back to the canonical name; IPv6 addresses are bracketed', () => {
    const { log, lines } = capture();
    const info = outboundUnknown();
    info.src = { addr: 'fd00::5', port: 4000, workload: workload('', { canonicalName: 'batch' }) };
    logOpened(log, info);
    assert.equal(lines[0]!['src.workload'], 'batch');
    assert.equal(lines[0]!['src.addr'], '[fd00::5]:4000');
  });

  test('connection failed: WARN with addresses, direction and error only', () => {
    const { log, lines } = capture();
    logFailed(log, inboundHbone(), 'policy denied');
    assert.equal(lines[0]!.level, 40);
    assert.equal(lines[0]!.msg, 'connection failed');
    assert.deepEqual(fields(lines[0]!), { 'src.addr': '10.0.1.5:40000', 'dst.addr': '10.0.2.7:8080', direction: 'inbound', error: 'policy denied' });
  });

  test('a disabled level builds nothing: the connection is never read', () => {
    const { log, lines } = capture('warn');
    const untouchable = new Proxy({} as ConnectionInfo, {
      get() {
        throw new Error('read the connection for a line nobody writes');
      },
    });
    logOpened(log, untouchable);
    logComplete(log, untouchable, { sent: 1, received: 1 });
    assert.throws(() => logFailed(log, untouchable, 'x'), /nobody writes/);
    assert.equal(lines.length, 0);
  });
});

describe('live log levels', () => {
  function setup() {
    const root = pino({ level: 'info' }, { write: () => undefined });
    const access = root.child({ target: 'access' });
    const xds = root.child({ target: 'xds' });
    const levels = new LogLevels('info');
    levels.register('default', root);
    levels.register('access', access);
    levels.register('xds', xds);
    return { root, access, xds, levels };
  }

  test('a bare level moves every target without its own; target levels layer on the current setting', () => {
    const { root, access, xds, levels } = setup();
    levels.apply('access:debug');
    assert.deepEqual([root.level, access.level, xds.level], ['info', 'debug', 'info']);
    levels.apply('warn');
    assert.deepEqual([root.level, access.level, xds.level], ['warn', 'debug', 'warn']);
    levels.apply('xds=error,trace');
    assert.deepEqual([root.level, access.level, xds.level], ['trace', 'debug', 'error']);
    assert.equal(levels.list(), 'access=debug,xds=error,trace');
    levels.apply('off');
    assert.equal(root.level, 'silent');
    assert.equal(levels.list(), 'access=debug,xds=error,off');
  });

  test('an unregistered child follows its parent; once registered it holds its own target level', () => {
    const { root, levels } = setup();
    const stray = root.child({ target: 'stray' });
    levels.apply('debug');
    assert.equal(stray.level, 'debug');
    assert.throws(() => levels.apply('stray:error'), /unknown log target 'stray'/);
    levels.register('stray', stray);
    levels.apply('stray:error,warn');
    assert.deepEqual([root.level, stray.level], ['warn', 'error']);
  });

  test('a bad level or an unknown target is named, and nothing changes', () => {
    const { access, levels } = setup();
    assert.throws(() => levels.apply('access:verbose'), (e: unknown) => e instanceof LogLevelError && /'verbose'/.test(e.message));
    assert.throws(() => levels.apply('access:debug,proxy:debug'), (e: unknown) => e instanceof LogLevelError && /unknown log target 'proxy'/.test(e.message));
    assert.throws(() => levels.apply('loud'), /unknown log level 'loud'/);
    assert.throws(() => levels.apply(':debug'), /no target/);
    assert.equal(access.level, 'info');
    assert.equal(levels.list(), 'info');
  });

  test('reset goes back to the startup setting, which may name targets', () => {
    const root = pino({ level: 'info' }, { write: () => undefined });
    const access = root.child({});
    const levels = new LogLevels('warn,access:info');
    levels.register('default', root);
    levels.register('access', access);
    assert.deepEqual([root.level, access.level], ['warn', 'info']);
    levels.apply('debug,access:trace');
    levels.reset();
    assert.deepEqual([root.level, access.level], ['warn', 'info']);
    levels.apply('access:error', { reset: true });
    assert.equal(levels.list(), 'access=error,warn');
  });

  test('the level decides what the access log writes', () => {
    const { log, lines } = capture('info');
    const levels = new LogLevels('info');
    levels.register('access', log);
    logOpened(log, inboundHbone());
    assert.equal(lines.length, 0);
    levels.apply('access:debug');
    logOpened(log, inboundHbone());
    assert.equal(lines.length, 1);
  });
});

function post(port: number, path: string, method = 'POST') {
  return get(port, path, method);
}

describe('admin endpoint (15000)', () => {
  const root = pino({ level: 'info' }, { write: () => undefined });
  const access = root.child({ target: 'access' });
  const levels = new LogLevels('info');
  levels.register('default', root);
  levels.register('access', access);
  let admin: AdminServer;
  let bare: AdminServer;
  let port = 0;
  let failDump = false;

  const services: DumpedService[] = [{ name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vips: ['/10.96.0.10'], ports: { '80': 8080 }, endpoints: { total: 1, healthy: 1 } }];
  const workloads = [
    { uid: 'a', name: 'client-7d9f', namespace: 'shop', workloadIps: ['10.0.1.5'] },
    { uid: 'b', name: 'web-5c4b', namespace: 'shop', workloadIps: ['10.0.2.7'] },
  ] as DumpedWorkload[];
  const dump = (): ConfigDump => {
    if (failDump) throw new Error('state unavailable');
    return {
      certificates: [],
      services,
      workloads,
      connections: dumpConnections([
        { info: inboundHbone(), bytes: () => ({ sent: 3, received: 4 }) },
        { info: outboundHbone(), bytes: () => ({ sent: 5, received: 6 }) },
        { info: inboundPlaintext(), bytes: () => ({ sent: 0, received: 0 }) },
      ]),
    };
  };

  before(async () => {
    admin = new AdminServer(dump, levels);
    await admin.listen(0);
    port = admin.address().port;
    bare = new AdminServer(dump);
    await bare.listen(0);
  });

  after(() => {
    admin.close();
    bare.close();
  });

  test('listens on loopback only', () => {
    assert.equal(admin.address().address, '127.0.0.1');
  });

  test('POST /logging lists; ?level changes live; ?reset goes back', async () => {
    const list = await post(port, '/logging');
    assert.equal(list.status, 200);
    assert.equal(list.body, 'current log level is info\n');
    const set = await post(port, '/logging?level=access:debug');
    assert.equal(set.status, 200);
    assert.equal(set.body, 'current log level is access=debug,info\n');
    assert.equal(access.level, 'debug');
    assert.equal((await post(port, '/logging?level=warn')).body, 'current log level is access=debug,warn\n');
    assert.equal(root.level, 'warn');
    const reset = await post(port, '/logging?reset');
    assert.equal(reset.body, 'current log level is info\n');
    assert.deepEqual([root.level, access.level], ['info', 'info']);
  });

  test('bad input answers 400 naming it and changes nothing', async () => {
    const badLevel = await post(port, '/logging?level=access:verbose');
    assert.equal(badLevel.status, 400);
    assert.match(badLevel.body, /verbose/);
    const badTarget = await post(port, '/logging?level=nosuch:debug');
    assert.equal(badTarget.status, 400);
    assert.match(badTarget.body, /unknown log target 'nosuch'/);
    assert.match(badTarget.body, /targets:\taccess\|default/);
    assert.equal(access.level, 'info');
  });

  test('/logging takes POST only; without LogLevels it is not there', async () => {
    const r = await post(port, '/logging', 'GET');
    assert.equal(r.status, 405);
    assert.match(r.body, /^Invalid HTTP method/);
    assert.equal((await post(port, '/logging?level=debug', 'PUT')).status, 405);
    assert.equal(root.level, 'info');
    assert.equal((await post(bare.address().port, '/logging')).status, 404);
  });

  test('GET /config_dump carries the connections in Istio ConnectionManager shape; other methods 405', async () => {
    const r = await get(port, '/config_dump');
    assert.equal(r.status, 200);
    const body = JSON.parse(r.body) as ConfigDump;
    assert.deepEqual(body.connections!.inbound[0], {
      src: '10.0.1.5:40000',
      originalDst: 'web.shop.svc.cluster.local',
      actualDst: '10.0.2.7:8080',
      protocol: 'HBONE',
      workload: { name: 'web-5c4b', namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local' },
      bytes: { sent: 3, received: 4 },
    });
    assert.deepEqual(body.connections!.outbound, [
      {
        src: '10.0.1.5:40001',
        originalDst: '10.96.0.10:80',
        actualDst: '10.0.2.7:15008',
        protocol: 'HBONE',
        workload: { name: 'client-7d9f', namespace: 'shop', serviceAccount: 'client', trustDomain: 'cluster.local' },
        bytes: { sent: 5, received: 6 },
      },
    ]);
    assert.equal(body.connections!.inbound[1]!.protocol, 'TCP');
    assert.equal(body.connections!.inbound[1]!.originalDst, null);
    assert.equal((await get(port, '/config_dump', 'POST')).status, 405);
    assert.equal((await get(port, '/nothing')).status, 404);
  });

  test('a failing dump answers 500 and the server keeps serving', async () => {
    failDump = true;
    const r = await get(port, '/config_dump');
    failDump = false;
    assert.equal(r.status, 500);
    assert.match(r.body, /state unavailable/);
    assert.equal((await get(port, '/config_dump')).status, 200);
  });

  test('ztunnel-config connections prints istioctl columns, names by default, addresses with --raw', () => {
    const lines = connectionsTable(dump()).split('\n');
    assert.deepEqual(lines[0]!.split(/\s{2,}/), ['WORKLOAD', 'DIRECTION', 'LOCAL', 'REMOTE', 'REMOTE TARGET', 'PROTOCOL']);
    assert.deepEqual(
      lines.slice(1).map((l) => l.split(/\s{2,}/)),
      [
        ['client-7d9f.shop', 'Outbound', 'client-7d9f.shop:40001', 'web-5c4b.shop:15008', 'web.shop.svc.cluster.local:80', 'HBONE'],
        ['web-5c4b.shop', 'Inbound', 'web-5c4b.shop:8080', 'client-7d9f.shop:40000', 'web.shop.svc.cluster.local', 'HBONE'],
        ['web-5c4b.shop', 'Inbound', 'web-5c4b.shop:8080', 'client-7d9f.shop:40002', 'TCP'],
      ],
    );
    const raw = connectionsTable(dump(), { raw: true, direction: 'outbound' }).split('\n');
    assert.equal(raw.length, 2);
    assert.deepEqual(raw[1]!.split(/\s{2,}/), ['client-7d9f.shop', 'Outbound', '10.0.1.5:40001', '10.0.2.7:15008', '10.96.0.10:80', 'HBONE']);
  });

  test('dumpConnection of an outbound without a resolved original reports the address dialled', () => {
    const info = outboundUnknown();
    assert.deepEqual(dumpConnection(info, { sent: 1, received: 2 }), { src: '10.0.1.9:40003', originalDst: '192.0.2.1:443', actualDst: '192.0.2.1:443', protocol: 'TCP', bytes: { sent: 1, received: 2 } });
  });
});
