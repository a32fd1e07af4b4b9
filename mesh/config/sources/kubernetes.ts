// The cluster as the Kubernetes API shows it: one restarting list+watch informer per kind read
// (the node agent: namespaces, which enroll pods, and the pods of its node; the control plane:
// every kind of KINDS), kept in one view, plus the two things Ambit writes back: a pod's
// `ambient.istio.io/redirection` annotation (what istiod reads to decide whether a workload speaks
// HBONE) and an AuthorizationPolicy's status conditions.
//
// Istio's and the Gateway API's kinds are CRDs that may be missing, or served at an older version
// only: each kind's versions are tried in preference order, and a kind no version of which is
// served is empty (and looked for again now and then) rather than a reason not to start.

import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { backoffDelay, type BackoffOptions } from '../../backoff.js';
import { AmbitError, ConfigError, errorMessage } from '../../errors.js';
import { KubernetesApiError } from '../../k8s/errors.js';
import { REDIRECTION_ANNOTATION, type Pod, type StatusCondition } from '../../k8s/types.js';
import type { Logger } from '../../log.js';
import { NODE_KINDS, apiVersionOf, type KindInfo } from '../kinds.js';
import type { ConfigSource, RedirectionState, StatusTarget } from '../source.js';
import { emptyView, keyOf, type ClusterView, type ViewList } from '../view.js';
import { conditionsOf, sameConditions, withTransitionTimes } from './conditions.js';
import { RestartingInformer, type ObjectEvent } from './informer.js';
import { SourceListeners } from './listeners.js';
import { describeRaw, fingerprint, rawKey, toViewObject, type ViewObject } from './objects.js';
import { WriteQueue, statusOf } from './write-queue.js';

export { KubernetesApiError };
export type { BackoffOptions };

export interface KubernetesSourceOptions {
  kubeConfig: KubeConfig;
  /**
   * The node whose pods make up the view (spec.nodeName). Without it the view holds every pod of
   * the cluster, scheduled or not: the control plane's cluster-wide view.
   */
  node?: string;
  /** The kinds to read. Default: namespaces and pods, what the node agent needs; the control plane passes KINDS. */
  kinds?: readonly KindInfo[];
  log: Logger;
  /** Informer restarts and write retries. Default 500 ms doubling to 30 s. */
  backoff?: BackoffOptions;
  /** How often a kind that no version of is served is looked for again (a CRD installed later). Default 60 s. */
  reprobeIntervalMs?: number;
}

/** The API server is retried from 500 ms, doubling, up to 30 s, as client-go's informers roughly do. */
export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000 };
export const DEFAULT_REPROBE_INTERVAL_MS = 60_000;

// Bursts (a relist fires one callback per object; a rollout sends many events) become one change.
const CHANGE_DEBOUNCE_MS = 10;

type AnyList = KubernetesListObject<KubernetesObject>;

interface StoredObject {
  object: ViewObject;
  fingerprint: string;
  /** An AuthorizationPolicy's status conditions as the server last showed them (the view's object may be older). */
  conditions: StatusCondition[] | undefined;
}

/** The objects of one kind, and the sorted list the last view was built from (undefined once stale). */
interface KindStore {
  readonly info: KindInfo;
  readonly objects: Map<string, StoredObject>;
  sorted: readonly ViewObject[] | undefined;
}

/** What a KindWatcher needs of its source. */
interface WatcherContext {
  kubeConfig: KubeConfig;
  log: Logger;
  backoff: BackoffOptions;
  reprobeIntervalMs: number;
  fieldSelector(info: KindInfo): string | undefined;
  list(info: KindInfo, version: string): Promise<AnyList>;
  onObject(info: KindInfo, version: string, event: ObjectEvent, obj: unknown): void;
  /** Every object of the kind is gone (the kind is no longer served). */
  clear(info: KindInfo): void;
  onError(err: Error): void;
}

/**
 * One kind: finds the version the server serves, then keeps an informer on it. A kind not served
 * at all counts as listed (empty) and is looked for again every reprobeIntervalMs; a served kind
 * that disappears (404) is emptied and looked for again at once.
 */
class KindWatcher {
  readonly synced: Promise<void>;
  /** The version being watched; undefined while none is served (or not yet found). */
  version: string | undefined;
  private markSynced: () => void = () => undefined;
  private informer: RestartingInformer<KubernetesObject> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private announcedUnserved = false;
  private stopped = false;

  constructor(
    private readonly info: KindInfo,
    private readonly ctx: WatcherContext,
  ) {
    this.synced = new Promise((resolve) => {
      this.markSynced = resolve;
    });
  }

  start(): void {
    void this.probe();
  }

  private async probe(): Promise<void> {
    for (const version of this.info.versions) {
      if (this.stopped) return;
      let first: AnyList;
      try {
        first = await this.ctx.list(this.info, version);
      } catch (err) {
        if (this.stopped) return;
        // 404: this version (or the whole CRD) is not served; the next one may be.
        if (statusOf(err) === 404) continue;
        this.ctx.onError(new KubernetesApiError(`${this.info.plural} informer: ${errorMessage(err)}`, statusOf(err), { cause: err }));
        const delay = backoffDelay(++this.attempt, this.ctx.backoff);
        this.ctx.log.warn({ resource: this.info.plural, err: errorMessage(err), retryInMs: delay }, 'listing failed; retrying');
        this.schedule(delay);
        return;
      }
      if (this.stopped) return;
      this.attempt = 0;
      this.watch(version, first);
      return;
    }
    if (this.stopped) return;
    this.version = undefined;
    const apiVersions = this.info.versions.map((v) => apiVersionOf(this.info, v));
    if (!this.announcedUnserved) {
      this.ctx.log.info({ kind: this.info.kind, apiVersions, recheckInMs: this.ctx.reprobeIntervalMs }, 'kind not served by the API server (CRD not installed?); reading it as empty');
      this.announcedUnserved = true;
    }
    this.markSynced();
    this.schedule(this.ctx.reprobeIntervalMs);
  }

  private schedule(delay: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.probe();
    }, delay);
  }

  private watch(version: string, first: AnyList): void {
    const info = this.info;
    if (this.announcedUnserved) this.ctx.log.info({ kind: info.kind, apiVersion: apiVersionOf(info, version) }, 'kind now served; watching it');
    this.announcedUnserved = false;
    this.version = version;
    // The probe's list is the informer's first: listing twice would only cost.
    let pending: AnyList | undefined = first;
    const fieldSelector = this.ctx.fieldSelector(info);
    const informer = new RestartingInformer<KubernetesObject>({
      resource: info.plural,
      kubeConfig: this.ctx.kubeConfig,
      path: info.group === '' ? `/api/${version}/${info.plural}` : `/apis/${info.group}/${version}/${info.plural}`,
      list: () => {
        const result = pending;
        pending = undefined;
        return result ? Promise.resolve(result) : this.ctx.list(info, version);
      },
      ...(fieldSelector !== undefined && { fieldSelector }),
      backoff: this.ctx.backoff,
      log: this.ctx.log,
      onObject: (event, obj) => this.ctx.onObject(info, version, event, obj),
      onError: (err) => this.ctx.onError(err),
      onNotServed: () => this.lost(informer, version),
    });
    this.informer = informer;
    informer.start();
    void informer.synced.then(() => this.markSynced());
  }

  /** The served version went away (its CRD was deleted or changed): empty the kind and look again. */
  private lost(informer: RestartingInformer<KubernetesObject>, version: string): void {
    if (this.stopped || this.informer !== informer) return;
    this.ctx.log.info({ kind: this.info.kind, apiVersion: apiVersionOf(this.info, version) }, 'kind no longer served; its objects are gone');
    this.informer = undefined;
    this.version = undefined;
    void informer.stop();
    this.ctx.clear(this.info);
    void this.probe();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.informer?.stop();
  }
}

export class KubernetesSource implements ConfigSource {
  private readonly node: string | undefined;
  private readonly log: Logger;
  private readonly core: CoreV1Api;
  private readonly discovery: DiscoveryV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly stores = new Map<string, KindStore>();
  private readonly watchers = new Map<string, KindWatcher>();
  private readonly redirections: WriteQueue<RedirectionState>;
  private readonly statuses: WriteQueue<StatusCondition[]>;
  private readonly listeners: SourceListeners;
  private view: ClusterView = emptyView();
  private synced = false;
  private closed = false;
  private changeTimer: NodeJS.Timeout | undefined;
  private readonly closing = new AbortController();

  constructor(opts: KubernetesSourceOptions) {
    this.node = opts.node;
    this.log = opts.log.child({ source: 'kubernetes' });
    this.listeners = new SourceListeners(this.log);
    const backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.discovery = opts.kubeConfig.makeApiClient(DiscoveryV1Api);
    this.custom = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    const ctx: WatcherContext = {
      kubeConfig: opts.kubeConfig,
      log: this.log,
      backoff,
      reprobeIntervalMs: opts.reprobeIntervalMs ?? DEFAULT_REPROBE_INTERVAL_MS,
      fieldSelector: (info) => this.fieldSelector(info),
      list: (info, version) => this.list(info, version),
      onObject: (info, version, event, obj) => this.objectEvent(info, version, event, obj),
      clear: (info) => this.clear(info),
      onError: (err) => this.listeners.failed(err),
    };
    for (const info of opts.kinds ?? NODE_KINDS) {
      if (this.stores.has(info.kind)) continue;
      this.stores.set(info.kind, { info, objects: new Map(), sorted: undefined });
      this.watchers.set(info.kind, new KindWatcher(info, ctx));
    }
    this.redirections = new WriteQueue<RedirectionState>({
      what: 'redirection',
      log: this.log,
      backoff,
      write: (key, state) => this.writeRedirection(key, state),
    });
    this.statuses = new WriteQueue<StatusCondition[]>({
      what: 'policy status',
      log: this.log,
      backoff,
      write: (key, conditions) => this.writeStatus(key, conditions),
    });
  }

  /**
   * Resolves once every kind has listed (or was found not served). While the API server is
   * unreachable it keeps trying (each failure goes to onError) and does not resolve; it rejects
   * only if close() comes first.
   */
  async start(): Promise<void> {
    for (const watcher of this.watchers.values()) watcher.start();
    const closed = new Promise<never>((_, reject) => {
      this.closing.signal.addEventListener('abort', () => reject(new AmbitError('AMBIT_CLOSED', 'Kubernetes source closed before its first view')), { once: true });
    });
    await Promise.race([Promise.all([...this.watchers.values()].map((w) => w.synced)), closed]);
    this.synced = true;
    this.view = this.buildView();
    const counts: Record<string, number> = { namespaces: this.view.namespaces.size };
    for (const store of this.stores.values()) if (store.info.list !== undefined) counts[store.info.list] = store.objects.size;
    this.log.info(counts, 'initial view listed');
  }

  current(): ClusterView {
    return this.view;
  }

  onChange(listener: (view: ClusterView) => void): void {
    this.listeners.onChange(listener);
  }

  onError(listener: (err: Error) => void): void {
    this.listeners.onError(listener);
  }

  /**
   * Merge-patches the pod's redirection annotation (null removes it); a no-op when the pod already
   * carries that value. Never rejects: it resolves after the first attempt, and a failed write is
   * logged and retried in the background with backoff, the latest state asked for a pod winning.
   */
  recordRedirection(pod: Pod, state: RedirectionState): Promise<void> {
    if (this.closed) return Promise.resolve();
    const key = keyOf(pod);
    if (this.redirections.pending(key) === undefined) {
      const known = (this.stores.get('Pod')?.objects.get(key)?.object as Pod | undefined) ?? pod;
      if ((known.metadata.annotations?.[REDIRECTION_ANNOTATION] ?? null) === state) return Promise.resolve();
    }
    return this.redirections.submit(key, state);
  }

  /**
   * Merge-patches the policy's status subresource with these conditions; a no-op when the policy
   * already has them. Like recordRedirection it never rejects, retries in the background and lets
   * the latest conditions win; a policy that is gone (404) or a refused write (400, 422) ends it.
   */
  recordStatus(target: StatusTarget, conditions: StatusCondition[]): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.watchers.get(target.kind) === undefined) {
      this.log.debug({ kind: target.kind }, 'status of a kind this source does not read; not recorded');
      return Promise.resolve();
    }
    const key = `${target.namespace}/${target.name}`;
    const pending = this.statuses.pending(key);
    const known = this.stores.get(target.kind)?.objects.get(key)?.conditions;
    const desired = withTransitionTimes(pending ?? known, conditions, new Date());
    if (pending === undefined && sameConditions(known, desired)) return Promise.resolve();
    return this.statuses.submit(key, desired);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closing.abort();
    clearTimeout(this.changeTimer);
    this.redirections.close();
    this.statuses.close();
    await Promise.all([...this.watchers.values()].map((w) => w.stop()));
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  private fieldSelector(info: KindInfo): string | undefined {
    return info.kind === 'Pod' && this.node !== undefined ? `spec.nodeName=${this.node}` : undefined;
  }

  private list(info: KindInfo, version: string): Promise<AnyList> {
    const fieldSelector = this.fieldSelector(info);
    switch (info.kind) {
      case 'Namespace':
        return this.core.listNamespace() as Promise<AnyList>;
      case 'Pod':
        return this.core.listPodForAllNamespaces({ fieldSelector }) as Promise<AnyList>;
      case 'Service':
        return this.core.listServiceForAllNamespaces() as Promise<AnyList>;
      case 'EndpointSlice':
        return this.discovery.listEndpointSliceForAllNamespaces() as Promise<AnyList>;
      default:
        if (info.group === '') {
          // A core kind needs its typed client: the custom-objects path would be wrong for it.
          return Promise.reject(new Error(`no client for ${info.kind} (${apiVersionOf(info, version)})`));
        }
        return this.custom.listClusterCustomObject({ group: info.group, version, plural: info.plural }) as Promise<AnyList>;
    }
  }

  private objectEvent(info: KindInfo, version: string, event: ObjectEvent, raw: unknown): void {
    const store = this.stores.get(info.kind)!;
    const key = rawKey(info, raw);
    if (key === undefined) {
      this.listeners.failed(new ConfigError(`${describeRaw(info, raw)}: metadata.name: is required; left out of the view`));
      return;
    }
    if (event === 'delete') {
      if (store.objects.delete(key)) this.changed(store);
      return;
    }
    const object = toViewObject(info, apiVersionOf(info, version), raw);
    if (typeof object === 'string') {
      // The last good version of the object, if any, stays: as an API server refusing the update would.
      this.listeners.failed(new ConfigError(`${describeRaw(info, raw)}: ${object}; left out of the view`));
      return;
    }
    // The field selector already filters by node; checking again keeps the view right even when
    // a proxy or an old server drops the selector.
    if (info.kind === 'Pod' && this.node !== undefined && (object.spec as Pod['spec']).nodeName !== this.node) {
      if (store.objects.delete(key)) this.changed(store);
      return;
    }
    const conditions = info.kind === 'AuthorizationPolicy' ? conditionsOf(raw) : undefined;
    const print = fingerprint(info, object);
    const stored = store.objects.get(key);
    if (stored && stored.fingerprint === print) {
      // Only resourceVersion (or an unread status: our own status write) changed: the view keeps
      // the object it has, so consumers comparing references see no change.
      stored.conditions = conditions;
      return;
    }
    store.objects.set(key, { object, fingerprint: print, conditions });
    this.changed(store);
  }

  private clear(info: KindInfo): void {
    const store = this.stores.get(info.kind)!;
    if (store.objects.size === 0) return;
    store.objects.clear();
    this.changed(store);
  }

  private changed(store: KindStore): void {
    store.sorted = undefined;
    if (!this.synced || this.closed || this.changeTimer) return;
    this.changeTimer = setTimeout(() => {
      this.changeTimer = undefined;
      if (this.closed) return;
      this.view = this.buildView();
      this.listeners.changed(this.view);
    }, CHANGE_DEBOUNCE_MS);
  }

  /** Fresh containers for the kinds that changed; the others are the previous view's (never mutated). */
  private buildView(): ClusterView {
    const lists: Partial<Record<ViewList, readonly ViewObject[]>> = {};
    let namespaces = this.view.namespaces as ReadonlyMap<string, unknown>;
    for (const store of this.stores.values()) {
      if (store.sorted === undefined) {
        const entries = [...store.objects.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        store.sorted = entries.map(([, s]) => s.object);
        if (store.info.list === undefined) namespaces = new Map(entries.map(([name, s]) => [name, s.object]));
      }
      if (store.info.list !== undefined) lists[store.info.list] = store.sorted;
    }
    return { ...emptyView(), ...lists, namespaces } as unknown as ClusterView;
  }

  // -------------------------------------------------------------------------------------------
  // Writing

  private async writeRedirection(key: string, state: RedirectionState): Promise<void> {
    const [namespace = 'default', name = ''] = key.split('/');
    await this.core.patchNamespacedPod(
      { name, namespace, body: { metadata: { annotations: { [REDIRECTION_ANNOTATION]: state } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  private async writeStatus(key: string, conditions: StatusCondition[]): Promise<void> {
    const watcher = this.watchers.get('AuthorizationPolicy');
    const info = this.stores.get('AuthorizationPolicy')!.info;
    const version = watcher?.version;
    if (version === undefined) {
      this.log.debug({ policy: key }, 'AuthorizationPolicy is not served; no status to record');
      return;
    }
    const [namespace = 'default', name = ''] = key.split('/');
    const updated: unknown = await this.custom.patchNamespacedCustomObjectStatus(
      { group: info.group, version, namespace, plural: info.plural, name, body: { status: { conditions } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    // The watch event of this write may come later: until then, this is what the server holds.
    const stored = this.stores.get('AuthorizationPolicy')!.objects.get(key);
    if (stored) stored.conditions = conditionsOf(updated);
  }
}
