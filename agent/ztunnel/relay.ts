// The node's tunnel proxy until HBONE lands: a transparent TCP relay on ztunnel's capture ports.
// It accepts what the redirection programs hand it, recovers the original destination from the
// accepted socket's local address (TPROXY semantics: no SO_ORIGINAL_DST needed), connects there
// and splices the two sockets, logging one line per connection with Istio's access-log fields.
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import http from 'node:http';
import { once } from 'node:events';
import { listenSocket } from '../../native/index.js';
import type { Logger } from '../../mesh/log.js';
import { HBONE_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, READINESS_PORT } from '../../mesh/ports.js';

export type Direction = 'outbound' | 'inbound' | 'hbone';

export const CAPTURE_PORTS: Record<Direction, number> = { outbound: OUTBOUND_CAPTURE_PORT, inbound: INBOUND_CAPTURE_PORT, hbone: HBONE_PORT };
/** Connecting upstream longer than this fails the client's connection. */
const CONNECT_TIMEOUT_MS = 10_000;

export interface RelayOptions {
  log: Logger;
  /** Separate access logger (Istio's `access` target), so access lines can be filtered or silenced. */
  accessLog?: Logger;
  ports?: Partial<Record<Direction, number>>;
  readinessPort?: number;
}

export class TransparentRelay {
  private readonly opts: RelayOptions;
  private readonly servers: net.Server[] = [];
  private readiness: http.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private listening = false;
  private ownAddresses = new Set<string>();
  private refreshTimer: NodeJS.Timeout | undefined;

  constructor(opts: RelayOptions) {
    this.opts = opts;
  }

  async start(): Promise<void> {
    this.refreshOwnAddresses();
    this.refreshTimer = setInterval(() => this.refreshOwnAddresses(), 10_000);
    this.refreshTimer.unref();
    for (const direction of Object.keys(CAPTURE_PORTS) as Direction[]) {
      const port = this.opts.ports?.[direction] ?? CAPTURE_PORTS[direction];
      // IP_TRANSPARENT lets the socket accept connections addressed to any IP, which is what
      // bpf_sk_assign delivers; SO_REUSEPORT lets a new ztunnel bind beside an old one.
      const fd = listenSocket({ port, transparent: true, reusePort: true });
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => this.relay(socket, direction));
      server.on('error', (err) => this.opts.log.error({ err: err.message, port }, 'listener error'));
      server.listen({ fd });
      await once(server, 'listening');
      this.servers.push(server);
    }
    this.readiness = http.createServer((req, res) => {
      if (req.method !== 'GET') {
        res.writeHead(405).end();
      } else if (req.url === '/healthz/ready') {
        res.writeHead(this.listening ? 200 : 500, { 'content-type': 'text/plain' }).end(this.listening ? 'ready\n' : 'not ready, pending: proxy\n');
      } else {
        res.writeHead(404).end();
      }
    });
    this.readiness.listen(this.opts.readinessPort ?? READINESS_PORT, '0.0.0.0');
    await once(this.readiness, 'listening');
    this.listening = true;
    this.opts.log.info({ ports: { ...CAPTURE_PORTS, ...this.opts.ports }, readiness: this.opts.readinessPort ?? READINESS_PORT }, 'ztunnel relay listening');
  }

  /** This namespace's addresses: a connection addressed to one of them would make the relay
   * connect to itself, again and again (Istio's ztunnel refuses these as self-calls). */
  private refreshOwnAddresses(): void {
    const own = new Set<string>();
    for (const addrs of Object.values(networkInterfaces())) for (const a of addrs ?? []) own.add(a.address);
    this.ownAddresses = own;
  }

  private relay(client: net.Socket, direction: Direction): void {
    const access = this.opts.accessLog ?? this.opts.log;
    const started = Date.now();
    const dstAddr = client.localAddress;
    const dstPort = client.localPort;
    const src = `${client.remoteAddress}:${client.remotePort}`;
    if (!dstAddr || !dstPort || !client.remoteAddress) {
      client.destroy();
      return;
    }
    const dst = `${dstAddr}:${dstPort}`;
    if (this.ownAddresses.has(dstAddr) || dstAddr.startsWith('127.')) {
      access.warn({ 'src.addr': src, 'dst.addr': dst, direction, error: 'addressed to ztunnel itself' }, 'connection refused');
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    this.sockets.add(client);
    const upstream = net.connect({ host: dstAddr, port: dstPort, allowHalfOpen: true, noDelay: true, timeout: CONNECT_TIMEOUT_MS });
    this.sockets.add(upstream);
    let connected = false;
    let reported = false;

    const finish = (error?: string): void => {
      if (reported) return;
      reported = true;
      access.info(
        {
          'src.addr': src,
          'dst.addr': dst,
          direction,
          bytes_sent: upstream.bytesWritten,
          bytes_recv: upstream.bytesRead,
          duration: `${Date.now() - started}ms`,
          ...(error ? { error } : {}),
        },
        error ? 'connection failed' : 'connection complete',
      );
    };

    upstream.once('connect', () => {
      connected = true;
      upstream.setTimeout(0);
      access.info({ 'src.addr': src, 'dst.addr': dst, direction }, 'connection opened');
    });
    upstream.once('timeout', () => upstream.destroy(new Error(`connect to ${dst} timed out`)));
    // A failure on either side resets the other, so the peer sees an error rather than a clean end.
    upstream.on('error', (err) => {
      finish(connected ? err.message : `connect to ${dst}: ${err.message}`);
      client.resetAndDestroy();
    });
    client.on('error', (err) => {
      finish(err.message);
      upstream.resetAndDestroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
    let closed = 0;
    const onClose = (s: net.Socket) => () => {
      this.sockets.delete(s);
      if (++closed === 2) finish();
    };
    client.once('close', onClose(client));
    upstream.once('close', onClose(upstream));
  }

  get connections(): number {
    return this.sockets.size / 2;
  }

  async stop(): Promise<void> {
    this.listening = false;
    clearInterval(this.refreshTimer);
    for (const s of this.servers) s.close();
    this.readiness?.close();
    for (const s of this.sockets) s.destroy();
  }
}
