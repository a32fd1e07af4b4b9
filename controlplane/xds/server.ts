// envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources on the control
// plane's gRPC port, with the CA's bearer authentication. Every client is an XdsConnection; this
// module accepts them, tells them what changed, and bounds what they can cost together.

import { status, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { errorMessage } from '../../mesh/errors.js';
import type { Logger } from '../../mesh/log.js';
import { identityUri } from '../../mesh/identity/spiffe.js';
import { bearerToken, checkClusterId } from '../bearer.js';
import { AuthenticationError, AuthenticationUnavailableError, type Authenticator } from '../ca/types.js';
import { WRITE_DEADLINE_MS, XdsConnection, type ConnectionHost, type ConnectionStatus, type Throttle, type XdsStream } from './connection.js';
import { ResourceCache, type CacheChange } from './resource-cache.js';
import { SERVED_TYPES } from '../../mesh/xds/types.js';
import { DeltaAdsServiceDefinition } from './wire.js';

export interface XdsServerOptions {
  authenticator: Authenticator;
  clusterId: string;
  log: Logger;
  /** Large responses (a full state) written at once, across clients; default 8. */
  maxLargeResponses?: number;
  /** Streams open at once; more are refused with RESOURCE_EXHAUSTED. Default 10,000. */
  maxConnections?: number;
  /** Streams one caller (a node, a workload identity) may hold; default 16. */
  maxConnectionsPerCaller?: number;
  /** A response the client has not taken within this long ends its stream; default WRITE_DEADLINE_MS. */
  writeDeadlineMs?: number;
}

class CountingThrottle implements Throttle {
  private active = 0;
  private readonly waiting = new Set<() => void>();

  constructor(private readonly limit: number) {}

  acquire(grant: () => void): () => void {
    if (this.active < this.limit) {
      this.active++;
      grant();
      return () => undefined;
    }
    this.waiting.add(grant);
    return () => this.waiting.delete(grant);
  }

  release(): void {
    this.active = Math.max(0, this.active - 1);
    // Granted in order of asking; a withdrawn request is no longer in the set.
    for (const next of this.waiting) {
      if (this.active >= this.limit) break;
      this.waiting.delete(next);
      this.active++;
      next();
    }
  }
}

export class XdsServer implements ConnectionHost {
  readonly cache = new ResourceCache(SERVED_TYPES);
  readonly throttle: Throttle;
  readonly writeDeadlineMs: number;
  readonly log: Logger;
  readonly definition = DeltaAdsServiceDefinition;
  private readonly connections = new Set<XdsConnection>();
  private readonly maxConnections: number;
  private readonly maxPerCaller: number;
  private counter = 0;
  private stopped = false;

  constructor(private readonly opts: XdsServerOptions) {
    this.log = opts.log;
    this.throttle = new CountingThrottle(opts.maxLargeResponses ?? 8);
    this.maxConnections = opts.maxConnections ?? 10_000;
    this.maxPerCaller = opts.maxConnectionsPerCaller ?? 16;
    this.writeDeadlineMs = opts.writeDeadlineMs ?? WRITE_DEADLINE_MS;
  }

  implementation(): UntypedServiceImplementation {
    return { deltaAggregatedResources: (call: XdsStream) => this.accept(call) };
  }

  /** Tells every client what changed in the cache (after ResourceCache.apply). */
  publish(typeUrl: string, change: CacheChange): void {
    if (change.names.size === 0) return;
    for (const conn of this.connections) conn.notify(typeUrl, change);
  }

  status(): ConnectionStatus[] {
    return [...this.connections].map((c) => c.status());
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  closed(conn: XdsConnection): void {
    this.connections.delete(conn);
    this.log.debug({ conn: conn.id, connections: this.connections.size }, 'xDS stream closed');
  }

  /** Ends every stream; clients reconnect (to this server after a restart, or another replica). */
  stop(): void {
    this.stopped = true;
    for (const conn of [...this.connections]) conn.shutdown();
  }

  private accept(call: XdsStream): void {
    const conn = new XdsConnection(`${++this.counter}`, call, this);
    if (this.stopped) {
      conn.fail(status.UNAVAILABLE, 'the control plane is shutting down');
      return;
    }
    if (this.connections.size >= this.maxConnections) {
      conn.fail(status.RESOURCE_EXHAUSTED, `the control plane serves ${this.maxConnections} xDS streams at most`);
      return;
    }
    this.connections.add(conn);
    let token: string;
    try {
      token = bearerToken(call.metadata);
      checkClusterId(call.metadata, this.opts.clusterId);
    } catch (err) {
      conn.fail(status.UNAUTHENTICATED, errorMessage(err));
      return;
    }
    this.opts.authenticator.authenticate(token).then(
      (caller) => {
        const who = caller.kind === 'node' ? `node ${caller.node}` : identityUri(caller.identity);
        // One caller cannot take the slots every node needs.
        let held = 0;
        for (const c of this.connections) if (c.caller === who) held++;
        if (held >= this.maxPerCaller) {
          conn.fail(status.RESOURCE_EXHAUSTED, `${who} already holds ${held} xDS streams (at most ${this.maxPerCaller})`);
          return;
        }
        this.log.info({ conn: conn.id, peer: conn.peer, caller: who }, 'xDS stream opened');
        conn.accept(who);
      },
      (err: unknown) => {
        const code = err instanceof AuthenticationError ? status.UNAUTHENTICATED : err instanceof AuthenticationUnavailableError ? status.UNAVAILABLE : status.INTERNAL;
        conn.fail(code, errorMessage(err));
      },
    );
  }
}
