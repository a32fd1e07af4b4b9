// One client's DeltaAggregatedResources stream: its subscriptions per type, what is pending for
// it, and the ACK/NACK bookkeeping. Pushes never queue without bound: while a response is being
// written, further changes only add names to the pending set, and the next response carries the
// resources as they are when it is built. A NACK is recorded and reported, never answered by a
// resend (the same content would be refused again): the next change of a resource is sent.
//
// What one client can cost is bounded: requests are decoded only after its token is accepted,
// it may subscribe to a bounded number of names, a client that stops reading is cut off after a
// deadline (its slot among the large responses released), and one that falls too far behind is
// disconnected to resync from the versions it holds.

import http2 from 'node:http2';
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { DeltaDiscoveryRequest } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import type { Logger } from '../../mesh/log.js';
import type { CacheChange, CachedResource, ResourceCache } from './resource-cache.js';
import { decodeRequest, type PreparedResponse, type RawRequest } from './wire.js';
import { WILDCARD } from '../../mesh/xds/types.js';

/** Responses above this many bytes count against the server-wide limit of large responses in flight. */
export const LARGE_RESPONSE_BYTES = 1 << 20;
/** A response not taken by the client within this long: it has stopped reading. */
export const WRITE_DEADLINE_MS = 60_000;
/** A stream ended with a status that is not delivered within this long is reset. */
const END_GRACE_MS = 5_000;

/** Requests a client may send besides the first reply to each response, per second, and the burst above it. */
const REQUESTS_PER_SECOND = 100;
const REQUEST_BURST = 400;
/** Held while the stream's token is being checked. */
const MAX_QUEUED_BEFORE_AUTH = 32;
const MAX_QUEUED_BYTES_BEFORE_AUTH = 1 << 20;
/** Explicit names (and aliases) one stream may subscribe to per type. */
export const MAX_NAMES_PER_TYPE = 100_000;
/** Responses whose ACK or NACK still counts (a NACK often arrives after the next push went out). */
const RECENT_NONCES = 8;

export type XdsStream = ServerDuplexStream<RawRequest, PreparedResponse>;

/** Limits how many large responses are being written at once across all clients (memory). */
export interface Throttle {
  /** `grant` runs when a slot is free; the returned function withdraws a request not yet granted. */
  acquire(grant: () => void): () => void;
  release(): void;
}

export interface ConnectionHost {
  readonly cache: ResourceCache;
  readonly throttle: Throttle;
  /** See WRITE_DEADLINE_MS. */
  readonly writeDeadlineMs: number;
  readonly log: Logger;
  closed(conn: XdsConnection): void;
}

export interface TypeStatus {
  wildcard: boolean;
  /** Explicitly subscribed names (and aliases). */
  names: number;
  responses: number;
  lastNonce: string | null;
  ackedNonce: string | null;
  nacks: number;
  /** The error of the last NACK, while the client has not ACKed a later response. */
  nack: string | null;
  /** Names waiting to be sent (or "all" before the first response). */
  pending: number | 'all';
}

export interface ConnectionStatus {
  id: string;
  peer: string;
  node: string;
  caller: string;
  connectedAt: string;
  types: Record<string, TypeStatus>;
}

interface TypeState {
  readonly typeUrl: string;
  wildcard: boolean;
  /** Explicit subscriptions: resource names, or aliases such as `<network>/<ip>`. */
  readonly names: Set<string>;
  /** What each alias subscription last resolved to, and how many aliases resolve to each name. */
  readonly aliasTargets: Map<string, string>;
  readonly aliasCount: Map<string, number>;
  /** Names (or aliases) to look at on the next send; `all` = everything subscribed. */
  pending: Set<string> | 'all';
  /** Versions the client said it holds when it (re)connected; consulted by the next full send. */
  clientVersions: Map<string, string> | undefined;
  initialSent: boolean;
  /** The latest response's nonce, and the last few whose replies still count. */
  lastNonce: string | null;
  readonly recentNonces: string[];
  /** Nonces already answered (an ACK or NACK each is free of the rate limit; repeats are not). */
  readonly answered: Set<string>;
  ackedNonce: string | null;
  nack: string | null;
  nacks: number;
  responses: number;
}

/** Ends an HTTP/2 stream at once, when its status cannot be delivered (the peer stopped reading). */
function resetStream(call: XdsStream): void {
  // grpc-js has no public way to reset a server stream; without interceptors, the call's `call` is
  // its BaseServerInterceptingCall, which holds the HTTP/2 stream. test/unit/xds-server.test.ts
  // checks that a client that stops reading is cut off, so an upgrade that moves this is noticed.
  const stream = (call as unknown as { call?: { stream?: { close?: (code: number) => void; destroyed?: boolean } } }).call?.stream;
  if (stream && !stream.destroyed && typeof stream.close === 'function') stream.close(http2.constants.NGHTTP2_CANCEL);
}

export class XdsConnection {
  readonly id: string;
  readonly connectedAt = new Date();
  caller = '';
  private node = '';
  private readonly types = new Map<string, TypeState>();
  private authenticated = false;
  private queued: RawRequest[] = [];
  private queuedBytes = 0;
  private closed = false;
  private finished = false;
  private writing = 0;
  private heldThrottle = 0;
  private withdraw: (() => void) | undefined;
  private writeDeadline: NodeJS.Timeout | undefined;
  private flushScheduled = false;
  private nonceCounter = 0;
  private tokens = REQUEST_BURST;
  private lastRefill = Date.now();
  private readonly warnedTypes = new Set<string>();
  private readonly log: Logger;

  constructor(
    id: string,
    private readonly call: XdsStream,
    private readonly host: ConnectionHost,
  ) {
    this.id = id;
    this.log = host.log.child({ conn: id });
    call.on('data', (req: RawRequest) => this.receive(req));
    call.on('end', () => this.close(null));
    call.on('cancelled', () => this.ended());
    call.on('error', () => this.close(null));
    call.on('close', () => this.ended());
    call.on('finish', () => this.ended());
  }

  get peer(): string {
    try {
      return this.call.getPeer();
    } catch {
      return 'unknown';
    }
  }

  /** The stream's token was accepted: requests are processed from now on. */
  accept(caller: string): void {
    if (this.closed) return;
    this.authenticated = true;
    this.caller = caller;
    const queued = this.queued;
    this.queued = [];
    this.queuedBytes = 0;
    for (const req of queued) this.receive(req);
  }

  /** Ends the stream with a status (authentication failures, abuse, shutdown). */
  fail(code: status, message: string): void {
    if (this.closed) return;
    this.log.warn({ code: status[code], err: message, peer: this.peer, node: this.node || undefined, caller: this.caller || undefined }, 'xDS stream ended');
    this.close(Object.assign(new Error(message), { code, details: message }));
  }

  /** The cache changed: these resources of this type (with these aliases) may concern the client. */
  notify(typeUrl: string, change: CacheChange): void {
    const state = this.types.get(typeUrl);
    if (this.closed || !state || state.pending === 'all') return;
    const pending = state.pending;
    const before = pending.size;
    for (const name of change.names) {
      if (state.wildcard || state.names.has(name) || state.aliasCount.has(name)) pending.add(name);
    }
    if (state.names.size > 0) for (const alias of change.aliases) if (state.names.has(alias)) pending.add(alias);
    // A client that cannot keep up would make this grow without bound: it resyncs instead.
    if (pending.size > MAX_NAMES_PER_TYPE + 2 * this.host.cache.size(typeUrl)) {
      this.fail(status.UNAVAILABLE, `the client fell ${pending.size} changes behind; reconnect to resync from the versions held`);
      return;
    }
    if (pending.size > before) this.scheduleFlush();
  }

  status(): ConnectionStatus {
    const types: Record<string, TypeStatus> = {};
    for (const [typeUrl, s] of this.types) {
      types[typeUrl] = {
        wildcard: s.wildcard,
        names: s.names.size,
        responses: s.responses,
        lastNonce: s.lastNonce,
        ackedNonce: s.ackedNonce,
        nacks: s.nacks,
        nack: s.nack,
        pending: s.pending === 'all' ? 'all' : s.pending.size,
      };
    }
    return { id: this.id, peer: this.peer, node: this.node, caller: this.caller, connectedAt: this.connectedAt.toISOString(), types };
  }

  // -------------------------------------------------------------------------------------------
  // Requests

  private receive(raw: RawRequest): void {
    if (this.closed) return;
    if (!this.authenticated) {
      this.queuedBytes += raw.size;
      if (this.queued.length >= MAX_QUEUED_BEFORE_AUTH || this.queuedBytes > MAX_QUEUED_BYTES_BEFORE_AUTH) {
        this.fail(status.RESOURCE_EXHAUSTED, `more than ${MAX_QUEUED_BEFORE_AUTH} requests or ${MAX_QUEUED_BYTES_BEFORE_AUTH} bytes before the token was checked`);
        return;
      }
      this.queued.push(raw);
      return;
    }
    const decoded = decodeRequest(raw);
    if (!decoded.ok) {
      this.fail(decoded.tooLarge ? status.RESOURCE_EXHAUSTED : status.INVALID_ARGUMENT, decoded.message);
      return;
    }
    const req = decoded.request;
    if (req.node?.id && !this.node) this.node = req.node.id.slice(0, 256);
    if (!this.host.cache.serves(req.typeUrl)) {
      if (!this.takeToken()) return;
      // As istiod: an unknown type is ignored (and said once), the stream's other types go on.
      if (!this.warnedTypes.has(req.typeUrl) && this.warnedTypes.size < 16) {
        this.warnedTypes.add(req.typeUrl);
        this.log.warn({ typeUrl: req.typeUrl.slice(0, 200), node: this.node }, 'request for a type this server does not serve; ignored');
      }
      return;
    }
    let state = this.types.get(req.typeUrl);
    // The first reply to each response is what every client sends; anything more is charged.
    const firstReply = state !== undefined && req.responseNonce !== '' && state.recentNonces.includes(req.responseNonce) && !state.answered.has(req.responseNonce);
    if (!firstReply && !this.takeToken()) return;
    if (!state) {
      state = this.subscribeType(req);
    } else {
      if (req.responseNonce !== '') this.acknowledge(state, req);
      const versions = Object.entries(req.initialResourceVersions);
      if (versions.length > 0) {
        // A client restating what it holds on an open stream: resync from it.
        state.clientVersions = new Map(versions);
        state.pending = 'all';
      }
    }
    this.applySubscriptions(state, req);
    if (this.closed) return;
    this.scheduleFlush();
  }

  private subscribeType(req: DeltaDiscoveryRequest): TypeState {
    // The first request of a type with no names at all is the legacy wildcard (what ztunnel sends).
    const legacyWildcard = req.resourceNamesSubscribe.length === 0 && req.resourceNamesUnsubscribe.length === 0;
    const versions = Object.entries(req.initialResourceVersions);
    const state: TypeState = {
      typeUrl: req.typeUrl,
      wildcard: legacyWildcard,
      names: new Set(),
      aliasTargets: new Map(),
      aliasCount: new Map(),
      pending: 'all',
      clientVersions: versions.length > 0 ? new Map(versions) : undefined,
      initialSent: false,
      lastNonce: null,
      recentNonces: [],
      answered: new Set(),
      ackedNonce: null,
      nack: null,
      nacks: 0,
      responses: 0,
    };
    this.types.set(req.typeUrl, state);
    this.log.debug({ typeUrl: req.typeUrl, wildcard: legacyWildcard, clientVersions: versions.length, node: this.node }, 'subscribed');
    return state;
  }

  private acknowledge(state: TypeState, req: DeltaDiscoveryRequest): void {
    // A reply to a response older than the last few says nothing about the current state.
    if (!state.recentNonces.includes(req.responseNonce)) return;
    state.answered.add(req.responseNonce);
    if (req.errorDetail) {
      state.nacks++;
      const message = (req.errorDetail.message || `code ${req.errorDetail.code}`).slice(0, 1000);
      // Logged when the error changes, not for every NACK of a client stuck on the same problem.
      if (message !== state.nack) this.log.warn({ typeUrl: state.typeUrl, nonce: req.responseNonce, node: this.node, err: message }, 'client rejected a response (NACK)');
      state.nack = message;
      return;
    }
    if (req.responseNonce === state.lastNonce) {
      state.ackedNonce = req.responseNonce;
      state.nack = null;
    }
  }

  private applySubscriptions(state: TypeState, req: DeltaDiscoveryRequest): void {
    for (const name of req.resourceNamesSubscribe) {
      if (name === WILDCARD) {
        if (!state.wildcard) {
          state.wildcard = true;
          state.pending = 'all';
        }
      } else if (!state.names.has(name)) {
        if (state.names.size >= MAX_NAMES_PER_TYPE) {
          this.fail(status.RESOURCE_EXHAUSTED, `more than ${MAX_NAMES_PER_TYPE} names subscribed for ${state.typeUrl}`);
          return;
        }
        state.names.add(name);
        if (state.pending !== 'all') state.pending.add(name);
      }
    }
    for (const name of req.resourceNamesUnsubscribe) {
      if (name === WILDCARD) {
        state.wildcard = false;
        continue;
      }
      state.names.delete(name);
      this.retarget(state, name, undefined);
      // A pending change stays pending: a wildcard subscription may still cover it (build() filters).
    }
  }

  private takeToken(): boolean {
    const now = Date.now();
    this.tokens = Math.min(REQUEST_BURST, this.tokens + ((now - this.lastRefill) / 1000) * REQUESTS_PER_SECOND);
    this.lastRefill = now;
    if (this.tokens >= 1) {
      this.tokens--;
      return true;
    }
    this.fail(status.RESOURCE_EXHAUSTED, `more than ${REQUESTS_PER_SECOND} requests per second (burst ${REQUEST_BURST}) beyond the replies to responses: slow down and reconnect`);
    return false;
  }

  // -------------------------------------------------------------------------------------------
  // Responses

  private scheduleFlush(): void {
    if (this.flushScheduled || this.closed) return;
    this.flushScheduled = true;
    // After the current burst of requests or notifications: one response carries all of it.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.closed || !this.authenticated || this.writing > 0 || this.withdraw) return;
    const responses: PreparedResponse[] = [];
    let bytes = 0;
    for (const state of this.types.values()) {
      const r = this.build(state);
      if (!r) continue;
      responses.push(r);
      for (const b of r.resources) bytes += b.length;
    }
    if (responses.length === 0) return;
    const write = (): void => {
      if (this.closed) return;
      this.writing = responses.length;
      this.writeDeadline = setTimeout(() => {
        this.fail(status.DEADLINE_EXCEEDED, `the client took no response for ${this.host.writeDeadlineMs / 1000} s (not reading)`);
      }, this.host.writeDeadlineMs);
      for (const r of responses) {
        this.call.write(r, () => {
          this.writing--;
          if (this.writing > 0) return;
          clearTimeout(this.writeDeadline);
          this.releaseThrottle();
          this.flush();
        });
      }
    };
    if (bytes >= LARGE_RESPONSE_BYTES) {
      // A slot may be granted before acquire() returns: only a request still waiting is withdrawable.
      let granted = false;
      const withdraw = this.host.throttle.acquire(() => {
        granted = true;
        this.withdraw = undefined;
        this.heldThrottle++;
        write();
      });
      if (!granted) this.withdraw = withdraw;
    } else {
      write();
    }
  }

  private releaseThrottle(): void {
    while (this.heldThrottle > 0) {
      this.heldThrottle--;
      this.host.throttle.release();
    }
  }

  /** The response this type needs now, or undefined when the client is up to date. */
  private build(state: TypeState): PreparedResponse | undefined {
    const cache = this.host.cache;
    const resources: Buffer[] = [];
    const removed = new Set<string>();
    const included = new Set<string>();
    const add = (entry: CachedResource): void => {
      if (included.has(entry.name)) return;
      included.add(entry.name);
      resources.push(entry.encoded);
    };
    const pending = state.pending;
    state.pending = new Set();
    if (pending === 'all') {
      const held = state.clientVersions;
      state.clientVersions = undefined;
      if (state.wildcard) {
        for (const entry of cache.all(state.typeUrl)) if (held?.get(entry.name) !== entry.version) add(entry);
      }
      for (const name of state.names) this.resolveInto(state, name, held, add, removed);
      // What the client holds and the server no longer serves it (gone, or no longer subscribed).
      if (held) {
        for (const name of held.keys()) {
          if (included.has(name)) continue;
          const entry = cache.get(state.typeUrl, name);
          if (!entry || !this.covers(state, name)) removed.add(name);
        }
      }
    } else {
      // Explicit subscriptions first: an alias that moved changes what the client is subscribed to.
      for (const name of pending) if (state.names.has(name)) this.resolveInto(state, name, undefined, add, removed);
      for (const name of pending) if (!state.names.has(name) && this.covers(state, name)) this.resolveInto(state, name, undefined, add, removed);
    }
    for (const name of included) removed.delete(name);
    if (resources.length === 0 && removed.size === 0 && state.initialSent) return undefined;
    state.initialSent = true;
    const nonce = `${this.id}-${++this.nonceCounter}`;
    state.lastNonce = nonce;
    state.recentNonces.push(nonce);
    if (state.recentNonces.length > RECENT_NONCES) state.answered.delete(state.recentNonces.shift()!);
    state.responses++;
    return { typeUrl: state.typeUrl, nonce, systemVersionInfo: String(cache.generation), resources, removedResources: [...removed] };
  }

  /** Whether the client's subscription covers a resource name (wildcard, by name, or by one of its aliases). */
  private covers(state: TypeState, name: string): boolean {
    return state.wildcard || state.names.has(name) || state.aliasCount.has(name);
  }

  private resolveInto(state: TypeState, name: string, held: Map<string, string> | undefined, add: (entry: CachedResource) => void, removed: Set<string>): void {
    const entry = this.host.cache.resolve(state.typeUrl, name);
    if (entry) {
      if (entry.name !== name) this.retarget(state, name, entry.name, removed);
      if (held?.get(entry.name) !== entry.version) add(entry);
      return;
    }
    if (state.aliasTargets.has(name)) {
      // An alias that resolves to nothing now: what it pointed at is gone for this client, unless still covered.
      this.retarget(state, name, undefined, removed);
      return;
    }
    // A name (subscribed, covered by the wildcard, or held through an alias) that is not there.
    removed.add(name);
  }

  /** Points an alias subscription at `target` (or nowhere); the old target is removed from the client unless still covered. */
  private retarget(state: TypeState, alias: string, target: string | undefined, removed?: Set<string>): void {
    const old = state.aliasTargets.get(alias);
    if (old === target) return;
    if (old !== undefined) {
      const left = (state.aliasCount.get(old) ?? 1) - 1;
      if (left > 0) state.aliasCount.set(old, left);
      else state.aliasCount.delete(old);
      state.aliasTargets.delete(alias);
      if (removed && !this.covers(state, old)) removed.add(old);
    }
    if (target !== undefined) {
      state.aliasTargets.set(alias, target);
      state.aliasCount.set(target, (state.aliasCount.get(target) ?? 0) + 1);
    }
  }

  private close(err: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.queued = [];
    clearTimeout(this.writeDeadline);
    this.withdraw?.();
    this.withdraw = undefined;
    this.releaseThrottle();
    this.host.closed(this);
    try {
      if (err) this.call.emit('error', err);
      else if (!this.call.writableEnded) this.call.end();
    } catch (e) {
      this.log.debug({ err: (e as Error).message }, 'ending an xDS stream failed');
    }
    // The status goes out after what is buffered; a client that does not read never takes it.
    if (!this.finished) setTimeout(() => (this.finished ? undefined : resetStream(this.call)), END_GRACE_MS).unref();
  }

  private ended(): void {
    this.finished = true;
    this.close(null);
  }

  /** Server shutdown: end the stream normally; the client reconnects elsewhere or later. */
  shutdown(): void {
    this.close(null);
  }
}
