// The receiving side of HBONE (istio-ambient-spec.md §2.4): mutual TLS with the certificate of
// the destination (chosen by the connection's local address, since the transparent listener
// accepts for every pod of the node), then HTTP/2 CONNECT streams. Each destination credential
// gets an HTTP/2 secure server of its own, fed the accepted sockets: Node's supported way to run
// TLS and HTTP/2 on a socket accepted elsewhere, with a certificate chosen per socket.
// What a stream may reach is the
// caller's decision (ConnectRequest): this module only speaks the protocol, answers malformed
// requests with 400, and joins an accepted stream to its upstream socket.
import http2 from 'node:http2';
import type net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { Identity } from '../identity/spiffe.js';
import { parseAuthority, type HboneTarget } from './authority.js';
import { HBONE_ALPN, identityUriOf, peerIdentity, workloadTlsOptions, type WorkloadCredential } from './tls.js';
import { keepAlive } from './keepalive.js';

export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** ztunnel's server settings (§2.2). */
const SERVER_SETTINGS: http2.Settings = {
  maxConcurrentStreams: 200,
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
  /** Every well-formed CONNECT; it must call reject() or accept(). */
  onConnect(req: ConnectRequest): void;
  log: Logger;
  handshakeTimeoutMs?: number;
  pingIntervalMs?: number;
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
    this.listenerFor(cred).server.emit('connection', socket);
  }

  /** Ends every session at once (streams are reset); the caller closes its listeners. */
  close(): void {
    this.closed = true;
    for (const s of this.sessions) s.destroy();
    this.listeners.clear();
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
    server.on('session', (session) => this.session(session));
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
    const why = this.refusal(secure);
    if (why) {
      this.opts.log.info({ peer: `${secure.remoteAddress}:${secure.remotePort}` }, `HBONE connection refused: ${why}`);
      session.destroy();
      return;
    }
    this.sessions.add(session);
    // A client that completed TLS must then speak HTTP/2: until its SETTINGS arrive it holds a
    // session for at most the handshake deadline (Node ends a session on a bad preface, but waits
    // forever for one that never comes).
    const preface = setTimeout(() => session.destroy(), this.opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS);
    session.once('remoteSettings', () => clearTimeout(preface));
    session.once('close', () => {
      clearTimeout(preface);
      this.sessions.delete(session);
    });
    try {
      session.setLocalWindowSize(CONNECTION_WINDOW);
    } catch {
      // Already closing.
    }
    keepAlive(session, this.opts.pingIntervalMs);
  }

  private stream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    if (headers[':method'] !== 'CONNECT') return respondError(stream, 400);
    const target = parseAuthority(headers[':authority']);
    if (!target) return respondError(stream, 400);
    const socket = stream.session?.socket as tls.TLSSocket | undefined;
    const peer = socket ? peerIdentity(socket) : 'no session';
    if (!socket || typeof peer === 'string') return respondError(stream, 400);
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
