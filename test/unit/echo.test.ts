import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { attachEcho, sniffProtocol, type EchoReply } from '../../lab/echo.js';

const identity = { pod: 'echo-0', namespace: 'lab', node: 'node-a' };

describe('lab echo workload', { timeout: 30_000 }, () => {
  let server: net.Server;
  let port = 0;

  before(async () => {
    server = net.createServer();
    attachEcho(server, identity);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as net.AddressInfo).port;
  });

  after(async () => {
    server.close();
  });

  function h1Get(agent: http.Agent, path: string): Promise<{ status: number; body: Buffer; localPort: number; headers: http.IncomingHttpHeaders }> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), localPort: req.socket?.localPort ?? 0, headers: res.headers }),
        );
        res.on('error', reject);
      });
      req.on('error', reject);
    });
  }

  it('classifies first bytes, waiting while they may still be a request line or the h2 preface', () => {
    assert.equal(sniffProtocol(Buffer.from('GET / HTTP/1.1\r\n')), 'http1');
    assert.equal(sniffProtocol(Buffer.from('GE')), 'more');
    assert.equal(sniffProtocol(Buffer.from('GET /x HTT')), 'more');
    assert.equal(sniffProtocol(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')), 'h2c');
    assert.equal(sniffProtocol(Buffer.from('PRI * HT')), 'more');
    assert.equal(sniffProtocol(Buffer.from('hello world\n')), 'tcp');
    assert.equal(sniffProtocol(Buffer.from('x')), 'tcp');
    assert.equal(sniffProtocol(Buffer.from('GET')), 'more');
    assert.equal(sniffProtocol(Buffer.from('GET / HTTP/2\r\n')), 'tcp');
    assert.equal(sniffProtocol(Buffer.from([0x16, 0x03, 0x01])), 'tcp');
  });

  it('answers HTTP/1.1 with its identity and the client address it saw, reusing the connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await h1Get(agent, '/');
      assert.equal(first.status, 200);
      assert.equal(first.headers['content-type'], 'application/json');
      const reply = JSON.parse(first.body.toString()) as EchoReply;
      assert.deepEqual(reply, {
        ...identity,
        source: `127.0.0.1:${first.localPort}`,
        destination: `127.0.0.1:${port}`,
        protocol: 'HTTP/1.1',
        method: 'GET',
        path: '/',
      });
      const second = await h1Get(agent, '/anything?x=1');
      const again = JSON.parse(second.body.toString()) as EchoReply;
      assert.equal(again.path, '/anything?x=1');
      assert.equal(second.localPort, first.localPort, 'keep-alive reuses the connection');
      assert.equal(again.source, reply.source);
    } finally {
      agent.destroy();
    }
  });

  it('parses an HTTP/1 request whose first line arrives split over several writes', async () => {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write('GE');
    await new Promise((r) => setTimeout(r, 20));
    socket.write('T /split HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    await once(socket, 'end');
    const text = Buffer.concat(chunks).toString();
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    const reply = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as EchoReply;
    assert.equal(reply.path, '/split');
    assert.equal(reply.source, `127.0.0.1:${socket.localPort}`);
    socket.destroy();
  });

  it('serves /bytes/N with exactly N bytes over HTTP/1.1', async () => {
    const agent = new http.Agent({ keepAlive: false });
    try {
      const n = 5 * 1024 * 1024 + 17;
      const res = await h1Get(agent, `/bytes/${n}`);
      assert.equal(res.status, 200);
      assert.equal(res.body.length, n);
      assert.equal(res.headers['content-length'], String(n));
      const zero = await h1Get(agent, '/bytes/0');
      assert.equal(zero.body.length, 0);
      const tooMany = await h1Get(agent, `/bytes/${11 * 1024 ** 3}`);
      assert.equal(tooMany.status, 400);
    } finally {
      agent.destroy();
    }
  });

  it('echoes a POST /echo body over HTTP/1.1', async () => {
    const payload = Buffer.alloc(300_000, 'payload-');
    const body = await new Promise<Buffer>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/echo', method: 'POST', agent: false, headers: { 'content-type': 'text/plain' } }, (res) => {
        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['content-type'], 'text/plain');
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks)));
      });
      req.on('error', reject);
      req.write(payload.subarray(0, 1000));
      req.end(payload.subarray(1000));
    });
    assert.ok(body.equals(payload));
  });

  function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const stream = session.request(headers);
      let status = 0;
      const chunks: Buffer[] = [];
      stream.on('response', (h) => {
        status = Number(h[':status']);
      });
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
      stream.on('error', reject);
      stream.end(body);
    });
  }

  it('answers h2c (prior knowledge) on two streams of one session', async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    try {
      await once(session, 'connect');
      const [a, b] = await Promise.all([
        h2Request(session, { ':path': '/first' }),
        h2Request(session, { ':path': '/second', ':method': 'GET' }),
      ]);
      const ra = JSON.parse(a.body.toString()) as EchoReply;
      const rb = JSON.parse(b.body.toString()) as EchoReply;
      assert.equal(a.status, 200);
      assert.equal(ra.protocol, 'h2c');
      assert.equal(ra.path, '/first');
      assert.equal(rb.path, '/second');
      assert.equal(ra.method, 'GET');
      assert.equal(ra.source, `127.0.0.1:${session.socket.localPort}`);
      assert.equal(ra.source, rb.source, 'both streams ride one connection');
      assert.equal(ra.destination, `127.0.0.1:${port}`);

      const bytes = await h2Request(session, { ':path': '/bytes/1000000' });
      assert.equal(bytes.body.length, 1_000_000);
      const payload = Buffer.alloc(200_000, 'h2-body');
      const echoed = await h2Request(session, { ':path': '/echo', ':method': 'POST' }, payload);
      assert.ok(echoed.body.equals(payload));
    } finally {
      session.close();
    }
  });

  it('survives a client resetting an h2 stream mid-response, and keeps serving the session', async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    try {
      await once(session, 'connect');
      const stream = session.request({ ':path': `/bytes/${1024 ** 3}` });
      stream.on('error', () => undefined);
      await once(stream, 'data');
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await once(stream, 'close');
      // A stream reset before the server even answers must not hurt either.
      const early = session.request({ ':path': '/' });
      early.on('error', () => undefined);
      early.close(http2.constants.NGHTTP2_CANCEL);
      const after = await h2Request(session, { ':path': '/still-there' });
      assert.equal(after.status, 200);
      assert.equal((JSON.parse(after.body.toString()) as EchoReply).path, '/still-there');
    } finally {
      session.close();
    }
  });

  it('over raw TCP sends one identity line first, then echoes every byte', async () => {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const clientPort = socket.localPort;
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.write('hello ');
    await new Promise((r) => setTimeout(r, 20));
    socket.write('raw ');
    socket.write('world\n');
    socket.end('bye');
    await once(socket, 'end');
    const text = Buffer.concat(chunks).toString();
    const newline = text.indexOf('\n');
    const reply = JSON.parse(text.slice(0, newline)) as EchoReply;
    assert.deepEqual(reply, { ...identity, source: `127.0.0.1:${clientPort}`, destination: `127.0.0.1:${port}`, protocol: 'tcp' });
    assert.equal(text.slice(newline + 1), 'hello raw world\nbye');
  });

  it('keeps a silent connection open, and answers once bytes arrive', async () => {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    let closed = false;
    socket.on('close', () => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(closed, false);
    socket.write('x');
    const [line] = (await once(socket, 'data')) as [Buffer];
    assert.equal((JSON.parse(line.toString().split('\n')[0] ?? '') as EchoReply).protocol, 'tcp');
    socket.destroy();
  });

  it('survives clients that vanish mid-transfer', async () => {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`GET /bytes/${1024 ** 3} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await once(socket, 'data');
    socket.resetAndDestroy();
    const garbage = net.connect(port, '127.0.0.1');
    await once(garbage, 'connect');
    garbage.write('GET / HTTP/1.1\r\nbroken header line\r\n\r\n');
    garbage.on('error', () => undefined);
    await once(garbage, 'close');
    const agent = new http.Agent();
    try {
      const ok = await h1Get(agent, '/');
      assert.equal(ok.status, 200);
    } finally {
      agent.destroy();
    }
  });
});
