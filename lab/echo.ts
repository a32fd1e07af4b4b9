// The lab's built-in workload. Every container port of every lab pod runs it, and it answers with
// who it is and which addresses it saw, so tests can prove where a connection really landed (which
// pod, and whether the client address survived capture). One port speaks HTTP/1.1, h2c (prior
// knowledge) and raw TCP, told apart by the first bytes the client sends — the way a real mesh
// workload port is opaque to the proxy in front of it.
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import type { Duplex, Writable } from 'node:stream';

export interface EchoIdentity {
  pod: string;
  namespace: string;
  node: string;
}

export type EchoProtocol = 'HTTP/1.1' | 'h2c' | 'tcp';

/** What the echo answers: the pod's identity plus what this connection (and request) looked like. */
export interface EchoReply extends EchoIdentity {
  /** The client's address as the server socket saw it: `<ip>:<port>`. */
  source: string;
  /** The address the client reached: `<ip>:<port>`. */
  destination: string;
  protocol: EchoProtocol;
  method?: string;
  path?: string;
}

/** Idle connections are closed after this long; long enough for any test or benchmark pause. */
export const ECHO_IDLE_TIMEOUT_MS = 10 * 60 * 1000;

/** Upper bound of `GET /bytes/<n>`: enough for throughput runs, small enough to stop typos. */
export const ECHO_MAX_BYTES = 10 * 1024 ** 3;

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
// Methods are the upper-case ones Node's parser knows (the longest is 16 characters); restricting
// them keeps a raw TCP client's first word ("hello") from waiting for a newline it never sends.
const REQUEST_LINE = /^[A-Z-]{1,20} \S+ HTTP\/1\.[01]\r?$/;
const METHOD_PREFIX = /^[A-Z-]{0,20}$/;
const METHOD_THEN_TARGET = /^[A-Z-]{1,20} \S*$/;
const METHOD_TARGET_VERSION = /^[A-Z-]{1,20} \S+ (\S*\r?)$/;
// A request line longer than this is not HTTP any client of the lab sends; stop waiting for it.
const MAX_SNIFF_BYTES = 8192;

export type SniffResult = 'http1' | 'h2c' | 'tcp' | 'more';

/**
 * Decides the protocol from the bytes received so far. `more` means the bytes are still a prefix of
 * an HTTP/1 request line or of the HTTP/2 preface: a client may split its first write.
 */
export function sniffProtocol(bytes: Buffer): SniffResult {
  if (bytes.length >= H2_PREFACE.length) {
    if (bytes.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)) return 'h2c';
  } else if (H2_PREFACE.subarray(0, bytes.length).equals(bytes)) {
    return 'more';
  }
  const newline = bytes.indexOf(0x0a);
  const line = bytes.subarray(0, newline === -1 ? Math.min(bytes.length, MAX_SNIFF_BYTES) : newline).toString('latin1');
  if (newline !== -1) return REQUEST_LINE.test(line) ? 'http1' : 'tcp';
  if (bytes.length >= MAX_SNIFF_BYTES) return 'tcp';
  return couldBeRequestLine(line) ? 'more' : 'tcp';
}

function couldBeRequestLine(partial: string): boolean {
  if (METHOD_PREFIX.test(partial) || METHOD_THEN_TARGET.test(partial)) return true;
  const version = METHOD_TARGET_VERSION.exec(partial)?.[1];
  return version !== undefined && ['HTTP/1.1\r', 'HTTP/1.0\r'].some((v) => v.startsWith(version));
}

/** `<ip>:<port>`, with IPv4-mapped IPv6 shown as plain IPv4 and IPv6 in brackets. */
export function formatEndpoint(address: string | undefined, port: number | undefined): string {
  let ip = address ?? '';
  if (ip.startsWith('::ffff:') && ip.includes('.')) ip = ip.slice(7);
  return `${ip.includes(':') ? `[${ip}]` : ip}:${port ?? 0}`;
}

interface Endpoints {
  source: string;
  destination: string;
}

function endpointsOf(socket: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): Endpoints {
  return {
    source: formatEndpoint(socket.remoteAddress, socket.remotePort),
    destination: formatEndpoint(socket.localAddress, socket.localPort),
  };
}

/**
 * Installs the echo on a listening (or about to listen) server. The caller owns the server: it
 * creates it, listens (in the lab, on a socket created inside the pod's network namespace) and
 * closes it; this only handles the connections it accepts.
 */
export function attachEcho(server: net.Server, identity: EchoIdentity): void {
  const h1 = createHttp1(identity);
  const h2 = createH2c(identity);
  server.on('connection', (socket: net.Socket) => acceptConnection(socket, identity, h1, h2));
}

function acceptConnection(socket: net.Socket, identity: EchoIdentity, h1: http.Server, h2: http2.Http2Server): void {
  socket.setNoDelay(true);
  // A peer's reset or a write after its close must never become an unhandled 'error'.
  socket.on('error', () => socket.destroy());
  const onIdle = (): void => {
    socket.destroy();
  };
  socket.setTimeout(ECHO_IDLE_TIMEOUT_MS, onIdle);

  let received: Buffer = Buffer.alloc(0);
  const release = (): void => {
    socket.removeListener('data', onData);
    socket.removeListener('end', onEnd);
    socket.removeListener('timeout', onIdle);
    socket.setTimeout(0);
  };
  const onData = (chunk: Buffer): void => {
    received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
    const protocol = sniffProtocol(received);
    if (protocol === 'more') return;
    release();
    if (protocol === 'http1') {
      // The HTTP/1 parser takes over the socket's handle on 'connection', so unshift() would never
      // reach it; replaying the bytes as a 'data' event feeds the parser's JS path instead.
      h1.emit('connection', socket);
      socket.emit('data', received);
    } else if (protocol === 'h2c') {
      // The HTTP/2 session reads through the stream, so the preface can be pushed back.
      socket.pause();
      socket.unshift(received);
      h2.emit('connection', socket);
    } else {
      startRawEcho(socket, identity, received);
    }
  };
  // A client that half-closes before we could classify its bytes still gets its raw TCP answer.
  const onEnd = (): void => {
    release();
    if (received.length > 0) startRawEcho(socket, identity, received);
    socket.end();
  };
  socket.on('data', onData);
  socket.on('end', onEnd);
}

function startRawEcho(socket: net.Socket, identity: EchoIdentity, first: Buffer): void {
  socket.setTimeout(ECHO_IDLE_TIMEOUT_MS, () => socket.destroy());
  const reply: EchoReply = { ...identity, ...endpointsOf(socket), protocol: 'tcp' };
  socket.write(`${JSON.stringify(reply)}\n`);
  socket.write(first);
  // pipe() gives the echo the socket's own backpressure: a slow reader pauses our reads.
  if (!socket.readableEnded) socket.pipe(socket);
}

function identityBody(identity: EchoIdentity, endpoints: Endpoints, protocol: EchoProtocol, method: string, path: string): string {
  const reply: EchoReply = { ...identity, ...endpoints, protocol, method, path };
  return `${JSON.stringify(reply)}\n`;
}

type Route = { kind: 'identity' } | { kind: 'echo' } | { kind: 'bytes'; count: number } | { kind: 'bad'; reason: string };

function route(method: string, path: string): Route {
  const pathname = path.split('?', 1)[0] ?? '/';
  if (pathname === '/echo' && (method === 'POST' || method === 'PUT')) return { kind: 'echo' };
  const bytes = /^\/bytes\/(\d+)$/.exec(pathname);
  if (bytes?.[1] !== undefined && (method === 'GET' || method === 'HEAD')) {
    const count = Number(bytes[1]);
    if (!Number.isSafeInteger(count) || count > ECHO_MAX_BYTES) {
      return { kind: 'bad', reason: `/bytes/<n> takes at most ${ECHO_MAX_BYTES} bytes\n` };
    }
    return { kind: 'bytes', count };
  }
  return { kind: 'identity' };
}

const FILL = Buffer.alloc(64 * 1024, 'ambit-echo/');

/**
 * Writes `count` bytes, respecting the writer's backpressure: writes until write() says the buffer
 * is full, then waits for 'drain'. `alive` stops it when the peer went away mid-response.
 */
function pumpBytes(out: Writable, count: number, alive: () => boolean): void {
  let remaining = count;
  const fill = (): void => {
    while (remaining > 0) {
      if (!alive()) return;
      const size = Math.min(remaining, FILL.length);
      remaining -= size;
      if (!out.write(size === FILL.length ? FILL : FILL.subarray(0, size))) {
        out.once('drain', fill);
        return;
      }
    }
    if (alive()) out.end();
  };
  fill();
}

function createHttp1(identity: EchoIdentity): http.Server {
  const h1 = http.createServer({ requestTimeout: 0, keepAliveTimeout: ECHO_IDLE_TIMEOUT_MS }, (req, res) => {
    try {
      serveRequest(req, res, identity);
    } catch {
      // Whatever a client managed to provoke ends its connection, never the process.
      req.socket.destroy();
    }
  });
  h1.timeout = ECHO_IDLE_TIMEOUT_MS;
  h1.on('clientError', (_err: Error, socket: Duplex) => socket.destroy());
  return h1;
}

function serveRequest(req: http.IncomingMessage, res: http.ServerResponse, identity: EchoIdentity): void {
  const method = req.method ?? 'GET';
  const path = req.url ?? '/';
  const target = route(method, path);
  res.on('error', () => req.socket.destroy());
  const alive = (): boolean => !res.destroyed && !req.socket.destroyed;
  switch (target.kind) {
    case 'echo':
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
      req.pipe(res);
      return;
    case 'bytes':
      req.resume();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(target.count) });
      if (method === 'HEAD') res.end();
      else pumpBytes(res, target.count, alive);
      return;
    case 'bad':
      req.resume();
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(target.reason);
      return;
    case 'identity': {
      req.resume();
      const body = identityBody(identity, endpointsOf(req.socket), 'HTTP/1.1', method, path);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
  }
}

function createH2c(identity: EchoIdentity): http2.Http2Server {
  const h2 = http2.createServer();
  h2.setTimeout(ECHO_IDLE_TIMEOUT_MS);
  h2.on('session', (session: http2.ServerHttp2Session) => {
    session.on('error', () => session.destroy());
  });
  h2.on('sessionError', () => undefined);
  h2.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    // The client may reset the stream (or drop the session) at any moment, even before we answer;
    // every operation below is guarded so a peer can never take the process down.
    stream.on('error', () => undefined);
    try {
      serveStream(stream, headers, identity);
    } catch {
      if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    }
  });
  return h2;
}

function serveStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, identity: EchoIdentity): void {
  const method = headers[':method'] ?? 'GET';
  const path = headers[':path'] ?? '/';
  const alive = (): boolean => !stream.destroyed && !stream.closed;
  if (!alive()) return;
  const target = route(method, path);
  switch (target.kind) {
    case 'echo': {
      const contentType = headers['content-type'] ?? 'application/octet-stream';
      stream.respond({ ':status': 200, 'content-type': contentType });
      stream.pipe(stream);
      return;
    }
    case 'bytes':
      stream.resume();
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'content-length': String(target.count) });
      if (method === 'HEAD') stream.end();
      else pumpBytes(stream, target.count, alive);
      return;
    case 'bad':
      stream.resume();
      stream.respond({ ':status': 400, 'content-type': 'text/plain' });
      stream.end(target.reason);
      return;
    case 'identity': {
      stream.resume();
      const body = identityBody(identity, endpointsOf(stream.session?.socket ?? {}), 'h2c', method, path);
      stream.respond({ ':status': 200, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
      stream.end(method === 'HEAD' ? undefined : body);
      return;
    }
  }
}
