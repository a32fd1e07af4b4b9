// From the config source to the clients: views are debounced, the incremental model computes what
// changed, the changed resources are encoded into the xDS cache, and the server pushes them. Policy
// status goes back to the source (Kubernetes status, or the lab's status file); problems are logged
// once when they appear and once when they are resolved.

import type { ConfigSource } from '../mesh/config/source.js';
import type { ClusterView } from '../mesh/config/view.js';
import { errorMessage } from '../mesh/errors.js';
import type { Logger } from '../mesh/log.js';
import { Address, type Service as WorkloadService, type Workload } from '../proto/gen/istio/workload/workload.js';
import { Authorization } from '../proto/gen/istio/security/authorization.js';
import { Waypoint } from '../proto/gen/ambit/waypoint/v1alpha1/waypoint.js';
import { IncrementalModel, type ModelChanges } from './model/incremental.js';
import { ipText } from './model/render.js';
import type { ModelOptions, ModelSnapshot, Problem } from './model/types.js';
import type { ResourceUpdate } from './xds/resource-cache.js';
import type { XdsServer } from './xds/server.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_TYPE } from '../mesh/xds/types.js';

/** Quiet time after a change before recomputing, and the longest a change waits under a stream of them (istiod: 100 ms / 10 s). */
export const DEFAULT_DEBOUNCE_MS = 20;
export const DEFAULT_MAX_DELAY_MS = 250;
const RETRY_MS = 1000;

export interface DiscoveryOptions {
  source: ConfigSource;
  xds: XdsServer;
  model: ModelOptions;
  log: Logger;
  debounceMs?: number;
  maxDelayMs?: number;
}

export interface PushStats {
  /** Model generation (pushes that changed something). */
  pushes: number;
  lastPushAt: string | null;
  /** Milliseconds from the first change of a batch to the resources being in the cache. */
  lastPushMs: number;
  lastTranslated: number;
  resources: { addresses: number; authorizations: number; waypoints: number };
}

function problemKey(p: Problem): string {
  return `${p.object.kind} ${p.object.namespace ? `${p.object.namespace}/` : ''}${p.object.name}: ${p.message}`;
}

export class Discovery {
  private model: IncrementalModel;
  /** The model is new (start, or after a failure): what the cache holds beyond its first snapshot is stale. */
  private fresh = true;
  private readonly log: Logger;
  private readonly debounceMs: number;
  private readonly maxDelayMs: number;
  private latest: ClusterView | undefined;
  private timer: NodeJS.Timeout | undefined;
  private firstChangeAt = 0;
  private readonly known = new Map<string, Problem>();
  private stats: PushStats = { pushes: 0, lastPushAt: null, lastPushMs: 0, lastTranslated: 0, resources: { addresses: 0, authorizations: 0, waypoints: 0 } };
  private stopped = false;
  private readonly pushListeners: ((changes: ModelChanges) => void)[] = [];
  private revisionCounter = 0;

  constructor(private readonly opts: DiscoveryOptions) {
    this.model = new IncrementalModel(opts.model);
    this.log = opts.log.child({ component: 'discovery' });
    this.debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.maxDelayMs = opts.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  }

  /** Computes the first model from the source's current view (call after source.start()), then follows changes. */
  start(): void {
    this.opts.source.onChange((view) => this.changed(view));
    this.latest = this.opts.source.current();
    this.firstChangeAt = performance.now();
    this.recompute();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  snapshot(): ModelSnapshot {
    return this.model.snapshot();
  }

  /** Bumped whenever the model's output changed (resources, policy status or problems). */
  get revision(): number {
    return this.revisionCounter;
  }

  pushStats(): PushStats {
    return { ...this.stats, resources: { ...this.stats.resources } };
  }

  /** Called after every push (tests and benchmarks). */
  onPush(listener: (changes: ModelChanges) => void): void {
    this.pushListeners.push(listener);
  }

  private changed(view: ClusterView): void {
    if (this.stopped) return;
    this.latest = view;
    const now = performance.now();
    if (!this.timer) this.firstChangeAt = now;
    clearTimeout(this.timer);
    const waited = now - this.firstChangeAt;
    const delay = Math.max(0, Math.min(this.debounceMs, this.maxDelayMs - waited));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.recompute();
    }, delay);
  }

  private recompute(): void {
    try {
      this.push();
    } catch (err) {
      // The translations are guarded: this is a bug in the model's bookkeeping or the cache. The
      // last pushed state stays in force, and the same view is tried again shortly, so a quiet
      // cluster does not keep a failed update unpushed.
      this.log.error({ err: errorMessage(err) }, 'push failed; keeping the last pushed state and retrying with a full rebuild');
      // The model may have stopped half way through its bookkeeping: start it afresh (the cache's
      // content hashes keep the pushes to what really changed).
      this.model = new IncrementalModel(this.opts.model);
      this.fresh = true;
      if (!this.stopped && !this.timer) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.recompute();
        }, RETRY_MS);
      }
    }
  }

  private push(): void {
    const view = this.latest;
    if (!view || this.stopped) return;
    const changes = this.model.update(view);
    const snapshot = this.model.snapshot();
    const cache = this.opts.xds.cache;
    const network = this.opts.model.network;

    const addressUpdates: ResourceUpdate[] = [];
    const addressRemovals: string[] = [];
    for (const uid of changes.workloads) {
      const w = snapshot.workloads.get(uid);
      if (w) addressUpdates.push(workloadUpdate(w, network));
      else addressRemovals.push(uid);
    }
    for (const name of changes.services) {
      const s = snapshot.services.get(name);
      if (s) addressUpdates.push(serviceUpdate(name, s, network));
      else addressRemovals.push(name);
    }
    const authorizationUpdates: ResourceUpdate[] = [];
    const authorizationRemovals: string[] = [];
    for (const name of changes.authorizations) {
      const a = snapshot.authorizations.get(name);
      if (a) authorizationUpdates.push({ name, aliases: [], message: Authorization.encode(a).finish() });
      else authorizationRemovals.push(name);
    }
    const waypointUpdates: ResourceUpdate[] = [];
    const waypointRemovals: string[] = [];
    for (const name of changes.waypoints) {
      const w = snapshot.waypoints.get(name);
      if (w) waypointUpdates.push({ name, aliases: [], message: Waypoint.encode(w).finish() });
      else waypointRemovals.push(name);
    }
    if (this.fresh) {
      // Everything the cache holds that the new model does not produce is gone.
      for (const entry of cache.all(ADDRESS_TYPE)) if (!snapshot.workloads.has(entry.name) && !snapshot.services.has(entry.name)) addressRemovals.push(entry.name);
      for (const entry of cache.all(AUTHORIZATION_TYPE)) if (!snapshot.authorizations.has(entry.name)) authorizationRemovals.push(entry.name);
      for (const entry of cache.all(WAYPOINT_TYPE)) if (!snapshot.waypoints.has(entry.name)) waypointRemovals.push(entry.name);
      this.fresh = false;
    }
    const published: [string, ReturnType<typeof cache.apply>][] = [
      [ADDRESS_TYPE, cache.apply(ADDRESS_TYPE, addressUpdates, addressRemovals)],
      [AUTHORIZATION_TYPE, cache.apply(AUTHORIZATION_TYPE, authorizationUpdates, authorizationRemovals)],
      [WAYPOINT_TYPE, cache.apply(WAYPOINT_TYPE, waypointUpdates, waypointRemovals)],
    ];
    for (const [typeUrl, change] of published) this.opts.xds.publish(typeUrl, change);

    if (changes.workloads.size + changes.services.size + changes.authorizations.size + changes.waypoints.size + changes.policyStatus.size > 0 || changes.problems) this.revisionCounter++;
    const elapsed = performance.now() - this.firstChangeAt;
    const changedResources = published.reduce((n, [, c]) => n + c.names.size, 0);
    this.stats = {
      pushes: this.stats.pushes + (changedResources > 0 ? 1 : 0),
      lastPushAt: new Date().toISOString(),
      lastPushMs: Math.round(elapsed * 10) / 10,
      lastTranslated: changes.translated,
      resources: { addresses: cache.size(ADDRESS_TYPE), authorizations: cache.size(AUTHORIZATION_TYPE), waypoints: cache.size(WAYPOINT_TYPE) },
    };
    if (changedResources > 0) {
      this.log.debug({ changed: changedResources, translated: changes.translated, ms: this.stats.lastPushMs, generation: cache.generation }, 'pushed');
    }
    for (const key of changes.policyStatus) {
      const status = snapshot.policyStatus.get(key);
      if (!status) continue;
      this.log.info({ policy: key, enforcedBy: status.enforcedBy, dropped: status.dropped.length ? status.dropped : undefined }, status.summary);
      void this.opts.source.recordStatus({ kind: 'AuthorizationPolicy', namespace: status.namespace, name: status.name }, status.conditions);
    }
    if (changes.problems) this.reportProblems(snapshot.problems);
    for (const listener of this.pushListeners) {
      try {
        listener(changes);
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, 'a push listener failed');
      }
    }
  }

  private reportProblems(problems: readonly Problem[]): void {
    const current = new Map(problems.map((p) => [problemKey(p), p]));
    for (const [key, p] of current) {
      if (this.known.has(key)) continue;
      const fields = { object: `${p.object.kind} ${p.object.namespace ? `${p.object.namespace}/` : ''}${p.object.name}` };
      if (p.severity === 'error') this.log.error(fields, p.message);
      else this.log.warn(fields, p.message);
    }
    for (const [key, p] of this.known) {
      if (!current.has(key)) this.log.info({ object: `${p.object.kind} ${p.object.namespace ? `${p.object.namespace}/` : ''}${p.object.name}` }, `resolved: ${p.message}`);
    }
    this.known.clear();
    for (const [key, p] of current) this.known.set(key, p);
  }
}

function addressAliases(addresses: readonly Uint8Array[], network: string): string[] {
  return addresses.map((a) => `${network}/${ipText(a)}`);
}

export function workloadUpdate(w: Workload, network: string): ResourceUpdate {
  return { name: w.uid, aliases: addressAliases(w.addresses, network), message: Address.encode({ workload: w, service: undefined }).finish() };
}

export function serviceUpdate(name: string, s: WorkloadService, network: string): ResourceUpdate {
  return {
    name,
    aliases: addressAliases(s.addresses.map((a) => a.address), network),
    message: Address.encode({ workload: undefined, service: s }).finish(),
  };
}
