// The sending side of HBONE (istio-ambient-spec.md §2.2–2.4): one mutual-TLS HTTP/2 connection
// to a peer's 15008, on which each proxied TCP connection is one CONNECT stream. The peer must
// prove exactly one of the expected identities; a stream is usable only once the peer answered 200
// (the destination ztunnel answers after its own connect succeeded).
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { identityUri, type Identity } from '../identity/spiffe.js';
import { HboneConnectionError, HboneStatusError } from './errors.js';
import { HBONE_ALPN, peerIdentity } from './tls.js';
import { keepAlive } from './keepalive.js';

export const CONNECT_TIMEOUT_MS = 10_000;
/** ztunnel's client settings (§2.2). */
const CLIENT_SETTINGS: http2.Settings = {
  initialWindowSize: 4 << 20,
  maxFrameSize: 1 << 20,
  maxHeaderListSize: 16 << 10,
  enablePush: false,
};
const CONNECTION_WINDOW = 16 << 20;
export const MAX_STREAMS_PER_CONNECTION = 100;
/** How long a session we ended may take to flush its GOAWAY before its socket is closed anyway. */
const CLOSE_GRACE_MS = 1000;

export interface HboneConnectOptions {
  /** A TCP connection to the peer's 15008, connecting or connected (made by the caller: its source address may be spoofed). */
  socket: net.Socket;
  context: tls.SecureContext;
  /** The peer must hold one of these (the destination workload's identity and its services' SANs). */
  expected: readonly Identity[];
  timeoutMs?: number;
  pingIntervalMs?: number;
  /** How long a keepalive PING may go unanswered before the session is ended (20 s). */
  pingTimeoutMs?: number;
}

export class HboneSession {
  private streams = 0;

  private constructor(
    private readonly session: http2.ClientHttp2Session,
    readonly peer: Identity,
    private readonly socket: tls.TLSSocket,
  ) {}

  /** TLS and HTTP/2 up, the peer's identity checked. */
  static connect(opts: HboneConnectOptions): Promise<HboneSession> {
    const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
    const where = `${opts.socket.remoteAddress ?? '?'}:${opts.socket.remotePort ?? 15008}`;
    return new Promise((resolve, reject) => {
      let done = false;
      const fail = (err: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        secure.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new HboneConnectionError(`HBONE connection to ${where} not established within ${timeoutMs / 1000} s: is something (a NetworkPolicy, a firewall) blocking port 15008?`)),
        timeoutMs,
      );
      opts.socket.setNoDelay(true);
      // No SNI (servername ''): the server picks its certificate by the address dialled.
      const secure = tls.connect({
        socket: opts.socket,
        secureContext: opts.context,
        ALPNProtocols: [HBONE_ALPN],
        servername: '',
        rejectUnauthorized: true,
        // The chain is verified against the roots; the identity is checked below, by equality.
        checkServerIdentity: () => undefined,
      });
      secure.on('error', (err) => fail(new HboneConnectionError(`HBONE TLS to ${where} failed: ${err.message}`, { cause: err })));
      secure.once('secureConnect', () => {
        if (secure.alpnProtocol !== HBONE_ALPN) return fail(new HboneConnectionError(`HBONE peer ${where} did not negotiate h2`));
        const id = peerIdentity(secure);
        if (typeof id === 'string') return fail(new HboneConnectionError(`HBONE peer ${where}: ${id}`));
        const uri = identityUri(id);
        if (!opts.expected.some((e) => identityUri(e) === uri)) {
          return fail(new HboneConnectionError(`HBONE peer ${where} is ${uri}, expected ${opts.expected.map(identityUri).join(' or ')}`));
        }
        // The URL only satisfies the API: every request names its own :authority.
        const session = http2.connect('https://hbone.invalid', { createConnection: () => secure, settings: CLIENT_SETTINGS, maxSessionMemory: 64 });
        session.on('error', (err) => fail(new HboneConnectionError(`HBONE HTTP/2 with ${where} failed: ${err.message}`, { cause: err })));
        session.once('remoteSettings', () => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          try {
            session.setLocalWindowSize(CONNECTION_WINDOW);
          } catch {
            // closing already: the first open() will say so
          }
          const created = new HboneSession(session, id, secure);
          keepAlive(session, opts.pingIntervalMs, opts.pingTimeoutMs, (err) => created.destroy(err));
          resolve(created);
        });
      });
    });
  }

  /** Whether another stream may be opened here (the pool opens a new connection otherwise). */
  get available(): boolean {
    if (this.session.destroyed || this.session.closed) return false;
    const peerMax = this.session.remoteSettings.maxConcurrentStreams ?? MAX_STREAMS_PER_CONNECTION;
    return this.streams < Math.min(MAX_STREAMS_PER_CONNECTION, peerMax);
  }

  get activeStreams(): number {
    return this.streams;
  }

  get closed(): boolean {
    return this.session.destroyed || this.session.closed;
  }

  onClose(listener: () => void): void {
    this.session.once('close', listener);
  }

  /**
   * CONNECT to `authority` (`<ip>:<port>`); resolves with the stream once the peer answered 200,
   * rejects with HboneStatusError for any other status.
   */
  open(authority: string, headers: Record<string, string> = {}, timeoutMs = CONNECT_TIMEOUT_MS): Promise<http2.ClientHttp2Stream> {
    return new Promise((resolve, reject) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.session.request({ ...headers, ':method': 'CONNECT', ':authority': authority }, { endStream: false });
      } catch (err) {
        reject(new HboneConnectionError(`HBONE stream to ${authority} could not be opened: ${(err as Error).message}`, { cause: err }));
        return;
      }
      this.streams++;
      stream.once('close', () => this.streams--);
      let settled = false;
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          if (!stream.destroyed) stream.destroy();
          reject(err);
        } else {
          resolve(stream);
        }
      };
      const timer = setTimeout(() => settle(new HboneConnectionError(`HBONE CONNECT to ${authority}: no answer within ${timeoutMs / 1000} s`)), timeoutMs);
      stream.on('error', (err) => settle(new HboneConnectionError(`HBONE stream to ${authority} failed: ${err.message}`, { cause: err })));
      stream.once('close', () => settle(new HboneConnectionError(`HBONE stream to ${authority} closed before an answer`)));
      stream.once('response', (h) => {
        const status = Number(h[':status']);
        settle(status === 200 ? undefined : new HboneStatusError(status, authority));
      });
    });
  }

  close(): void {
    if (this.closed) return;
    try {
      this.session.close();
    } catch {
      this.session.destroy();
    }
  }

  /**
   * Ends the session and then its socket: Node's destroy() half-closes the socket and waits for its
   * unsent bytes to leave, which never happens with a peer that stopped reading.
   */
  destroy(err?: Error): void {
    this.session.destroy(err);
    if (this.socket.destroyed) return;
    const force = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
    force.unref();
    this.socket.once('close', () => clearTimeout(force));
  }
}
