// HBONE on loopback: the server (mesh/hbone/server.ts) against an HTTP/2 client written here with
// node:tls and node:http2 (not Ambit's client), then Ambit's client (mesh/hbone/client.ts) against
// the server. Certificates come from openssl. Status codes, certificate checks, TLS parameters,
// bytes both ways with half-close, many streams on one connection, and malformed requests.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { pino } from 'pino';
import { HboneServer, type ConnectRequest } from '../../mesh/hbone/server.js';
import { HboneSession } from '../../mesh/hbone/client.js';
import { HboneConnectionError, HboneStatusError } from '../../mesh/hbone/errors.js';
import { workloadContext, type WorkloadCredential } from '../../mesh/hbone/tls.js';
import { parseIdentity } from '../../mesh/identity/spiffe.js';
import { makePki, type TestPki } from '../support/pki.js';

const WEB = 'spiffe://cluster.local/ns/shop/sa/web';
const CLIENT = 'spiffe://cluster.local/ns/shop/sa/client';
const DENIED_PORT = 9;

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

interface RawResult {
  status?: number;
  error?: string;
}

describe('HBONE', () => {
  let pki: TestPki;
  let other: TestPki;
  let web: WorkloadCredential;
  let client: WorkloadCredential;
  let hbone: HboneServer;
  let listener: net.Server;
  let echo: net.Server;
  let port: number;
  let echoPort: number;
  const requests: ConnectRequest[] = [];

  before(async () => {
    pki = makePki();
    other = makePki('other-root');
    web = pki.credential(WEB);
    client = pki.credential(CLIENT);
    // The echo upstream: answers each chunk, ends after the client does.
    echo = net.createServer((s) => {
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => s.write(Buffer.concat([Buffer.from('echo:'), d])));
      s.on('end', () => s.end('bye'));
    });
    echoPort = await listen(echo);
    hbone = new HboneServer({
      credentialFor: (local) => (local === '127.0.0.1' ? web : undefined),
      roots: () => [pki.rootPem],
      trustDomain: 'cluster.local',
      log: pino({ level: process.env.AMBIT_TEST_LOG ?? 'silent' }),
      onConnect: (req) => {
        requests.push(req);
        if (req.target.port === DENIED_PORT) return req.reject(401);
        const upstream = net.connect(req.target.port, req.target.ip);
        upstream.once('connect', () => req.accept(upstream));
        upstream.once('error', () => req.reject(503));
      },
    });
    listener = net.createServer((s) => hbone.accept(s));
    port = await listen(listener);
  });

  after(() => {
    hbone?.close();
    listener?.close();
    echo?.close();
    pki?.close();
    other?.close();
  });

  /** TLS + HTTP/2 made here, as another implementation would. */
  function rawSession(cred: { keyPem: string; chain: readonly string[] } | undefined, tlsOpts: tls.ConnectionOptions = {}): Promise<{ session: http2.ClientHttp2Session; socket: tls.TLSSocket }> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        ca: [pki.rootPem],
        ...(cred ? { key: cred.keyPem, cert: cred.chain.slice(0, -1).join('\n') } : {}),
        ALPNProtocols: ['h2'],
        checkServerIdentity: () => undefined,
        ...tlsOpts,
      });
      socket.once('error', reject);
      socket.once('secureConnect', () => {
        const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => socket });
        session.once('error', reject);
        session.once('close', () => reject(new Error('session closed by the server')));
        session.once('remoteSettings', () => resolve({ session, socket }));
      });
    });
  }

  function request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<RawResult & { stream: http2.ClientHttp2Stream }> {
    return new Promise((resolve) => {
      const stream = session.request(headers, { endStream: false });
      stream.on('error', (err) => resolve({ error: err.message, stream }));
      stream.once('close', () => resolve({ error: 'closed without an answer', stream }));
      stream.once('response', (h) => resolve({ status: Number(h[':status']), stream }));
    });
  }

  function readAll(stream: NodeJS.ReadableStream): Promise<string> {
    return new Promise((resolve, reject) => {
      let out = '';
      stream.on('data', (d: Buffer) => (out += d.toString()));
      stream.on('end', () => resolve(out));
      stream.on('error', reject);
    });
  }

  test('a CONNECT is answered 200 only after the upstream connect, over TLS 1.3 with h2, the server proving the destination identity; bytes flow both ways and half-close passes', async () => {
    const { session, socket } = await rawSession(client);
    try {
      assert.equal(socket.getProtocol(), 'TLSv1.3');
      assert.equal(socket.alpnProtocol, 'h2');
      assert.match(socket.getPeerX509Certificate()!.subjectAltName!, /URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web/);
      const r = await request(session, { ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}`, baggage: 'k8s.namespace.name=shop' });
      assert.equal(r.status, 200);
      const req = requests.at(-1)!;
      assert.deepEqual(req.peer, parseIdentity(CLIENT), 'the server saw the client identity');
      assert.deepEqual(req.target, { ip: '127.0.0.1', port: echoPort, family: 4 });
      assert.equal(req.headers.baggage, 'k8s.namespace.name=shop');
      const body = readAll(r.stream);
      r.stream.write('hello');
      await new Promise((res) => setTimeout(res, 50));
      r.stream.end();
      assert.equal(await body, 'echo:hellobye', 'the reply, then the upstream ended after our half-close');
    } finally {
      session.destroy();
    }
  });

  test('status codes: 400 for a non-CONNECT or a malformed authority, 401 for a policy denial, 503 for a failed connect', async () => {
    const { session } = await rawSession(client);
    try {
      assert.equal((await request(session, { ':method': 'GET', ':path': '/', ':authority': `127.0.0.1:${echoPort}` })).status, 400);
      for (const authority of ['example.com:80', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', '[::1:80', '::1:80', '127.0.0.1:80x']) {
        assert.equal((await request(session, { ':method': 'CONNECT', ':authority': authority })).status, 400, `authority ${JSON.stringify(authority)}`);
      }
      assert.equal((await request(session, { ':method': 'CONNECT', ':authority': `127.0.0.1:${DENIED_PORT}` })).status, 401);
      const closed = net.createServer();
      const closedPort = await listen(closed);
      closed.close();
      assert.equal((await request(session, { ':method': 'CONNECT', ':authority': `127.0.0.1:${closedPort}` })).status, 503);
      assert.equal((await request(session, { ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` })).status, 200, 'the session still serves after errors');
    } finally {
      session.destroy();
    }
  });

  /** Whether a client with these credentials can get any CONNECT answered 200. */
  async function served(cred: { keyPem: string; chain: readonly string[] } | undefined, tlsOpts: tls.ConnectionOptions = {}): Promise<boolean> {
    let session: http2.ClientHttp2Session;
    try {
      ({ session } = await rawSession(cred, tlsOpts));
    } catch {
      return false;
    }
    try {
      const r = await request(session, { ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` }).catch(() => ({ status: undefined }));
      return r.status === 200;
    } finally {
      session.destroy();
    }
  }

  test('client certificates: none, an untrusted root, another trust domain, a non-SPIFFE SAN, TLS 1.2 and no h2 are all refused', async () => {
    assert.equal(await served(undefined), false, 'no client certificate');
    assert.equal(await served(other.issue(CLIENT)), false, 'an untrusted root');
    assert.equal(await served(pki.issue('spiffe://evil.example/ns/shop/sa/client')), false, 'another trust domain');
    assert.equal(await served(pki.issue('https://example.com/client')), false, 'no SPIFFE identity');
    assert.equal(await served(client, { maxVersion: 'TLSv1.2' }), false, 'TLS 1.2');
    assert.equal(await served(client, { ALPNProtocols: ['http/1.1'] }), false, 'no h2');
    assert.equal(await served(client), true, 'the good client, for contrast');
  });

  test("Ambit's client: the peer's identity is checked for equality, streams share one connection, a denial is an HboneStatusError", async () => {
    const context = workloadContext(client, [pki.rootPem]);
    await assert.rejects(
      HboneSession.connect({ socket: net.connect(port, '127.0.0.1'), context, expected: [parseIdentity('spiffe://cluster.local/ns/shop/sa/api')] }),
      (err: unknown) => err instanceof HboneConnectionError && /is spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web, expected spiffe:\/\/cluster\.local\/ns\/shop\/sa\/api/.test(err.message),
    );
    const s = await HboneSession.connect({ socket: net.connect(port, '127.0.0.1'), context, expected: [parseIdentity('spiffe://cluster.local/ns/shop/sa/api'), parseIdentity(WEB)] });
    try {
      assert.deepEqual(s.peer, parseIdentity(WEB));
      const remotePorts = new Set<number>();
      const streams = await Promise.all(Array.from({ length: 10 }, () => s.open(`127.0.0.1:${echoPort}`)));
      for (const r of requests.slice(-10)) remotePorts.add(r.remotePort);
      assert.equal(remotePorts.size, 1, 'ten streams, one TCP connection');
      assert.equal(s.activeStreams, 10);
      const replies = await Promise.all(
        streams.map((st, i) => {
          const body = readAll(st);
          st.end(`n${i}`);
          return body;
        }),
      );
      assert.deepEqual(replies, streams.map((_, i) => `echo:n${i}bye`));
      await assert.rejects(s.open(`127.0.0.1:${DENIED_PORT}`), (err: unknown) => err instanceof HboneStatusError && err.status === 401);
    } finally {
      s.close();
    }
  });

  test("Ambit's client refuses a server from an untrusted root, and says which port may be blocked on a timeout", async () => {
    const rogueCred = other.issue(WEB);
    const rogue = tls.createServer({ key: rogueCred.keyPem, cert: rogueCred.chain[0], ALPNProtocols: ['h2'] });
    const roguePort = await listen(rogue as unknown as net.Server);
    const silent = net.createServer(() => undefined);
    const silentPort = await listen(silent);
    try {
      const context = workloadContext(client, [pki.rootPem]);
      await assert.rejects(HboneSession.connect({ socket: net.connect(roguePort, '127.0.0.1'), context, expected: [parseIdentity(WEB)] }), HboneConnectionError);
      await assert.rejects(HboneSession.connect({ socket: net.connect(silentPort, '127.0.0.1'), context, expected: [parseIdentity(WEB)], timeoutMs: 300 }), /port 15008/);
    } finally {
      rogue.close();
      silent.close();
    }
  });

  test('fuzz: random methods and authorities are answered 400, 503 or 200, never crash the server, and leave the session serving', async () => {
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const pieces = ['127.0.0.1', '[::1]', ':', `${echoPort}`, '0', '65536', '[', ']', 'a', '%', '\u00e9', '999999999', '.', '1.2.3.4', '::'];
    const { session } = await rawSession(client);
    try {
      for (let i = 0; i < 200; i++) {
        let authority = '';
        for (let j = rand(5); j >= 0; j--) authority += pieces[rand(pieces.length)];
        const method = ['CONNECT', 'GET', 'POST', 'connect'][rand(4)]!;
        const headers: http2.OutgoingHttpHeaders = { ':method': method, ':authority': authority };
        if (method !== 'CONNECT') headers[':path'] = '/';
        let r: RawResult & { stream?: http2.ClientHttp2Stream };
        try {
          r = await request(session, headers);
        } catch (err) {
          r = { error: (err as Error).message };
        }
        if (r.status !== undefined) assert.ok([200, 400, 503].includes(r.status), `${method} ${JSON.stringify(authority)} → ${r.status}`);
        r.stream?.destroy();
      }
    } finally {
      session.destroy();
    }
    const { session: again } = await rawSession(client);
    assert.equal((await request(again, { ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` })).status, 200, 'still serving');
    again.destroy();
  });

  test('a client that never starts its TLS handshake, or stays silent after it, is disconnected after the handshake deadline', async () => {
    const quick = new HboneServer({
      credentialFor: () => web,
      roots: () => [pki.rootPem],
      trustDomain: 'cluster.local',
      log: pino({ level: 'silent' }),
      onConnect: (req) => req.reject(503),
      handshakeTimeoutMs: 300,
    });
    const l = net.createServer((s) => quick.accept(s));
    const p = await listen(l);
    const closedWithin = (socket: net.Socket, ms: number): Promise<boolean> =>
      new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), ms);
        socket.on('error', () => undefined);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    const tlsClient = (): tls.TLSSocket => {
      const t = tls.connect({ host: '127.0.0.1', port: p, ca: [pki.rootPem], key: client.keyPem, cert: client.chain[0], ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
      // Read, so that the server's close is seen.
      t.resume();
      return t;
    };
    const silent = net.connect(p, '127.0.0.1');
    const mute = tlsClient();
    try {
      assert.equal(await closedWithin(silent, 5000), true, 'no TLS handshake: closed by the server');
      assert.equal(await closedWithin(mute, 5000), true, 'TLS, then silence: closed by the server');
    } finally {
      silent.destroy();
      mute.destroy();
      quick.close();
      l.close();
    }
  });
});
