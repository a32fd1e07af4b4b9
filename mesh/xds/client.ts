// A delta ADS client, as ztunnel's: one stream for every type, subscriptions re-sent with the
// versions held on every reconnect (so the server sends only what changed), reconnects with
// backoff, and the last good state kept and served while the control plane is away. A response
// with resources that do not decode or validate is NACKed naming them; the good ones in it apply.

import { isIP } from 'node:net';
import { Metadata, credentials, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { AggregatedDiscoveryServiceClient } from '../../proto/gen/envoy/service/discovery/v3/ads.js';
import type { DeltaDiscoveryRequest, DeltaDiscoveryResponse } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { backoffDelay, type BackoffOptions } from '../backoff.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { DEFAULT_CLUSTER_ID, ISTIOD_NAME } from '../identity/ca-client.js';

/** ztunnel's decode limit. */
export const MAX_RESPONSE_BYTES = 200 << 20;
/** ztunnel reconnects from 10 ms doubling to 15 s; a little slower at first spares a restarting server. */
export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 15_000 };
/** A stream on which some type has had no response this long is abandoned for a new one. */
export const INITIAL_RESPONSE_DEADLINE_MS = 30_000;

export interface XdsType<T> {
  typeUrl: string;
  decode(bytes: Uint8Array): T;
  /** Why a decoded resource cannot be used (it is then NACKed and the held version kept), or undefined. */
  validate?(name: string, value: T): string | undefined;
  /** Explicit names to subscribe to; absent: every resource of the type (wildcard). */
  names?: readonly string[];
}

export interface HeldResource<T> {
  version: string;
  value: T;
}

export interface XdsUpdate {
  typeUrl: string;
  /** Names added or changed by this response. */
  updated: string[];
  removed: string[];
}

export interface XdsClientOptions {
  /** host:port of the control plane. */
  address: string;
  /** PEM roots that sign the control plane's serving certificate. */
  rootCert: string;
  /** The TLS name to verify; default: the address's host name, or istiod.istio-system.svc for an IP. */
  serverName?: string;
  /** The bearer token, read at every (re)connect. */
  token: () => string;
  clusterId?: string;
  node: { id: string; cluster?: string; metadata?: Record<string, unknown> };
  types: XdsType<unknown>[];
  backoff?: BackoffOptions;
  /** See INITIAL_RESPONSE_DEADLINE_MS. */
  initialResponseDeadlineMs?: number;
  log: Logger;
}

export interface XdsTypeStatus {
  resources: number;
  received: number;
  lastNonce: string | null;
  /** Set while the last response was NACKed. */
  nack: string | null;
  ready: boolean;
}

export interface XdsClientStatus {
  address: string;
  connected: boolean;
  connectedSince: string | null;
  lastError: string | null;
  reconnects: number;
  ready: boolean;
  types: Record<string, XdsTypeStatus>;
}

interface TypeState {
  spec: XdsType<unknown>;
  held: Map<string, HeldResource<unknown>>;
  names: Set<string> | undefined;
  ready: boolean;
  received: number;
  lastNonce: string | null;
  nack: string | null;
}

export class XdsClient {
  private readonly client: AggregatedDiscoveryServiceClient;
  private readonly opts: XdsClientOptions;
  private readonly log: Logger;
  private readonly types = new Map<string, TypeState>();
  private readonly listeners: ((update: XdsUpdate) => void)[] = [];
  private stream: ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private connectedSince: Date | null = null;
  private lastError: string | null = null;
  private reconnects = 0;
  private closed = false;
  private readyResolve: () => void = () => undefined;
  private readonly readyPromise: Promise<void>;

  constructor(opts: XdsClientOptions) {
    this.opts = opts;
    this.log = opts.log.child({ component: 'xds' });
    for (const spec of opts.types) {
      this.types.set(spec.typeUrl, { spec, held: new Map(), names: spec.names ? new Set(spec.names) : undefined, ready: false, received: 0, lastNonce: null, nack: null });
    }
    this.readyPromise = new Promise((resolve) => {
      this.readyResolve = resolve;
    });
    const host = opts.address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    const name = opts.serverName ?? (isIP(host) ? ISTIOD_NAME : host);
    this.client = new AggregatedDiscoveryServiceClient(opts.address, credentials.createSsl(Buffer.from(opts.rootCert)), {
      'grpc.ssl_target_name_override': name,
      'grpc.default_authority': name,
      'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      // The stream's own backoff paces reconnects; the channel should follow it, not its own 2 min.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2000,
    });
  }

  start(): void {
    this.connect();
  }

  /** Resolves once every type has received its first response (the initial state). */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  isReady(): boolean {
    return [...this.types.values()].every((t) => t.ready);
  }

  /** The resources held for a type (the last good state, also while disconnected). */
  resources<T>(typeUrl: string): ReadonlyMap<string, HeldResource<T>> {
    return (this.types.get(typeUrl)?.held ?? new Map()) as ReadonlyMap<string, HeldResource<T>>;
  }

  get<T>(typeUrl: string, name: string): T | undefined {
    return this.types.get(typeUrl)?.held.get(name)?.value as T | undefined;
  }

  /** Called after each response was applied (synchronously, in order). */
  onUpdate(listener: (update: XdsUpdate) => void): void {
    this.listeners.push(listener);
  }

  /** Adds names to a named subscription (a waypoint asking for its own resource, or on-demand lookups). */
  subscribe(typeUrl: string, names: readonly string[]): void {
    const state = this.types.get(typeUrl);
    if (!state?.names) return;
    const added = names.filter((n) => !state.names!.has(n));
    for (const n of added) state.names.add(n);
    if (added.length > 0) this.send({ typeUrl, resourceNamesSubscribe: added });
  }

  unsubscribe(typeUrl: string, names: readonly string[]): void {
    const state = this.types.get(typeUrl);
    if (!state?.names) return;
    const removed = names.filter((n) => state.names!.delete(n));
    for (const n of removed) state.held.delete(n);
    if (removed.length > 0) this.send({ typeUrl, resourceNamesUnsubscribe: removed });
  }

  status(): XdsClientStatus {
    const types: Record<string, XdsTypeStatus> = {};
    for (const [typeUrl, t] of this.types) {
      types[typeUrl] = { resources: t.held.size, received: t.received, lastNonce: t.lastNonce, nack: t.nack, ready: t.ready };
    }
    return {
      address: this.opts.address,
      connected: this.stream !== undefined && this.connectedSince !== null,
      connectedSince: this.connectedSince?.toISOString() ?? null,
      lastError: this.lastError,
      reconnects: this.reconnects,
      ready: this.isReady(),
      types,
    };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    this.client.close();
  }

  // -------------------------------------------------------------------------------------------

  private connect(): void {
    if (this.closed) return;
    const md = new Metadata();
    try {
      md.set('authorization', `Bearer ${this.opts.token().trim()}`);
    } catch (err) {
      this.failed(`cannot read the xDS token: ${errorMessage(err)}`);
      return;
    }
    md.set('clusterid', this.opts.clusterId ?? DEFAULT_CLUSTER_ID);
    const stream = this.client.deltaAggregatedResources(md);
    this.stream = stream;
    let ended = false;
    const answered = new Set<string>();
    const end = (reason: string): void => {
      if (ended) return;
      ended = true;
      clearTimeout(deadline);
      if (this.stream === stream) this.stream = undefined;
      this.connectedSince = null;
      this.failed(reason);
    };
    // A server that accepts the stream but never answers (overloaded, wedged) must not keep us waiting forever.
    const deadline = setTimeout(() => {
      if (answered.size === this.types.size) return;
      stream.cancel();
      end(`no initial response for ${[...this.types.keys()].filter((t) => !answered.has(t)).join(', ')} within ${INITIAL_RESPONSE_DEADLINE_MS / 1000} s`);
    }, this.opts.initialResponseDeadlineMs ?? INITIAL_RESPONSE_DEADLINE_MS);
    deadline.unref();
    stream.on('data', (res: DeltaDiscoveryResponse) => {
      if (this.stream !== stream) return;
      if (this.connectedSince === null) this.connectedSince = new Date();
      this.failures = 0;
      answered.add(res.typeUrl);
      this.receive(res);
    });
    stream.on('error', (err: ServiceError) => end(`${status[err.code] ?? err.code}: ${err.details || err.message}`));
    stream.on('end', () => end('the server ended the stream'));
    // One request per type, with what is held: after a reconnect only the difference comes back.
    for (const [typeUrl, t] of this.types) {
      const initialResourceVersions: Record<string, string> = {};
      for (const [name, r] of t.held) initialResourceVersions[name] = r.version;
      const subscribe = t.names ? [...t.names] : [];
      this.write(stream, {
        typeUrl,
        resourceNamesSubscribe: subscribe,
        initialResourceVersions,
        // A named-only client with nothing to ask for yet subscribes to nothing rather than to everything.
        ...(t.names && subscribe.length === 0 ? { resourceNamesSubscribe: ['*'], resourceNamesUnsubscribe: ['*'] } : {}),
      });
    }
  }

  private failed(reason: string): void {
    if (this.closed) return;
    this.lastError = reason;
    const delay = backoffDelay(++this.failures, this.opts.backoff ?? DEFAULT_BACKOFF);
    this.log.warn({ address: this.opts.address, err: reason, retryInMs: delay, holding: Object.fromEntries([...this.types].map(([t, s]) => [t.slice(t.lastIndexOf('.') + 1), s.held.size])) }, 'xDS stream down; serving the last good state and reconnecting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.reconnects++;
      this.connect();
    }, delay);
  }

  private receive(res: DeltaDiscoveryResponse): void {
    const state = this.types.get(res.typeUrl);
    if (!state) {
      // A type we did not ask for: NACK it so the server's status shows the mistake.
      this.send({ typeUrl: res.typeUrl, responseNonce: res.nonce, errorDetail: { code: status.INVALID_ARGUMENT, message: `type ${res.typeUrl} was not subscribed`, details: [] } });
      return;
    }
    const errors: string[] = [];
    const updated: string[] = [];
    for (const r of res.resources) {
      // A named subscription holds only what it asked for (a response may cross an unsubscribe).
      if (state.names && !state.names.has(r.name) && !r.aliases.some((a) => state.names!.has(a))) continue;
      if (!r.resource || r.resource.typeUrl !== res.typeUrl) {
        errors.push(`${r.name}: resource type ${r.resource?.typeUrl ?? 'missing'} in a ${res.typeUrl} response`);
        continue;
      }
      let value: unknown;
      try {
        value = state.spec.decode(r.resource.value);
      } catch (err) {
        errors.push(`${r.name}: does not decode: ${errorMessage(err)}`);
        continue;
      }
      const invalid = state.spec.validate?.(r.name, value);
      if (invalid !== undefined) {
        errors.push(`${r.name}: ${invalid}`);
        continue;
      }
      state.held.set(r.name, { version: r.version, value });
      updated.push(r.name);
    }
    const removed: string[] = [];
    for (const name of res.removedResources) if (state.held.delete(name)) removed.push(name);
    state.received++;
    state.lastNonce = res.nonce;
    if (errors.length > 0) {
      const message = errors.slice(0, 20).join('; ') + (errors.length > 20 ? `; and ${errors.length - 20} more` : '');
      state.nack = message;
      this.log.error({ typeUrl: res.typeUrl, nonce: res.nonce, err: message }, 'rejected resources (NACK); keeping their last good versions');
      this.send({ typeUrl: res.typeUrl, responseNonce: res.nonce, errorDetail: { code: status.INVALID_ARGUMENT, message, details: [] } });
    } else {
      state.nack = null;
      this.send({ typeUrl: res.typeUrl, responseNonce: res.nonce });
    }
    if (!state.ready) {
      state.ready = true;
      this.log.info({ typeUrl: res.typeUrl, resources: state.held.size }, 'initial state received');
      if (this.isReady()) this.readyResolve();
    }
    const update: XdsUpdate = { typeUrl: res.typeUrl, updated, removed };
    for (const listener of this.listeners) {
      try {
        listener(update);
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, 'an xDS update listener failed');
      }
    }
  }

  private send(partial: Partial<DeltaDiscoveryRequest>): void {
    if (this.stream) this.write(this.stream, partial);
  }

  private write(stream: ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>, partial: Partial<DeltaDiscoveryRequest>): void {
    const node = this.opts.node;
    const req: DeltaDiscoveryRequest = {
      node: { id: node.id, cluster: node.cluster ?? '', metadata: node.metadata, userAgentName: 'ambit' },
      typeUrl: '',
      resourceNamesSubscribe: [],
      resourceNamesUnsubscribe: [],
      initialResourceVersions: {},
      responseNonce: '',
      errorDetail: undefined,
      ...partial,
    };
    try {
      stream.write(req);
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'write on a closing xDS stream');
    }
  }
}
