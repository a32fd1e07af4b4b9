// Connections of this node's enrolled pods, captured on 15001 (istio-ambient-spec.md §2.5): the
// original destination is the accepted socket's local address; a service VIP picks a healthy
// endpoint on any node, a pod IP its workload; a waypoint, when bound, is the next hop; HBONE
// destinations get a CONNECT stream over a pooled mTLS connection to `<pod IP>:15008`, or the
// inbound path directly when the pod is on this node; TCP destinations and addresses the mesh
// does not know get plain TCP.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import type http2 from 'node:http2';
import type { Logger } from '../../../mesh/log.js';
import { formatAuthority } from '../../../mesh/hbone/authority.js';
import { HboneStatusError } from '../../../mesh/hbone/errors.js';
import { identityUri } from '../../../mesh/identity/spiffe.js';
import { TunnelProtocol, WorkloadType, type GatewayAddress, type Service, type Workload } from '../../../proto/gen/istio/workload/workload.js';
import { ipText } from '../../../mesh/ip-text.js';
import { workloadIdentity, type ProxyState } from '../state.js';
import type { HbonePool } from '../pool.js';
import type { ConnectionInfo, ResponseFlag, ServiceRef } from './connection.js';
import type { ConnectionTracker } from './tracker.js';
import type { Inbound } from './inbound.js';
import { splice } from './splice.js';
import { plainIp } from './addresses.js';
import { UPSTREAM_CONNECT_TIMEOUT_MS } from './inbound.js';

export interface OutboundOptions {
  state: ProxyState;
  pool: HbonePool;
  inbound: Inbound;
  tracker: ConnectionTracker;
  /** This namespace's own addresses: a connection to one would loop (Istio's SelfCall). */
  ownAddresses(): ReadonlySet<string>;
  log: Logger;
}

/** Where a connection goes. */
type Route =
  | { kind: 'hbone'; address: string; port: number; targetPort: number; authority: string; expected: string[]; workload: Workload; service?: Service; local: boolean; waypoint: boolean }
  | { kind: 'tcp'; address: string; port: number; workload?: Workload; service?: Service }
  | { kind: 'refuse'; reason: string; workload?: Workload; service?: Service };

export class Outbound {
  constructor(private readonly opts: OutboundOptions) {}

  accept(client: net.Socket): void {
    const { state, tracker } = this.opts;
    client.on('error', () => undefined);
    client.setNoDelay(true);
    client.pause();
    const dstIp = plainIp(client.localAddress);
    const dstPort = client.localPort ?? 0;
    const srcIp = plainIp(client.remoteAddress);
    const srcPort = client.remotePort ?? 0;
    const source = state.workloadAt(srcIp);
    const info: ConnectionInfo = {
      id: tracker.id(),
      reporter: 'source',
      direction: 'outbound',
      src: { addr: srcIp, port: srcPort, workload: source },
      dst: { addr: dstIp, port: dstPort },
      mtls: false,
      startedAt: Date.now(),
    };
    if (!srcIp || !dstIp || !dstPort) {
      client.destroy();
      return;
    }
    if (dstIp.startsWith('127.') || dstIp === '::1' || this.opts.ownAddresses().has(dstIp)) {
      return this.failEarly(client, info, 'addressed to ztunnel itself');
    }
    // Only enrolled pods are captured, so an unknown source means our state lags: refuse rather
    // than send traffic under no identity.
    if (!source || source.node !== state.node) return this.failEarly(client, info, `unknown source workload ${srcIp} (not a pod of node ${state.node} in the mesh state)`);

    const route = this.route(source, dstIp, dstPort);
    info.dst.original = formatAuthority(dstIp, dstPort);
    if (route.workload) info.dst.workload = route.workload;
    if (route.service) info.dst.service = serviceRef(route.service);
    if (route.kind === 'refuse') return this.failEarly(client, info, route.reason);
    if (route.kind === 'tcp') return this.plain(client, info, route.address, route.port);

    info.mtls = true;
    info.src.identity = identityUri(workloadIdentity(source));
    info.dst.identity = route.expected[0];
    info.dst.hboneAddr = route.authority;
    if (route.local) {
      info.dst.addr = route.address;
      info.dst.port = route.targetPort;
      return this.sameNode(client, info, source, route);
    }
    info.dst.addr = route.address;
    info.dst.port = route.port;
    this.tunnel(client, info, source, route);
  }

  private route(source: Workload, dstIp: string, dstPort: number): Route {
    const { state } = this.opts;
    const service = state.serviceAt(dstIp);
    if (service) {
      if (service.waypoint) return this.viaWaypoint(service.waypoint, formatAuthority(dstIp, dstPort), service, undefined, source);
      const endpoints = state.endpointsOf(service, dstPort);
      if (endpoints.length === 0) return { kind: 'refuse', reason: `no healthy upstream for ${service.hostname}:${dstPort}`, service };
      const pick = endpoints[Math.floor(Math.random() * endpoints.length)]!;
      return this.toWorkload(pick.workload, pick.port, service);
    }
    const w = state.workloadAt(dstIp);
    if (!w) return { kind: 'tcp', address: dstIp, port: dstPort };
    if (w.waypoint && !this.isWaypointOf(source, w.waypoint)) return this.viaWaypoint(w.waypoint, formatAuthority(dstIp, dstPort), undefined, w, source);
    return this.toWorkload(w, dstPort, undefined, dstIp);
  }

  private toWorkload(w: Workload, port: number, service?: Service, ip?: string): Route {
    const address = ip ?? (w.addresses[0] ? ipText(w.addresses[0]) : '');
    if (!address) return { kind: 'refuse', reason: `workload ${w.uid} has no address`, workload: w, service };
    if (w.tunnelProtocol !== TunnelProtocol.HBONE) return { kind: 'tcp', address, port, workload: w, service };
    return {
      kind: 'hbone',
      address,
      port: 15008,
      targetPort: port,
      authority: formatAuthority(address, port),
      expected: this.opts.state.expectedIdentities(w, service),
      workload: w,
      service,
      local: w.node === this.opts.state.node,
      waypoint: false,
    };
  }

  /** The waypoint's own workload: a service hostname picks one of its endpoints, an address its workload. */
  private viaWaypoint(gw: GatewayAddress, authority: string, service: Service | undefined, workload: Workload | undefined, source: Workload): Route {
    const { state } = this.opts;
    let target: { workload: Workload; via?: Service } | undefined;
    if (gw.hostname) {
      const wsvc = state.service(gw.hostname.namespace, gw.hostname.hostname);
      const eps = wsvc ? state.endpointsOf(wsvc, gw.hboneMtlsPort || 15008) : [];
      const pick = eps[Math.floor(Math.random() * eps.length)];
      if (pick && wsvc) target = { workload: pick.workload, via: wsvc };
    } else if (gw.address) {
      const w = state.workloadAt(ipText(gw.address.address));
      if (w) target = { workload: w };
    }
    if (!target) return { kind: 'refuse', reason: 'the destination\'s waypoint is not available; refusing rather than bypassing it', service, workload };
    if (target.workload.uid === source.uid) return { kind: 'refuse', reason: 'a waypoint may not send to itself through its own binding', service, workload };
    const address = target.workload.addresses[0] ? ipText(target.workload.addresses[0]) : '';
    return {
      kind: 'hbone',
      address,
      port: gw.hboneMtlsPort || 15008,
      targetPort: 0,
      authority,
      expected: state.expectedIdentities(target.workload, target.via),
      workload: workload ?? target.workload,
      service,
      // A waypoint is reached over the network even on this node: it is its own proxy.
      local: false,
      waypoint: true,
    };
  }

  private isWaypointOf(source: Workload, gw: GatewayAddress): boolean {
    if (gw.address) return source.addresses.some((a) => ipText(a) === ipText(gw.address!.address));
    if (gw.hostname) return Object.keys(source.services).includes(`${gw.hostname.namespace}/${gw.hostname.hostname}`);
    return false;
  }

  /** Same node: the destination side's checks run here, in-process (decision 0008). */
  private sameNode(client: net.Socket, info: ConnectionInfo, source: Workload, route: Extract<Route, { kind: 'hbone' }>): void {
    const { tracker, inbound } = this.opts;
    let closed = false;
    let handle: { done(error?: Error, flag?: ResponseFlag): void } | undefined;
    client.once('close', () => {
      closed = true;
      // deliver()'s splice reports the inbound record; the outbound one ends with the client.
      handle?.done();
    });
    inbound.deliver({
      source: { ip: info.src.addr, port: info.src.port, identity: workloadIdentity(source), mtls: true },
      target: { ip: route.address, port: route.targetPort },
      serviceHint: route.service?.hostname,
      hboneAddr: route.authority,
      sameNode: true,
      get alive() {
        return !closed;
      },
      accept: (upstream) => {
        handle = tracker.opened(info, { bytes: () => ({ sent: client.bytesWritten, received: client.bytesRead }), kill: () => upstream.resetAndDestroy() });
        return client;
      },
      refuse: (_status, flag, reason) => this.fail(client, info, flag, reason),
    });
  }

  private tunnel(client: net.Socket, info: ConnectionInfo, source: Workload, route: Extract<Route, { kind: 'hbone' }>): void {
    const { pool, tracker } = this.opts;
    const headers: Record<string, string> = {
      baggage: baggage(source),
      forwarded: `for="${formatAuthority(info.src.addr, info.src.port)}"${route.service ? `;host=${route.service.hostname}` : ''}`,
      traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-00`,
    };
    let closed = false;
    client.once('close', () => (closed = true));
    pool.open({ source: info.src.identity!, expected: route.expected, address: route.address, port: route.port }, route.authority, headers).then(
      (stream: http2.ClientHttp2Stream) => {
        if (closed) {
          stream.close();
          return;
        }
        const handle = tracker.opened(info, { bytes: () => ({ sent: client.bytesWritten, received: client.bytesRead }), kill: () => client.resetAndDestroy() });
        splice(client, stream, (err) => handle.done(err));
      },
      (err: Error) => {
        const flag: ResponseFlag = err instanceof HboneStatusError ? (err.status === 401 ? 'DENY' : 'CONNECT') : 'CONNECT';
        this.fail(client, info, flag, err.message);
      },
    );
  }

  private plain(client: net.Socket, info: ConnectionInfo, address: string, port: number): void {
    const { tracker } = this.opts;
    info.dst.addr = address;
    info.dst.port = port;
    const upstream = net.connect({ host: address, port, noDelay: true, allowHalfOpen: true });
    const timer = setTimeout(() => upstream.destroy(new Error(`connect to ${address}:${port} timed out`)), UPSTREAM_CONNECT_TIMEOUT_MS);
    let connected = false;
    upstream.once('error', (err) => {
      clearTimeout(timer);
      if (!connected) this.fail(client, info, 'CONNECT', `connect to ${address}:${port}: ${err.message}`);
    });
    upstream.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      const handle = tracker.opened(info, { bytes: () => ({ sent: client.bytesWritten, received: client.bytesRead }), kill: () => client.resetAndDestroy() });
      splice(client, upstream, (err) => handle.done(err));
    });
  }

  private failEarly(client: net.Socket, info: ConnectionInfo, reason: string): void {
    this.opts.tracker.early(info, reason);
    client.resetAndDestroy();
  }

  private fail(client: net.Socket, info: ConnectionInfo, flag: ResponseFlag, reason: string): void {
    this.opts.tracker.failed(info, flag, reason);
    client.resetAndDestroy();
  }
}

function serviceRef(s: Service): ServiceRef {
  return { hostname: s.hostname, namespace: s.namespace, name: s.name };
}

/** Istio's baggage for the source workload (zt:src/baggage.rs), items present only when set. */
function baggage(w: Workload): string {
  const items: string[] = [];
  const add = (k: string, v: string | undefined) => {
    if (v) items.push(`${k}=${v}`);
  };
  add('k8s.cluster.name', w.clusterId);
  add('k8s.namespace.name', w.namespace);
  add(`k8s.${(WorkloadType[w.workloadType] ?? 'pod').toLowerCase()}.name`, w.workloadName);
  add('service.name', w.canonicalName);
  add('service.version', w.canonicalRevision);
  add('cloud.region', w.locality?.region);
  add('cloud.availability_zone', w.locality?.zone);
  return items.join(',');
}
