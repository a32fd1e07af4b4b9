// The ztunnel's HBONE pool (agent/ztunnel/pool.ts) against a real HBONE server on loopback:
// concurrent callers share the connection in progress, a connection carries at most 100 streams,
// eviction takes a destination's connections out of the pool while open streams finish, idle
// connections close, and a peer proving another identity is refused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type http2 from 'node:http2';
import { pino } from 'pino';
import { HboneServer } from '../../mesh/hbone/server.js';
import { workloadContext, type WorkloadCredential } from '../../mesh/hbone/tls.js';
import { HbonePool } from '../../agent/ztunnel/pool.js';
import { makePki, type TestPki } from '../support/pki.js';

const WEB = 'spiffe://cluster.local/ns/shop/sa/web';
const CLIENT = 'spiffe://cluster.local/ns/shop/sa/client';
const log = pino({ level: process.env.AMBIT_TEST_LOG ?? 'silent' });

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

describe('HBONE pool', () => {
  let pki: TestPki;
  let web: WorkloadCredential;
  let client: WorkloadCredential;
  let server: HboneServer;
  let listener: net.Server;
  let upstream: net.Server;
  let port: number;
  let upstreamPort: number;
  /** TCP connections the HBONE listener accepted: how many mTLS connections the pool made. */
  let accepted = 0;

  before(async () => {
    pki = makePki();
    web = pki.credential(WEB);
    client = pki.credential(CLIENT);
    upstream = net.createServer((s) => s.on('error', () => undefined).pipe(s));
    upstreamPort = await listen(upstream);
    server = new HboneServer({
      credentialFor: () => web,
      roots: () => [pki.rootPem],
      trustDomain: 'cluster.local',
      log,
      onConnect: (req) => {
        const up = net.connect(upstreamPort, '127.0.0.1');
        up.once('connect', () => req.accept(up));
        up.once('error', () => req.reject(503));
      },
    });
    listener = net.createServer((s) => {
      accepted++;
      server.accept(s);
    });
    port = await listen(listener);
  });

  after(() => {
    server?.close();
    listener?.close();
    upstream?.close();
    pki?.close();
  });

  const context = async () => workloadContext(client, [pki.rootPem]);
  const key = { source: CLIENT, expected: [WEB], address: '127.0.0.1', get port() {
    return port;
  } };
  const authority = () => `127.0.0.1:${upstreamPort}`;

  async function roundTrip(stream: http2.ClientHttp2Stream, text: string): Promise<void> {
    stream.write(text);
    let got = '';
    while (!got.includes(text)) {
      const [chunk] = (await new Promise((resolve, reject) => {
        stream.once('data', (c) => resolve([c]));
        stream.once('error', reject);
      })) as [Buffer];
      got += chunk.toString();
    }
  }

  test('twenty concurrent opens share one mTLS connection', async () => {
    const pool = new HbonePool({ context, log });
    const before = accepted;
    const streams = await Promise.all(Array.from({ length: 20 }, () => pool.open(key, authority(), {})));
    assert.equal(accepted - before, 1, 'one TCP connection for twenty streams');
    assert.equal(pool.size, 1);
    await Promise.all(streams.map((s, i) => roundTrip(s, `hello-${i}`)));
    for (const s of streams) s.close();
    pool.close();
  });

  test('a connection carries at most 100 streams; the 101st opens another', async () => {
    const pool = new HbonePool({ context, log });
    const before = accepted;
    const streams = await Promise.all(Array.from({ length: 101 }, () => pool.open(key, authority(), {})));
    assert.equal(accepted - before, 2, 'two TCP connections for 101 streams');
    assert.deepEqual(pool.sessions().map((s) => s.streams).sort((a, b) => a - b), [1, 100]);
    for (const s of streams) s.close();
    pool.close();
  });

  test('eviction: new streams get a new connection, the open stream still works until it ends', async () => {
    const pool = new HbonePool({ context, log });
    const before = accepted;
    const old = await pool.open(key, authority(), {});
    assert.equal(pool.evict('127.0.0.1'), 1);
    assert.equal(pool.size, 0, 'the evicted connection is out of the pool');
    await roundTrip(old, 'still-here');
    const fresh = await pool.open(key, authority(), {});
    assert.equal(accepted - before, 2, 'a new connection after eviction');
    await roundTrip(fresh, 'fresh');
    old.close();
    fresh.close();
    pool.close();
  });

  test('an idle connection is closed after the idle timeout', async () => {
    const pool = new HbonePool({ context, log, idleTimeoutMs: 50 });
    const s = await pool.open(key, authority(), {});
    await roundTrip(s, 'x');
    s.close();
    const deadline = Date.now() + 5000;
    while (pool.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(pool.size, 0, 'the idle connection left the pool');
    pool.close();
  });

  test('a peer proving another identity is refused, and the failure names both', async () => {
    const pool = new HbonePool({ context, log });
    await assert.rejects(pool.open({ ...key, port, expected: ['spiffe://cluster.local/ns/shop/sa/payments'] }, authority(), {}), /is spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web, expected spiffe:\/\/cluster\.local\/ns\/shop\/sa\/payments/);
    assert.equal(pool.size, 0);
    pool.close();
  });
});
