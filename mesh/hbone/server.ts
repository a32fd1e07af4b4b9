// The receiving side of HBONE (istio-ambient-spec.md §2.4): mutual TLS with the certificate of
// the destination (chosen by the connection's local address, since the transparent listener
// accepts for every pod of the node), then HTTP/2 CONNECT streams. Each destination credential
// gets an HTTP/2 secure server of its own, fed the accepted sockets: Node's supported way to run
// TLS and HTTP/2 on a socket accepted elsewhere, with a certificate chosen per socket.
// What a stream may reach is the
// caller's decision (ConnectRequest): this module only speaks the protocol, answers malformed
// requests with 400, and joins an accepted stream to its upstream socket.
//
// A peer's misbehaviour must cost it its connection, never the process or unbounded resources:
// handshakes are bounded in time and in number, streams it resets before our answer never reach
// the caller and too many of them end the session (HTTP/2 rapid reset), and a session we end is
// closed at the socket even when the peer no longer reads.
import http2 from 'node:http2';
import type net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { Identity } from '../identity/spiffe.js';
import { parseAuthority, type HboneTarget } from './authority.js';
import { HBONE_ALPN, identityUriOf, peerIdentity, workloadTlsOptions, type WorkloadCredential } from './tls.js';
import { keepAlive } from './keepalive.js';

export const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Connections still in their TLS handshake, per server. Node bounds each handshake in time only, so
 * a peer opening connections faster than the deadline expires them would hold sockets (file
 * descriptors) without limit. Past the bound the oldest is dropped: a real client finishes its
 * handshake in milliseconds, so it is the flood's own connections that go.
 */
export const MAX_PENDING_HANDSHAKES = 1024;
const MAX_CONCURRENT_STREAMS = 200;
/**
 * HTTP/2 rapid reset (CVE-2023-44487): streams a peer may reset before we answered them, at once
 * and then per second, before its session is ended with ENHANCE_YOUR_CALM. A real client resets an
 * unanswered stream only when its own client gave up during our upstream connect; twice a full set
 * of concurrent streams is more than that. nghttp2's own limit (1000, then 33 per second) answers
 * with a GOAWAY but Node leaves that connection open, so this one must come first.
 */
export const RAPID_RESET_BURST = 2 * MAX_CONCURRENT_STREAMS;
const RESETS_PER_SECOND = 20;
/** How long a session we ended may take to flush its GOAWAY before its socket is closed anyway. */
const CLOSE_GRACE_MS = 1000;
/** ztunnel's server settings (§2.2). */
const SERVER_SETTINGS: http2.Settings = {
  maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
  initialWindowSize: 4 << 20,
  maxFrameSize: 1 << 20,
  maxHeaderListSize: 64 << 10,
  enablePush: false,
};
const CONNECTION_WINDOW = 16 << 20;

export type RejectStatus = 400 | 401 | 503;

export interface ConnectRequest {
  target: HboneTarget;
  /** The verified client identity (same trust domain as ours). */
  peer: Identity;
  /** The address the client dialled: the destination pod's. */
  localAddress: string;
  remoteAddress: string;
  remotePort: number;
  headers: http2.IncomingHttpHeaders;
  /** Ends the stream with an error status and no body. */
  reject(status: RejectStatus): void;
  /** Answers 200 and joins the stream to `upstream` both ways (the caller connected it first). */
  accept(upstream: net.Socket): void;
  /** Whether the client is still there (a connect that took long may outlive the stream). */
  readonly open: boolean;
}

export interface HboneServerOptions {
  /** The credential of the workload at this local address, or undefined when none is served here. */
  credentialFor(localAddress: string): WorkloadCredential | undefined;
  /** The trusted roots (a change takes effect with the next credential). */
  roots(): readonly string[];
  trustDomain: string;
  /**
   * Every well-formed CONNECT the client has not reset by the time it is dispatched (a turn of the
   * event loop after it arrived); it must call reject() or accept().
   */
  onConnect(req: ConnectRequest): void;
  log: Logger;
  handshakeTimeoutMs?: number;
  pingIntervalMs?: number;
  /** How long a keepalive PING may go unanswered before the session is ended (20 s). */
  pingTimeoutMs?: number;
  /** See MAX_PENDING_HANDSHAKES. */
  maxPendingHandshakes?: number;
}

interface Listener {
  /** The leaf it serves, to notice a renewed certificate. */
  leaf: string;
  server: http2.Http2SecureServer;
}

export class HboneServer {
  /** One per destination identity. */
  private readonly listeners = new Map<string, Listener>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** Every open accepted socket, by its four-tuple: a session's own socket is only reachable so. */
  private readonly sockets = new Map<string, net.Socket>();
  /** Sockets still in their TLS handshake, oldest first. */
  private readonly handshaking = new Set<net.Socket>();
  /** What a session needs once Node has unbound its socket (session.socket then throws). */
  private readonly bound = new WeakMap<http2.Http2Session, SessionState>();
  private closed = false;

  constructor(private readonly opts: HboneServerOptions) {}

  /** Takes an accepted TCP connection (to port 15008 of some pod of this node). */
  accept(socket: net.Socket): void {
    socket.on('error', () => undefined);
    const local = socket.localAddress ?? '';
    const cred = this.closed ? undefined : this.opts.credentialFor(local);
    if (!cred) {
      this.opts.log.debug({ local }, 'HBONE connection to an address with no workload certificate here: closed');
      socket.destroy();
      return;
    }
    // Already reset by the peer: there is nothing to track it by.
    if (socket.remoteAddress === undefined) {
      socket.destroy();
      return;
    }
    const key = fourTuple(socket);
    this.sockets.set(key, socket);
    this.handshaking.add(socket);
    socket.once('close', () => {
      if (this.sockets.get(key) === socket) this.sockets.delete(key);
      this.handshaking.delete(socket);
    });
    const max = this.opts.maxPendingHandshakes ?? MAX_PENDING_HANDSHAKES;
    for (const oldest of this.handshaking) {
      if (this.handshaking.size <= max) break;
      this.handshaking.delete(oldest);
      this.opts.log.debug({ peer: `${oldest.remoteAddress}:${oldest.remotePort}` }, `HBONE handshakes pending beyond ${max}: the oldest dropped`);
      oldest.destroy();
    }
    this.listenerFor(cred).server.emit('connection', socket);
  }

  /** Ends every session and pending handshake at once (streams are reset); the caller closes its listeners. */
  close(): void {
    this.closed = true;
    for (const s of this.sessions) this.end(s);
    for (const s of this.handshaking) s.destroy();
    this.listeners.clear();
  }

  /**
   * Ends a session, and then its socket: Node's destroy() half-closes the socket and waits for its
   * unsent bytes to leave, which never happens with a peer that stopped reading.
   */
  private end(session: http2.ServerHttp2Session, err?: Error, code?: number): void {
    const socket = this.bound.get(session)?.socket;
    if (!session.destroyed) {
      // Not destroy(undefined, code): an undefined error takes its default, NO_ERROR, as the code.
      if (err || code !== undefined) session.destroy(err ?? new Error(`HBONE session ended with HTTP/2 error ${code}`), code);
      else session.destroy();
    }
    if (!socket || socket.destroyed) return;
    const force = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    force.unref();
    socket.once('close', () => clearTimeout(force));
  }

  private listenerFor(cred: WorkloadCredential): Listener {
    const uri = identityUriOf(cred);
    const leaf = cred.chain[0] ?? '';
    const existing = this.listeners.get(uri);
    if (existing?.leaf === leaf) return existing;
    const options = workloadTlsOptions(cred, this.opts.roots());
    if (existing) {
      // A renewed certificate: new handshakes use it; open sessions keep theirs.
      existing.server.setSecureContext(options);
      existing.leaf = leaf;
      return existing;
    }
    const server = http2.createSecureServer({
      ...options,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: [HBONE_ALPN],
      settings: SERVER_SETTINGS,
      maxSessionMemory: 64,
      // A client that connects and never finishes its handshake holds a socket only this long.
      handshakeTimeout: this.opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
    });
    // The handshake is done: the socket no longer counts against the pending bound.
    server.on('secureConnection', (secure: tls.TLSSocket) => {
      const raw = this.sockets.get(fourTuple(secure));
      if (raw) this.handshaking.delete(raw);
    });
    server.on('session', (session) => this.session(session));
    // A client that offered no ALPN at all: Node would hold it for unknownProtocolTimeout (10 s).
    server.on('unknownProtocol', (secure: tls.TLSSocket) => {
      this.opts.log.info({ peer: `${secure.remoteAddress}:${secure.remotePort}` }, 'HBONE connection refused: no ALPN h2');
      secure.destroy();
    });
    server.on('stream', (stream, headers) => this.stream(stream, headers));
    // A peer's TLS or protocol error ends its connection, never the server.
    server.on('tlsClientError', (err, socket) => {
      this.opts.log.debug({ peer: `${socket.remoteAddress}:${socket.remotePort}`, err: err.message }, 'HBONE TLS failed');
    });
    server.on('sessionError', (err) => this.opts.log.debug({ err: err.message }, 'HBONE session error'));
    const created = { leaf, server };
    this.listeners.set(uri, created);
    return created;
  }

  private refusal(secure: tls.TLSSocket): string | undefined {
    if (secure.alpnProtocol !== HBONE_ALPN) return `ALPN ${JSON.stringify(secure.alpnProtocol)} is not h2`;
    const id = peerIdentity(secure);
    if (typeof id === 'string') return id;
    if (id.trustDomain !== this.opts.trustDomain) return `client trust domain ${id.trustDomain} is not ${this.opts.trustDomain}`;
    return undefined;
  }

  private session(session: http2.ServerHttp2Session): void {
    const secure = session.socket as tls.TLSSocket;
    session.on('error', () => undefined);
    const peer = `${secure.remoteAddress}:${secure.remotePort}`;
    // Streams the peer reset before we answered (a token bucket, see RAPID_RESET_BURST).
    let tokens = RAPID_RESET_BURST;
    let refilled = Date.now();
    const reset = (): void => {
      const now = Date.now();
      tokens = Math.min(RAPID_RESET_BURST, tokens + ((now - refilled) / 1000) * RESETS_PER_SECOND);
      refilled = now;
      if (--tokens >= 0) return;
      tokens = Infinity;
      this.opts.log.info({ peer }, 'HBONE connection ended: too many streams reset before an answer (rapid reset)');
      // Not from within nghttp2's frame processing, which is what reports the reset.
      setImmediate(() => this.end(session, undefined, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM));
    };
    this.bound.set(session, { socket: this.sockets.get(fourTuple(secure)), reset });
    const why = this.closed ? 'the server is closed' : this.refusal(secure);
    if (why) {
      this.opts.log.info({ peer }, `HBONE connection refused: ${why}`);
      this.end(session);
      return;
    }
    this.sessions.add(session);
    // A client that completed TLS must then speak HTTP/2 and acknowledge our SETTINGS within the
    // handshake deadline (RFC 9113's SETTINGS_TIMEOUT). Node ends a session on a bad preface but
    // waits forever for one that never comes, and until the acknowledgement our limits (the 64 KiB
    // header list above all) are not in force.
    const preface = setTimeout(() => {
      this.opts.log.info({ peer }, 'HBONE connection ended: no HTTP/2 preface or SETTINGS acknowledgement within the handshake deadline');
      this.end(session, undefined, http2.constants.NGHTTP2_SETTINGS_TIMEOUT);
    }, this.opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS);
    session.once('localSettings', () => clearTimeout(preface));
    session.once('close', () => {
      clearTimeout(preface);
      this.sessions.delete(session);
    });
    try {
      session.setLocalWindowSize(CONNECTION_WINDOW);
    } catch {
      // Already closing.
    }
    keepAlive(session, this.opts.pingIntervalMs, this.opts.pingTimeoutMs, (err) => {
      this.opts.log.debug({ peer, err: err.message }, 'HBONE session ended: keepalive');
      this.end(session, err);
    });
  }

  private stream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    // A reset by the peer (not our own destroy(), which marks the stream destroyed first).
    stream.once('aborted', () => {
      if (!stream.destroyed && !stream.headersSent && stream.session) this.bound.get(stream.session)?.reset();
    });
    if (headers[':method'] !== 'CONNECT') return respondError(stream, 400);
    const target = parseAuthority(headers[':authority']);
    if (!target) return respondError(stream, 400);
    const socket = stream.session?.socket as tls.TLSSocket | undefined;
    const peer = socket ? peerIdentity(socket) : 'no session';
    if (!socket || typeof peer === 'string') return respondError(stream, 400);
    // Dispatched a turn later: a HEADERS and its RST_STREAM read together (rapid reset) then cost
    // the caller nothing, and no upstream connect is started for a client already gone.
    setImmediate(() => {
      if (stream.destroyed || stream.closed) return;
      this.dispatch(stream, headers, target, peer, socket);
    });
  }

  private dispatch(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, target: HboneTarget, peer: Identity, socket: tls.TLSSocket): void {
    let answered = false;
    this.opts.onConnect({
      target,
      peer,
      localAddress: socket.localAddress ?? '',
      remoteAddress: socket.remoteAddress ?? '',
      remotePort: socket.remotePort ?? 0,
      headers,
      get open() {
        return !stream.destroyed && !stream.closed;
      },
      reject: (status) => {
        if (answered) return;
        answered = true;
        respondError(stream, status);
      },
      accept: (upstream) => {
        if (answered) {
          upstream.destroy();
          return;
        }
        answered = true;
        join(stream, upstream);
      },
    });
  }
}

interface SessionState {
  /** The accepted socket under the session's TLS. */
  socket: net.Socket | undefined;
  /** Counts a stream the peer reset before our answer. */
  reset(): void;
}

function fourTuple(s: net.Socket): string {
  return `${s.localAddress}|${s.localPort}|${s.remoteAddress}|${s.remotePort}`;
}

function respondError(stream: http2.ServerHttp2Stream, status: number): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  try {
    stream.respond({ ':status': status }, { endStream: true });
  } catch {
    stream.destroy();
  }
}

/** 200, then bytes both ways; a half-close on either side is passed on, an error resets both. */
function join(stream: http2.ServerHttp2Stream, upstream: net.Socket): void {
  if (stream.destroyed || stream.closed) {
    upstream.destroy();
    return;
  }
  try {
    stream.respond({ ':status': 200 });
  } catch {
    upstream.destroy();
    stream.destroy();
    return;
  }
  upstream.setNoDelay(true);
  upstream.on('error', () => stream.destroy());
  stream.on('error', () => upstream.destroy());
  stream.on('close', () => {
    if (!upstream.destroyed && !upstream.writableEnded) upstream.destroy();
  });
  upstream.on('close', () => {
    if (!stream.destroyed && !stream.writableEnded) stream.destroy();
  });
  stream.pipe(upstream);
  upstream.pipe(stream);
}
