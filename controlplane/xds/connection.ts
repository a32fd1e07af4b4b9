// One client's DeltaAggregatedResources stream: its subscriptions per type, what is pending for
// it, and the ACK/NACK bookkeeping. Pushes never queue without bound: while a response is being
// written, further changes only add names to the pending set, and the next response carries the
// resources as they are when it is built. A NACK is recorded and reported, never answered by a
// resend (the same content would be refused again): the next change of a resource is sent.

import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { DeltaDiscoveryRequest } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import type { Logger } from '../../mesh/log.js';
import type { CacheChange, CachedResource, ResourceCache } from './resource-cache.js';
import { isUnreadable, type PreparedResponse, type UnreadableRequest } from './wire.js';
import { WILDCARD } from '../../mesh/xds/types.js';

/** Responses above this many bytes count against the server-wide limit of large responses in flight. */
export const LARGE_RESPONSE_BYTES = 1 << 20;

/** Sustained request rate a client may send (ACKs included), and the burst above it. */
const REQUESTS_PER_SECOND = 100;
const REQUEST_BURST = 400;
/** Requests held while the stream's token is being checked. */
const MAX_QUEUED_BEFORE_AUTH = 32;

export type XdsStream = ServerDuplexStream<DeltaDiscoveryRequest | UnreadableRequest, PreparedResponse>;

/** Limits how many large responses are being written at once across all clients (memory). */
export interface Throttle {
  acquire(grant: () => void): void;
  release(): void;
}

export interface ConnectionHost {
  readonly cache: ResourceCache;
  readonly throttle: Throttle;
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
  /** What an alias subscription last resolved to, so its removal can be sent by name. */
  readonly aliasTargets: Map<string, string>;
  /** Names (or aliases) to look at on the next send; `all` = everything subscribed. */
  pending: Set<string> | 'all';
  /** Versions the client said it holds when it (re)connected; consulted by the first full send. */
  clientVersions: Map<string, string> | undefined;
  initialSent: boolean;
  lastNonce: string | null;
  ackedNonce: string | null;
  nack: string | null;
  nacks: number;
  responses: number;
}

export class XdsConnection {
  readonly id: string;
  readonly connectedAt = new Date();
  private node = '';
  private caller = '';
  private readonly types = new Map<string, TypeState>();
  private authenticated = false;
  private queued: (DeltaDiscoveryRequest | UnreadableRequest)[] = [];
  private closed = false;
  private writing = 0;
  private heldThrottle = 0;
  private waitingThrottle = false;
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
    call.on('data', (req: DeltaDiscoveryRequest | UnreadableRequest) => this.receive(req));
    call.on('end', () => this.close(null));
    call.on('cancelled', () => this.close(null));
    call.on('error', () => this.close(null));
    call.on('close', () => this.close(null));
  }

  get peer(): string {
    return this.call.getPeer();
  }

  /** The stream's token was accepted: requests are processed from now on. */
  accept(caller: string): void {
    if (this.closed) return;
    this.authenticated = true;
    this.caller = caller;
    const queued = this.queued;
    this.queued = [];
    for (const req of queued) this.receive(req);
  }

  /** Ends the stream with a status (authentication failures, abuse, shutdown). */
  fail(code: status, message: string): void {
    if (this.closed) return;
    this.log.warn({ code: status[code], err: message, peer: this.peer, node: this.node || undefined }, 'xDS stream ended');
    const err = Object.assign(new Error(message), { code, details: message });
    this.close(err);
  }

  /** The cache changed: these resources of this type (with these aliases) may concern the client. */
  notify(typeUrl: string, change: CacheChange): void {
    const state = this.types.get(typeUrl);
    if (!state || state.pending === 'all') return;
    const pending = state.pending;
    const before = pending.size;
    for (const name of change.names) {
      if (state.wildcard || state.names.has(name) || isAliasTarget(state, name)) pending.add(name);
    }
    if (state.names.size > 0) for (const alias of change.aliases) if (state.names.has(alias)) pending.add(alias);
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

  private receive(req: DeltaDiscoveryRequest | UnreadableRequest): void {
    if (this.closed) return;
    if (!this.authenticated) {
      if (this.queued.length >= MAX_QUEUED_BEFORE_AUTH) {
        this.fail(status.RESOURCE_EXHAUSTED, `more than ${MAX_QUEUED_BEFORE_AUTH} requests before the token was checked`);
        return;
      }
      this.queued.push(req);
      return;
    }
    if (!this.takeToken()) {
      this.fail(status.RESOURCE_EXHAUSTED, `more than ${REQUESTS_PER_SECOND} requests per second (burst ${REQUEST_BURST}): slow down and reconnect`);
      return;
    }
    if (isUnreadable(req)) {
      this.fail(req.tooLarge ? status.RESOURCE_EXHAUSTED : status.INVALID_ARGUMENT, req.unreadable);
      return;
    }
    if (req.node?.id && !this.node) this.node = req.node.id.slice(0, 256);
    if (!this.host.cache.serves(req.typeUrl)) {
      // As istiod: an unknown type is ignored (and said once), the stream's other types go on.
      if (!this.warnedTypes.has(req.typeUrl) && this.warnedTypes.size < 16) {
        this.warnedTypes.add(req.typeUrl);
        this.log.warn({ typeUrl: req.typeUrl.slice(0, 200), node: this.node }, 'request for a type this server does not serve; ignored');
      }
      return;
    }
    let state = this.types.get(req.typeUrl);
    if (!state) {
      state = this.subscribeType(req);
    } else if (req.responseNonce !== '') {
      this.acknowledge(state, req);
    }
    this.applySubscriptions(state, req);
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
      pending: 'all',
      clientVersions: versions.length > 0 ? new Map(versions) : undefined,
      initialSent: false,
      lastNonce: null,
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
    // A reply to an older response than the last one says nothing about the current state.
    if (req.responseNonce !== state.lastNonce) return;
    if (req.errorDetail) {
      state.nacks++;
      const message = (req.errorDetail.message || `code ${req.errorDetail.code}`).slice(0, 1000);
      // Logged when the error changes, not for every NACK of a client stuck on the same problem.
      if (message !== state.nack) this.log.warn({ typeUrl: state.typeUrl, nonce: req.responseNonce, node: this.node, err: message }, 'client rejected a response (NACK)');
      state.nack = message;
      return;
    }
    state.ackedNonce = req.responseNonce;
    state.nack = null;
  }

  private applySubscriptions(state: TypeState, req: DeltaDiscoveryRequest): void {
    for (const name of req.resourceNamesSubscribe) {
      if (name === WILDCARD) {
        if (!state.wildcard) {
          state.wildcard = true;
          state.pending = 'all';
        }
      } else if (!state.names.has(name)) {
        state.names.add(name);
        if (state.pending !== 'all') state.pending.add(name);
      }
    }
    for (const name of req.resourceNamesUnsubscribe) {
      if (name === WILDCARD) state.wildcard = false;
      else {
        state.names.delete(name);
        state.aliasTargets.delete(name);
        if (state.pending !== 'all') state.pending.delete(name);
      }
    }
  }

  private takeToken(): boolean {
    const now = Date.now();
    this.tokens = Math.min(REQUEST_BURST, this.tokens + ((now - this.lastRefill) / 1000) * REQUESTS_PER_SECOND);
    this.lastRefill = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
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
    if (this.closed || !this.authenticated || this.writing > 0 || this.waitingThrottle) return;
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
      for (const r of responses) {
        this.call.write(r, () => {
          this.writing--;
          if (this.writing === 0) {
            this.releaseThrottle();
            this.flush();
          }
        });
      }
    };
    if (bytes >= LARGE_RESPONSE_BYTES) {
      this.waitingThrottle = true;
      this.host.throttle.acquire(() => {
        this.waitingThrottle = false;
        if (this.closed) {
          this.host.throttle.release();
          return;
        }
        this.heldThrottle++;
        write();
      });
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
    const removed: string[] = [];
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
      // What the client holds from before and the server no longer has (or it no longer subscribes to).
      if (held) {
        for (const name of held.keys()) {
          if (included.has(name) || cache.get(state.typeUrl, name)) continue;
          removed.push(name);
        }
      }
    } else {
      for (const name of pending) {
        if (state.wildcard || state.names.has(name) || isAliasTarget(state, name)) this.resolveInto(state, name, undefined, add, removed);
      }
    }
    if (resources.length === 0 && removed.length === 0 && state.initialSent) return undefined;
    state.initialSent = true;
    const nonce = `${this.id}-${++this.nonceCounter}`;
    state.lastNonce = nonce;
    state.responses++;
    return { typeUrl: state.typeUrl, nonce, systemVersionInfo: String(cache.generation), resources, removedResources: dedupe(removed) };
  }

  private resolveInto(
    state: TypeState,
    name: string,
    held: Map<string, string> | undefined,
    add: (entry: CachedResource) => void,
    removed: string[],
  ): void {
    const entry = this.host.cache.resolve(state.typeUrl, name);
    if (entry) {
      if (entry.name !== name) state.aliasTargets.set(name, entry.name);
      if (held?.get(entry.name) !== entry.version) add(entry);
      return;
    }
    // Gone (or never there): tell the client, by the name it knows the resource under.
    const target = state.aliasTargets.get(name);
    if (target !== undefined && !this.host.cache.get(state.typeUrl, target)) {
      removed.push(target);
      state.aliasTargets.delete(name);
    } else if (target === undefined) {
      removed.push(name);
    }
  }

  private close(err: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.queued = [];
    this.releaseThrottle();
    this.host.closed(this);
    if (err) this.call.emit('error', err);
    else if (!this.call.writableEnded) this.call.end();
  }

  /** Server shutdown: end the stream normally; the client reconnects elsewhere or later. */
  shutdown(): void {
    this.close(null);
  }
}

function isAliasTarget(state: TypeState, name: string): boolean {
  if (state.aliasTargets.size === 0) return false;
  for (const target of state.aliasTargets.values()) if (target === name) return true;
  return false;
}

function dedupe(names: string[]): string[] {
  return names.length < 2 ? names : [...new Set(names)];
}
