// Connections to this node's enrolled pods: HBONE on 15008 (the peer's identity proven by mTLS),
// plaintext captured on 15006 (no identity), and same-node traffic handed over in-process by the
// outbound side. All three take the same path: find the destination workload, check L4 policy,
// connect to the pod, and only then say yes (HBONE 200) and join the two sides.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../../../mesh/log.js';
import { HboneServer, type ConnectRequest, type RejectStatus } from '../../../mesh/hbone/server.js';
import { identityUri, type Identity } from '../../../mesh/identity/spiffe.js';
import { HBONE_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT } from '../../../mesh/ports.js';
import type { Workload } from '../../../proto/gen/istio/workload/workload.js';
import { workloadIdentity, type ProxyState } from '../state.js';
import type { CredentialStore } from '../credentials.js';
import type { ConnectionInfo, ResponseFlag, ServiceRef } from './connection.js';
import type { ConnectionTracker } from './tracker.js';
import { splice } from './splice.js';
import { ipBytes } from './addresses.js';
import { transparentSocket } from '../../../native/index.js';

/** Connecting to the pod longer than this fails the connection (HBONE 503). */
export const UPSTREAM_CONNECT_TIMEOUT_MS = 10_000;
/** Ports a connection may never be delivered to: ztunnel's own (Istio's illegal_ports). */
const SELF_PORTS = new Set([OUTBOUND_CAPTURE_PORT, INBOUND_CAPTURE_PORT, HBONE_PORT]);

export interface InboundOptions {
  state: ProxyState;
  credentials: CredentialStore;
  tracker: ConnectionTracker;
  trustDomain: string;
  log: Logger;
  handshakeTimeoutMs?: number;
  pingIntervalMs?: number;
}

/** Who is connecting, as far as the destination side can know. */
export interface InboundSource {
  ip: string;
  port: number;
  /** Proven by mTLS (HBONE) or by capture on this node (same-node hand-over); none for plaintext. */
  identity: Identity | undefined;
  /** Whether the identity was proven by mutual TLS (or stands in for it, same node). */
  mtls: boolean;
}

/** What the caller does with the outcome: join the client once the pod is connected, or refuse. */
export interface Delivery {
  source: InboundSource;
  target: { ip: string; port: number };
  /** The service hostname the client addressed, when it says (Forwarded host=). */
  serviceHint?: string;
  hboneAddr?: string;
  /** Handed over in-process by this node's outbound side (no L4 hop to 15008). */
  sameNode?: boolean;
  accept(upstream: net.Socket): Duplex | undefined;
  refuse(status: RejectStatus, flag: ResponseFlag, reason: string): void;
  /** Whether the client is still there. */
  readonly alive: boolean;
}

export class Inbound {
  readonly hbone: HboneServer;
  /** Connect to pods from the client's address, until the namespace refuses IP_TRANSPARENT. */
  private spoof = true;

  constructor(private readonly opts: InboundOptions) {
    this.hbone = new HboneServer({
      credentialFor: (local) => this.credentialFor(local),
      roots: () => opts.credentials.roots(),
      trustDomain: opts.trustDomain,
      onConnect: (req) => this.connect(req),
      log: opts.log.child({ target: 'hbone' }),
      handshakeTimeoutMs: opts.handshakeTimeoutMs,
      pingIntervalMs: opts.pingIntervalMs,
    });
  }

  private credentialFor(local: string) {
    const w = this.opts.state.localWorkloadAt(local);
    return w ? this.opts.credentials.get(workloadIdentity(w)) : undefined;
  }

  /** 15008: one CONNECT stream on an established mTLS session. */
  private connect(req: ConnectRequest): void {
    // The CONNECT must be for the pod whose certificate answered (ztunnel's IP-mismatch 400).
    if (req.target.ip !== req.localAddress) {
      this.opts.log.debug({ authority: `${req.target.ip}:${req.target.port}`, local: req.localAddress }, 'HBONE CONNECT for another address than dialled: 400');
      req.reject(400);
      return;
    }
    this.deliver({
      source: { ...this.claimedSource(req), identity: req.peer, mtls: true },
      target: req.target,
      serviceHint: forwardedHost(req.headers.forwarded),
      hboneAddr: `${req.target.ip}:${req.target.port}`,
      get alive() {
        return req.open;
      },
      accept: (upstream) => {
        req.accept(upstream);
        return undefined;
      },
      refuse: (status) => req.reject(status),
    });
  }

  /**
   * The client's own address. The sending ztunnel connects from its own address, not the pod's, so
   * the pod's address travels in `forwarded: for=`. It is believed only for a workload holding the
   * identity the peer proved: a peer can name none but its own pods' addresses.
   */
  private claimedSource(req: ConnectRequest): { ip: string; port: number } {
    const claim = forwardedFor(req.headers.forwarded);
    if (claim) {
      const w = this.opts.state.workloadAt(claim.ip);
      if (w && identityUri(workloadIdentity(w)) === identityUri(req.peer)) return claim;
    }
    return { ip: req.remoteAddress, port: req.remotePort };
  }

  /** 15006: plaintext from a client the mesh cannot authenticate. */
  acceptPlaintext(client: net.Socket): void {
    const target = { ip: client.localAddress ?? '', port: client.localPort ?? 0 };
    const source = { ip: client.remoteAddress ?? '', port: client.remotePort ?? 0, identity: undefined, mtls: false };
    client.on('error', () => undefined);
    client.setNoDelay(true);
    client.pause();
    let closed = false;
    client.once('close', () => (closed = true));
    this.deliver({
      source,
      target,
      get alive() {
        return !closed;
      },
      accept: () => client,
      refuse: () => client.resetAndDestroy(),
    });
  }

  /** The destination side's decision and connect, for all three entry points. */
  deliver(d: Delivery): void {
    const { state, tracker } = this.opts;
    const w = state.localWorkloadAt(d.target.ip);
    const info: ConnectionInfo = {
      id: tracker.id(),
      reporter: 'destination',
      direction: 'inbound',
      src: { addr: d.source.ip, port: d.source.port, workload: state.workloadAt(d.source.ip), ...(d.source.mtls && d.source.identity ? { identity: identityUri(d.source.identity) } : {}) },
      // Istio logs an HBONE connection's L4 address (the pod's :15008) and the CONNECT target apart.
      dst: { addr: d.target.ip, port: d.hboneAddr && !d.sameNode ? HBONE_PORT : d.target.port, workload: w, ...(d.hboneAddr ? { hboneAddr: d.hboneAddr } : {}) },
      mtls: d.source.mtls,
      startedAt: Date.now(),
    };
    if (!w) return this.refusedEarly(d, info, 503, `no workload of this node at ${d.target.ip}`);
    info.dst.identity = d.source.mtls ? identityUri(workloadIdentity(w)) : undefined;
    const service = inboundService(state, w, d.target.port, d.serviceHint);
    if (service) info.dst.service = service;
    if (SELF_PORTS.has(d.target.port)) return this.refusedEarly(d, info, 503, `port ${d.target.port} is ztunnel's own`);

    const srcIp = ipBytes(d.source.ip);
    const dstIp = ipBytes(d.target.ip);
    const conn = { identity: d.source.identity, srcIp, dstIp, dstPort: d.target.port };
    const decision = state.policies.check(conn, w);
    if (!decision.allowed) return this.refused(d, info, 401, 'DENY', decision.reason);

    const upstream = this.connectUpstream(d.source.ip, d.target);
    const timer = setTimeout(() => upstream.destroy(new Error(`connect to ${d.target.ip}:${d.target.port} timed out`)), UPSTREAM_CONNECT_TIMEOUT_MS);
    let connected = false;
    upstream.once('error', (err) => {
      clearTimeout(timer);
      if (!connected) this.refused(d, info, 503, 'CONNECT', `connect to the pod failed: ${err.message}`);
    });
    upstream.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      if (!d.alive) {
        upstream.destroy();
        return;
      }
      const handle = tracker.opened(info, {
        // Downstream is the client: what it sent is what we wrote to the pod.
        bytes: () => ({ sent: upstream.bytesRead, received: upstream.bytesWritten }),
        authorized: { conn, workloadUid: w.uid },
        kill: () => upstream.resetAndDestroy(),
      });
      const client = d.accept(upstream);
      if (client) {
        splice(client, upstream, (err) => handle.done(err));
      } else {
        upstream.once('close', () => handle.done());
      }
    });
  }

  /**
   * Connects to the pod from the client's own address when this namespace allows it (Istio's
   * ENABLE_ORIG_SRC, best effort): the pod, its logs and its NetworkPolicies see the real client.
   * The pod's answers come back to this proxy because the redirection programs send every packet
   * of a flow ztunnel holds a socket for to ztunnel.
   */
  private connectUpstream(sourceIp: string, target: { ip: string; port: number }): net.Socket {
    if (this.spoof && net.isIPv4(sourceIp) && net.isIPv4(target.ip)) {
      try {
        const socket = new net.Socket({ fd: transparentSocket(sourceIp), allowHalfOpen: true });
        socket.setNoDelay(true);
        return socket.connect({ host: target.ip, port: target.port });
      } catch (err) {
        this.spoof = false;
        this.opts.log.warn({ err: (err as Error).message }, 'cannot connect from client addresses (IP_TRANSPARENT); pods will see the ztunnel\'s address as the source');
      }
    }
    return net.connect({ host: target.ip, port: target.port, noDelay: true, allowHalfOpen: true });
  }

  private refusedEarly(d: Delivery, info: ConnectionInfo, status: RejectStatus, reason: string): void {
    this.opts.tracker.early(info, reason);
    d.refuse(status, 'CONNECT', reason);
  }

  private refused(d: Delivery, info: ConnectionInfo, status: RejectStatus, flag: ResponseFlag, reason: string): void {
    this.opts.tracker.failed(info, flag, reason);
    d.refuse(status, flag, reason);
  }

  close(): void {
    this.hbone.close();
  }
}

/** Istio's choice of destination service on the inbound side: the Forwarded host, else the first with that target port. */
function inboundService(state: ProxyState, w: Workload, port: number, hint: string | undefined): ServiceRef | undefined {
  let found: { namespace: string; hostname: string } | undefined;
  for (const [key, list] of Object.entries(w.services)) {
    const slash = key.indexOf('/');
    const ref = { namespace: key.slice(0, slash), hostname: key.slice(slash + 1) };
    if (hint && ref.hostname === hint) {
      found = ref;
      break;
    }
    if (!found && list.ports.some((p) => p.targetPort === port)) found = ref;
  }
  if (!found) return undefined;
  const s = state.service(found.namespace, found.hostname);
  return { hostname: found.hostname, namespace: found.namespace, name: s?.name ?? found.hostname.split('.')[0] ?? found.hostname };
}

/** `for="ip:port"` of a Forwarded header (the first element). */
export function forwardedFor(header: string | string[] | undefined): { ip: string; port: number } | undefined {
  const text = Array.isArray(header) ? header[0] : header;
  const m = text ? /(?:^|;)\s*for="?\[?([0-9a-fA-F.:]+?)\]?:(\d{1,5})"?\s*(?:;|,|$)/.exec(text) : null;
  if (!m || !net.isIP(m[1]!)) return undefined;
  const port = Number(m[2]);
  return port > 0 && port < 65536 ? { ip: m[1]!, port } : undefined;
}

export function forwardedHost(header: string | string[] | undefined): string | undefined {
  const text = Array.isArray(header) ? header[0] : header;
  const m = text ? /(?:^|;)\s*host="?([a-zA-Z0-9.-]{1,253})"?\s*(?:;|,|$)/.exec(text) : null;
  return m?.[1];
}
