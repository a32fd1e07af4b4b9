// The node agent's view of a real cluster: every namespace (enrollment can come from a namespace
// label) and the pods the scheduler put on this node (or, given no node, every pod of the cluster:
// the control plane's view), kept current by list+watch informers, and the
// place where the agent publishes each pod's capture state (the `ambient.istio.io/redirection`
// annotation istiod reads to decide whether a workload speaks HBONE).
//
// @kubernetes/client-node's ListWatch does the list/watch/relist-on-410 protocol but gives up on
// any other error, can leak a watch that was still being opened when it was stopped, and rethrows
// auth-plugin failures as unhandled rejections. This module keeps it running: it restarts failed
// informers with backoff and fences off every watch it ever opened, so close() really closes.

import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiException,
  CoreV1Api,
  ListWatch,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type V1Namespace,
  type V1Pod,
} from '@kubernetes/client-node';
import type { ConfigSource, NodeView, RedirectionState } from '../config-source.js';
import { AmbitError, errorMessage } from '../../mesh/errors.js';
import { REDIRECTION_ANNOTATION, podKey, type ContainerPort, type Namespace, type Pod } from '../../mesh/k8s/types.js';
import type { Logger } from '../../mesh/log.js';
import { SourceListeners } from './listeners.js';
import { KubernetesApiError } from '../../mesh/k8s/errors.js';

export { KubernetesApiError };
import { backoffDelay, type BackoffOptions } from '../../mesh/backoff.js';

export type { BackoffOptions };


export interface KubernetesSourceOptions {
  kubeConfig: KubeConfig;
  /**
   * The node whose pods make up the view (spec.nodeName). Without it the view holds every pod of
   * the cluster, scheduled or not: the control plane's cluster-wide view.
   */
  node?: string;
  log: Logger;
  /** Informer restarts and annotation retries. Default 500 ms doubling to 30 s. */
  backoff?: BackoffOptions;
}

/** A request to the Kubernetes API failed; `status` is the HTTP status when there was one. */
/** The API server is retried from 500 ms, doubling, up to 30 s, as client-go's informers roughly do. */
export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000 };


// Bursts (a relist fires one callback per object; a rollout sends many events) become one change.
const CHANGE_DEBOUNCE_MS = 10;
// A watch the server ends this soon with nothing delivered counts as a failure, so a proxy that
// closes every watch at once cannot turn the informer into a busy loop.
const QUICK_END_MS = 1000;

function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  if (typeof err === 'object' && err !== null && 'statusCode' in err && typeof err.statusCode === 'number') return err.statusCode;
  return undefined;
}

/**
 * The client's Watch plus three guarantees ListWatch needs: bookmarks and a server-side timeout on
 * every watch (as client-go does: a silently dead connection is replaced within minutes), a delay
 * before re-watching after watches that end at once, and close() aborting every watch, including
 * one whose request was still in flight when the informer stopped.
 */
class FencedWatch extends Watch {
  private readonly open = new Set<AbortController>();
  private readonly closing = new AbortController();
  private quickEnds = 0;

  constructor(
    config: KubeConfig,
    private readonly backoff: BackoffOptions,
    private readonly onActivity: () => void,
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.quickEnds > 0) {
      await sleep(backoffDelay(this.quickEnds, this.backoff), undefined, { signal: this.closing.signal }).catch(() => undefined);
    }
    if (this.closing.signal.aborted) return abortedController();
    const started = Date.now();
    let delivered = false;
    let controller: AbortController | undefined;
    const params = { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: 300 + Math.floor(Math.random() * 300) };
    try {
      controller = await super.watch(
        path,
        params,
        (phase: string, obj: unknown, raw?: unknown) => {
          delivered = true;
          this.quickEnds = 0;
          this.onActivity();
          callback(phase, obj, raw);
        },
        (err: unknown) => {
          if (controller) this.open.delete(controller);
          if (err === null && !delivered && Date.now() - started < QUICK_END_MS) this.quickEnds++;
          done(err);
        },
      );
    } catch (err) {
      // Credentials plugins fail here, outside the client's own error handling; turned into a done
      // callback, the failure goes through the informer's error path instead of an unhandled rejection.
      done(err);
      return abortedController();
    }
    if (this.closing.signal.aborted) controller.abort();
    else if (!controller.signal.aborted) this.open.add(controller);
    return controller;
  }

  close(): void {
    this.closing.abort();
    for (const controller of this.open) controller.abort();
    this.open.clear();
  }
}

function abortedController(): AbortController {
  const controller = new AbortController();
  controller.abort();
  return controller;
}

type ObjectEvent = 'add' | 'update' | 'delete';

interface InformerOptions<T extends KubernetesObject> {
  resource: string;
  kubeConfig: KubeConfig;
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  fieldSelector?: string;
  backoff: BackoffOptions;
  log: Logger;
  onObject: (event: ObjectEvent, obj: T) => void;
  onError: (err: KubernetesApiError) => void;
}

/** One ListWatch that never stays down: every failure is reported, then retried with backoff. */
class RestartingInformer<T extends KubernetesObject> {
  readonly synced: Promise<void>;
  private markSynced: () => void = () => undefined;
  private readonly watch: FencedWatch;
  private readonly informer: ListWatch<T>;
  private attempt = 0;
  private listedOnce = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: InformerOptions<T>) {
    this.synced = new Promise((resolve) => {
      this.markSynced = resolve;
    });
    this.watch = new FencedWatch(opts.kubeConfig, opts.backoff, () => {
      this.attempt = 0;
    });
    const list = async (): Promise<KubernetesListObject<T>> => {
      const result = await opts.list();
      this.attempt = 0;
      this.listedOnce = true;
      return result;
    };
    this.informer = new ListWatch<T>(opts.path, this.watch, list, false, undefined, opts.fieldSelector);
    for (const event of ['add', 'update', 'delete'] as const) {
      this.informer.on(event, (obj: T) => {
        if (!this.stopped) opts.onObject(event, obj);
      });
    }
    this.informer.on('error', (err: unknown) => this.failed(err));
  }

  start(): void {
    void this.run();
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    try {
      // Resolves once the list is applied and the watch is open, or after the error callback ran.
      await this.informer.start();
    } catch (err) {
      this.failed(err);
    }
    if (this.listedOnce) this.markSynced();
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    const status = statusOf(err);
    const error = new KubernetesApiError(`${this.opts.resource} informer: ${errorMessage(err)}`, status, { cause: err });
    this.opts.onError(error);
    if (this.restartTimer) return;
    const delay = backoffDelay(++this.attempt, this.opts.backoff);
    this.opts.log.warn({ resource: this.opts.resource, err: error.message, status, retryInMs: delay }, 'informer failed; keeping the last view and restarting');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.run();
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.watch.close();
    await this.informer.stop();
  }
}

/** The pending annotation write of one pod: the latest wanted state wins. */
interface AnnotationWrite {
  namespace: string;
  name: string;
  desired: RedirectionState;
  running: boolean;
  attempt: number;
  retryTimer: NodeJS.Timeout | undefined;
  waiters: (() => void)[];
}

export class KubernetesSource implements ConfigSource {
  private readonly node: string | undefined;
  private readonly log: Logger;
  private readonly backoff: BackoffOptions;
  private readonly api: CoreV1Api;
  private readonly namespaceInformer: RestartingInformer<V1Namespace>;
  private readonly podInformer: RestartingInformer<V1Pod>;
  private readonly namespaces = new Map<string, Namespace>();
  private readonly pods = new Map<string, Pod>();
  private readonly writes = new Map<string, AnnotationWrite>();
  private readonly listeners: SourceListeners;
  private view: NodeView = { namespaces: new Map(), pods: [] };
  private synced = false;
  private closed = false;
  private changeTimer: NodeJS.Timeout | undefined;
  private readonly closing = new AbortController();

  constructor(opts: KubernetesSourceOptions) {
    this.node = opts.node;
    this.log = opts.log.child({ source: 'kubernetes' });
    this.listeners = new SourceListeners(this.log);
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.api = opts.kubeConfig.makeApiClient(CoreV1Api);
    const fieldSelector = opts.node === undefined ? undefined : `spec.nodeName=${opts.node}`;
    const onError = (err: KubernetesApiError): void => this.reportError(err);
    this.namespaceInformer = new RestartingInformer<V1Namespace>({
      resource: 'namespaces',
      kubeConfig: opts.kubeConfig,
      path: '/api/v1/namespaces',
      list: () => this.api.listNamespace(),
      backoff: this.backoff,
      log: this.log,
      onObject: (event, obj) => this.namespaceEvent(event, obj),
      onError,
    });
    this.podInformer = new RestartingInformer<V1Pod>({
      resource: 'pods',
      kubeConfig: opts.kubeConfig,
      path: '/api/v1/pods',
      list: () => this.api.listPodForAllNamespaces({ fieldSelector }),
      fieldSelector,
      backoff: this.backoff,
      log: this.log,
      onObject: (event, obj) => this.podEvent(event, obj),
      onError,
    });
  }

  /**
   * Resolves once both informers have listed. While the API server is unreachable it keeps trying
   * (each failure goes to onError) and does not resolve; it rejects only if close() comes first.
   */
  async start(): Promise<void> {
    this.namespaceInformer.start();
    this.podInformer.start();
    const closed = new Promise<never>((_, reject) => {
      this.closing.signal.addEventListener('abort', () => reject(new AmbitError('AMBIT_CLOSED', 'Kubernetes source closed before its first view')), { once: true });
    });
    await Promise.race([Promise.all([this.namespaceInformer.synced, this.podInformer.synced]), closed]);
    this.synced = true;
    this.view = this.buildView();
    this.log.info({ namespaces: this.view.namespaces.size, pods: this.view.pods.length }, 'initial view listed');
  }

  current(): NodeView {
    return this.view;
  }

  onChange(listener: (view: NodeView) => void): void {
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
    const key = podKey(pod);
    const pending = this.writes.get(key);
    if (pending) {
      pending.desired = state;
      // While a write is in flight the caller waits for it; during a retry backoff it does not.
      return pending.running ? new Promise((resolve) => pending.waiters.push(resolve)) : Promise.resolve();
    }
    const known = this.pods.get(key) ?? pod;
    if ((known.metadata.annotations?.[REDIRECTION_ANNOTATION] ?? null) === state) return Promise.resolve();
    const write: AnnotationWrite = {
      namespace: pod.metadata.namespace ?? 'default',
      name: pod.metadata.name,
      desired: state,
      running: false,
      attempt: 0,
      retryTimer: undefined,
      waiters: [],
    };
    this.writes.set(key, write);
    const settled = new Promise<void>((resolve) => write.waiters.push(resolve));
    void this.drainWrite(key, write);
    return settled;
  }

  private async drainWrite(key: string, write: AnnotationWrite): Promise<void> {
    write.running = true;
    while (!this.closed) {
      const state = write.desired;
      try {
        await this.api.patchNamespacedPod(
          { name: write.name, namespace: write.namespace, body: { metadata: { annotations: { [REDIRECTION_ANNOTATION]: state } } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
        this.log.debug({ pod: key, state }, 'recorded redirection');
        write.attempt = 0;
        if (write.desired !== state) continue;
        this.finishWrite(key, write);
        return;
      } catch (err) {
        const status = statusOf(err);
        if (status === 404) {
          this.log.debug({ pod: key, state }, 'pod is gone; nothing to record');
          this.finishWrite(key, write);
          return;
        }
        if (status === 400 || status === 415 || status === 422) {
          // The server refuses this request as such: repeating it cannot succeed.
          this.log.error({ pod: key, state, status, err: errorMessage(err) }, 'redirection annotation rejected');
          this.finishWrite(key, write);
          return;
        }
        const delay = backoffDelay(++write.attempt, this.backoff);
        this.log.warn({ pod: key, state, status, err: errorMessage(err), retryInMs: delay }, 'recording redirection failed; will retry');
        write.running = false;
        this.release(write);
        write.retryTimer = setTimeout(() => {
          write.retryTimer = undefined;
          void this.drainWrite(key, write);
        }, delay);
        return;
      }
    }
    this.release(write);
  }

  private finishWrite(key: string, write: AnnotationWrite): void {
    write.running = false;
    this.writes.delete(key);
    this.release(write);
  }

  private release(write: AnnotationWrite): void {
    const waiters = write.waiters.splice(0);
    for (const resolve of waiters) resolve();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closing.abort();
    clearTimeout(this.changeTimer);
    for (const write of this.writes.values()) {
      clearTimeout(write.retryTimer);
      this.release(write);
    }
    this.writes.clear();
    await Promise.all([this.namespaceInformer.stop(), this.podInformer.stop()]);
  }

  private namespaceEvent(event: ObjectEvent, obj: V1Namespace): void {
    const name = obj.metadata?.name;
    if (!name) {
      this.reportError(new KubernetesApiError('namespace without metadata.name ignored', undefined));
      return;
    }
    if (event === 'delete') this.namespaces.delete(name);
    else this.namespaces.set(name, { ...obj, apiVersion: 'v1', kind: 'Namespace', metadata: { ...obj.metadata, name } });
    this.changed();
  }

  private podEvent(event: ObjectEvent, obj: V1Pod): void {
    const pod = toPod(obj);
    if (typeof pod === 'string') {
      this.reportError(new KubernetesApiError(`pod ${obj.metadata?.namespace ?? '?'}/${obj.metadata?.name ?? '?'} ignored: ${pod}`, undefined));
      return;
    }
    const key = podKey(pod);
    // The field selector already filters by node; checking again keeps the view right even when
    // a proxy or an old server drops the selector.
    if (event === 'delete' || (this.node !== undefined && pod.spec.nodeName !== this.node)) this.pods.delete(key);
    else this.pods.set(key, pod);
    this.changed();
  }

  private changed(): void {
    if (!this.synced || this.closed || this.changeTimer) return;
    this.changeTimer = setTimeout(() => {
      this.changeTimer = undefined;
      if (this.closed) return;
      this.view = this.buildView();
      this.listeners.changed(this.view);
    }, CHANGE_DEBOUNCE_MS);
  }

  private buildView(): NodeView {
    // Fresh containers each time: a view handed out earlier never changes under its holder.
    const pods = [...this.pods.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, pod]) => pod);
    return { namespaces: new Map(this.namespaces), pods };
  }

  private reportError(err: Error): void {
    this.listeners.failed(err);
  }
}

const PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP']);

function toProtocol(protocol: string | undefined): ContainerPort['protocol'] {
  return protocol !== undefined && PROTOCOLS.has(protocol) ? (protocol as ContainerPort['protocol']) : undefined;
}

/**
 * The API's pod as Ambit's Pod: the same object (list items lack apiVersion/kind, which are added),
 * with the one loosely typed field Ambit reads narrowed. Returns why when the object is unusable.
 */
function toPod(obj: V1Pod): Pod | string {
  const name = obj.metadata?.name;
  if (!name) return 'no metadata.name';
  if (!obj.spec || !Array.isArray(obj.spec.containers)) return 'no spec.containers';
  const containers = obj.spec.containers.map((c) => ({
    ...c,
    ports: c.ports?.map((p) => ({ ...p, protocol: toProtocol(p.protocol) })),
  }));
  return { ...obj, apiVersion: 'v1', kind: 'Pod', metadata: { ...obj.metadata, name }, spec: { ...obj.spec, containers } };
}
