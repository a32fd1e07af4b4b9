// The lab's config source: the cluster comes from the same YAML files the lab was built from, plus
// the lab's record of where it placed each pod, which address it gave it and which cluster IP each
// service got (the part a kubelet, the CNI and the API server would fill in on a real cluster), and,
// for the control plane, each node agent's record of its pods' capture (the redirection annotation
// an agent writes on a real cluster). Edits to any of them reach the consumer like API watch events
// do; a bad edit is reported and ignored, never fatal, as an API server would have refused it.

import { readdirSync, statSync, watch, type FSWatcher, type Stats } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ConfigError, errorMessage } from '../../errors.js';
import { loadManifests, objectKey, type Manifest } from '../../k8s/manifest.js';
import { REDIRECTION_ANNOTATION, podKey, type Namespace, type ObjectMeta, type Pod, type Service, type StatusCondition } from '../../k8s/types.js';
import type { Logger } from '../../log.js';
import { NODE_KINDS, apiVersionOf, isUnsupportedVersion, kindInfo, kindOf, type KindInfo } from '../kinds.js';
import type { ConfigSource, RedirectionState, StatusTarget } from '../source.js';
import { VIEW_LISTS, byKey, emptyView, keyOf, type ClusterView, type ViewList } from '../view.js';
import { canonicalJson } from './canonical.js';
import { rfc3339, sameConditions, withTransitionTimes } from './conditions.js';
import {
  CoalescedWriter,
  emptyPlacements,
  readPlacements,
  readRedirectionRecord,
  statusKey,
  type Placements,
  type RedirectionRecord,
  type StatusFile,
} from './file-inputs.js';
import { SourceListeners } from './listeners.js';
import { toViewObject, type ViewObject } from './objects.js';

export type { PlacementFile, PodPlacement, RedirectionRecord, ServicePlacement, StatusFile } from './file-inputs.js';

export interface FileSourceOptions {
  /** Files or directories of YAML (directories: their *.yaml / *.yml, not recursive). */
  paths: string[];
  /**
   * The node whose pods make up the view. Without it the view holds every pod the files declare,
   * placed or not: the control plane's cluster-wide view.
   */
  node?: string;
  /** The kinds to read. Default: namespaces and pods, what the node agent needs; the control plane passes KINDS. */
  kinds?: readonly KindInfo[];
  /**
   * Written by the lab: `{"pods": {"<ns>/<name>": {"nodeName", "podIP"}}, "services": {"<ns>/<name>":
   * {"clusterIP"}}}`. May not exist yet.
   */
  podStatusFile?: string;
  /** Where recordRedirection() keeps its record; without it the record is kept in memory only. */
  redirectionStatusFile?: string;
  /**
   * The node agents' redirection records (the lab's redirection-<node>.json): each pod whose
   * current IP a record names gets the `ambient.istio.io/redirection` annotation it gives.
   */
  redirectionFiles?: string[];
  /** Where recordStatus() keeps its record; without it the record is kept in memory only. */
  statusFile?: string;
  log?: Logger;
  /** Quiet time after a file event before re-reading (editors write in several steps). */
  debounceMs?: number;
  /** The mtime/size poll that backs fs.watch up (network filesystems, replaced directories). */
  pollIntervalMs?: number;
}

/** Where the control plane's file source records policy status, in its state directory. */
export const CONTROL_PLANE_STATUS_FILE = 'status.json';

/**
 * Objects read from files get creation times in file order from this instant, one second apart, so
 * that "the oldest wins" rules give the same answer on every run (and the first document wins).
 */
export const FILE_EPOCH = Date.UTC(2024, 0, 1);

/** The YAML files as read: the manifest, and the objects of the kinds beyond namespaces, pods and services. */
interface LoadedFiles {
  manifest: Manifest;
  others: Map<ViewList, ViewObject[]>;
  /** Creation times by objectKey(kind, namespace, name), from each object's document position. */
  created: Map<string, string>;
}

interface Interned {
  json: string;
  object: object;
}

export class FileSource implements ConfigSource {
  private readonly paths: string[];
  private readonly node: string | undefined;
  private readonly kinds: ReadonlySet<string>;
  private readonly podStatusFile: string | undefined;
  private readonly redirectionFiles: string[];
  private readonly log: Logger | undefined;
  private readonly debounceMs: number;
  private readonly pollIntervalMs: number;

  private readonly listeners: SourceListeners;
  private loaded: LoadedFiles | undefined;
  private placements: Placements = emptyPlacements();
  private readonly records = new Map<string, RedirectionRecord | undefined>();
  private view: ClusterView | undefined;
  /** Every object of the current view by `Kind ns/name`, with its content, to hand out again when unchanged. */
  private interned = new Map<string, Interned>();
  private signature = '';

  private readonly watchers: FSWatcher[] = [];
  private debounceTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private polling = false;
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;
  private closed = false;

  private readonly redirections = new Map<string, { state: 'enabled' | 'pending'; ip: string }>();
  private readonly redirectionWriter: CoalescedWriter;
  private readonly statuses = new Map<string, StatusCondition[]>();
  private readonly statusWriter: CoalescedWriter;

  constructor(opts: FileSourceOptions) {
    if (opts.paths.length === 0) throw new ConfigError('the file config source needs at least one file or directory');
    this.paths = [...opts.paths];
    this.node = opts.node;
    this.kinds = new Set((opts.kinds ?? NODE_KINDS).map((k) => k.kind));
    this.podStatusFile = opts.podStatusFile;
    this.redirectionFiles = [...(opts.redirectionFiles ?? [])];
    this.log = opts.log;
    this.listeners = new SourceListeners(opts.log);
    this.debounceMs = opts.debounceMs ?? 100;
    this.pollIntervalMs = opts.pollIntervalMs ?? 2000;
    this.redirectionWriter = new CoalescedWriter(opts.redirectionStatusFile, () => this.redirectionRecord(), 'redirection status file', opts.log);
    this.statusWriter = new CoalescedWriter(opts.statusFile, () => this.statusRecord(), 'status file', opts.log);
  }

  /** Rejects with the ConfigError when the files are invalid at start: there is no last good view yet. */
  async start(): Promise<void> {
    // Taken before reading, so an edit racing with the first read is seen by the poll.
    this.signature = await this.inputSignature();
    this.loaded = this.loadFiles();
    if (this.podStatusFile !== undefined) this.placements = await readPlacements(this.podStatusFile);
    await this.loadRecords();
    this.view = this.internView(this.buildView(this.loaded, this.placements));
    this.startWatching();
    this.pollTimer = setInterval(() => void this.poll(), this.pollIntervalMs);
    this.pollTimer.unref();
  }

  current(): ClusterView {
    if (!this.view) throw new Error('FileSource.current() called before start() resolved');
    return this.view;
  }

  onChange(listener: (view: ClusterView) => void): void {
    this.listeners.onChange(listener);
  }

  onError(listener: (err: Error) => void): void {
    this.listeners.onError(listener);
  }

  recordRedirection(pod: Pod, state: RedirectionState): Promise<void> {
    const key = podKey(pod);
    if (state === null) this.redirections.delete(key);
    else this.redirections.set(key, { state, ip: pod.status?.podIP ?? '' });
    return this.redirectionWriter.schedule();
  }

  /** The record as recordRedirection() left it (what the file holds once writes settle). */
  redirectionRecord(): RedirectionRecord {
    const pods: RedirectionRecord['pods'] = {};
    for (const key of [...this.redirections.keys()].sort()) pods[key] = { ...this.redirections.get(key)! };
    const record: RedirectionRecord = { updated: new Date().toISOString(), pods };
    if (this.node !== undefined) record.node = this.node;
    return record;
  }

  /**
   * Keeps the conditions of a policy of the current view and rewrites the status file (coalesced);
   * a no-op when they are the ones recorded. A policy not in the view is not recorded.
   */
  recordStatus(target: StatusTarget, conditions: StatusCondition[]): Promise<void> {
    const key = statusKey(target);
    const present = this.view?.authorizationPolicies.some((p) => p.metadata.name === target.name && (p.metadata.namespace ?? 'default') === target.namespace) ?? false;
    if (!present) {
      this.log?.debug({ object: key }, 'status of an object not in the view; not recorded');
      return this.statuses.delete(key) ? this.writeStatuses() : Promise.resolve();
    }
    const current = this.statuses.get(key);
    const desired = withTransitionTimes(current, conditions, new Date());
    if (current !== undefined && sameConditions(current, desired)) return Promise.resolve();
    this.statuses.set(key, desired);
    return this.writeStatuses();
  }

  /** The record as recordStatus() left it (what the status file holds once writes settle). */
  statusRecord(): StatusFile {
    const out: StatusFile = {};
    for (const key of [...this.statuses.keys()].sort()) out[key] = { conditions: this.statuses.get(key)!.map((c) => ({ ...c })) };
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.debounceTimer);
    clearInterval(this.pollTimer);
    for (const w of this.watchers.splice(0)) w.close();
    await this.refreshing;
    await this.redirectionWriter.settled();
    await this.statusWriter.settled();
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  private reads(kind: string): boolean {
    return this.kinds.has(kind);
  }

  private loadFiles(): LoadedFiles {
    const manifest = loadManifests(this.paths);
    // A lab file that does not list this node would silently give an empty view: say so instead.
    const node = this.node;
    if (node !== undefined && manifest.labs.length > 0 && !manifest.labs.some((lab) => lab.spec.nodes.some((n) => n.name === node))) {
      const names = manifest.labs.flatMap((lab) => lab.spec.nodes.map((n) => n.name));
      throw new ConfigError(`${this.paths.join(', ')}: node ${JSON.stringify(node)} is not a node of lab ${manifest.labs.map((l) => l.metadata.name).join(', ')} (nodes: ${names.join(', ')})`);
    }
    const created = creationTimes(manifest, inputFiles(this.paths));
    const others = new Map<ViewList, ViewObject[]>();
    for (const other of manifest.others) {
      const meta = (other.object.metadata ?? {}) as { name?: string; namespace?: string };
      const label = `${other.source}: document ${other.index} (${objectKey(other.kind, meta.namespace ?? 'default', meta.name ?? '?')})`;
      if (this.reads(other.kind) && isUnsupportedVersion(other.apiVersion, other.kind)) {
        const info = kindInfo(other.kind)!;
        throw new ConfigError(`${label}: apiVersion: ${other.apiVersion} is not a version of ${other.kind} Ambit reads (use ${info.versions.map((v) => apiVersionOf(info, v)).join(' or ')})`);
      }
      const info = kindOf(other.apiVersion, other.kind);
      if (!info?.list || !this.reads(info.kind)) continue;
      const object = toViewObject(info, other.apiVersion, structuredClone(other.object));
      if (typeof object === 'string') throw new ConfigError(`${label}: ${object}`);
      const key = objectKey(info.kind, object.metadata.namespace, object.metadata.name);
      const list = others.get(info.list) ?? [];
      list.push(stamped(object, created.get(key)));
      others.set(info.list, list);
    }
    return { manifest, others, created };
  }

  /** Each record keeps its last good content when its new content is invalid. */
  private async loadRecords(): Promise<void> {
    for (const file of this.redirectionFiles) {
      try {
        this.records.set(file, await readRedirectionRecord(file));
      } catch (err) {
        this.reportError(err);
      }
    }
  }

  private buildView(loaded: LoadedFiles, placements: Placements): ClusterView {
    const { manifest, created } = loaded;
    const view: Record<string, unknown> = { ...emptyView() };
    if (this.reads('Namespace')) {
      view.namespaces = new Map(manifest.namespaces.map((ns) => [ns.metadata.name, stamped(ns, created.get(objectKey('Namespace', undefined, ns.metadata.name)))]));
    }
    if (this.reads('Pod')) {
      const pods: Pod[] = [];
      for (const declared of manifest.pods) {
        const pod = this.placedPod(stamped(declared, created.get(objectKey('Pod', declared.metadata.namespace ?? 'default', declared.metadata.name))), placements);
        if (this.node === undefined || pod.spec.nodeName === this.node) pods.push(pod);
      }
      view.pods = pods.sort(byKey);
    }
    if (this.reads('Service')) {
      view.services = manifest.services
        .map((svc) => withClusterIP(stamped(svc, created.get(objectKey('Service', svc.metadata.namespace ?? 'default', svc.metadata.name))), placements))
        .sort(byKey);
    }
    for (const [list, objects] of loaded.others) view[list] = [...objects].sort(byKey);
    return view as unknown as ClusterView;
  }

  /** The pod as the lab runs it: on its node, with its address, running and ready, its capture recorded. */
  private placedPod(declared: Pod, placements: Placements): Pod {
    const placed = placements.pods.get(podKey(declared));
    let pod = declared;
    if (placed && (pod.spec.nodeName === undefined || pod.status?.podIP === undefined)) {
      pod = { ...pod, spec: { ...pod.spec, nodeName: pod.spec.nodeName ?? placed.nodeName } };
      // An address given on another node than the pod's (a stale record) is not its address.
      if (pod.status?.podIP === undefined && pod.spec.nodeName === placed.nodeName) {
        pod.status = { ...pod.status, phase: 'Running', podIP: placed.podIP, podIPs: [{ ip: placed.podIP }], conditions: [{ type: 'Ready', status: 'True' }] };
      }
    }
    const state = this.recordedRedirection(pod);
    if (state !== undefined) pod = { ...pod, metadata: { ...pod.metadata, annotations: { ...pod.metadata.annotations, [REDIRECTION_ANNOTATION]: state } } };
    return pod;
  }

  /** What the agents recorded for the pod at its current address; a record of an older address is stale. */
  private recordedRedirection(pod: Pod): 'enabled' | 'pending' | undefined {
    const ip = pod.status?.podIP;
    if (ip === undefined) return undefined;
    const key = podKey(pod);
    let found: { state: 'enabled' | 'pending'; updated: string } | undefined;
    for (const record of this.records.values()) {
      const entry = record?.pods[key];
      if (entry?.ip !== ip) continue;
      // A pod moved between nodes may appear in two records: the later one is current.
      if (!found || record!.updated > found.updated) found = { state: entry.state, updated: record!.updated };
    }
    return found?.state;
  }

  /**
   * The view with every unchanged object (and every unchanged list) replaced by the previous
   * view's, so that consumers can tell what changed by reference.
   */
  private internView(fresh: ClusterView): ClusterView {
    const previous = this.view;
    const next = new Map<string, Interned>();
    const intern = <T extends object>(kind: string, key: string, obj: T): T => {
      const id = `${kind} ${key}`;
      const json = canonicalJson(obj);
      const before = this.interned.get(id);
      const chosen = before !== undefined && before.json === json ? (before.object as T) : obj;
      next.set(id, { json, object: chosen });
      return chosen;
    };
    const namespaces = new Map<string, Namespace>();
    for (const [name, ns] of fresh.namespaces) namespaces.set(name, intern('Namespace', name, ns));
    const out: Record<string, unknown> = {
      namespaces: previous && sameEntries(previous.namespaces, namespaces) ? previous.namespaces : namespaces,
    };
    for (const list of VIEW_LISTS) {
      const objects = (fresh[list] as readonly { metadata: ObjectMeta }[]).map((o) => intern(list, keyOf(o), o));
      const before = previous?.[list] as readonly unknown[] | undefined;
      out[list] = before && sameItems(before, objects) ? before : objects;
    }
    this.interned = next;
    return out as unknown as ClusterView;
  }

  /**
   * Re-reads everything. Each input keeps its last good value when its new content is invalid,
   * so a broken YAML edit does not hide a pod the lab has placed meanwhile (and vice versa).
   */
  private async refresh(): Promise<void> {
    this.signature = await this.inputSignature();
    try {
      this.loaded = this.loadFiles();
    } catch (err) {
      this.reportError(err);
    }
    if (this.podStatusFile !== undefined) {
      try {
        this.placements = await readPlacements(this.podStatusFile);
      } catch (err) {
        this.reportError(err);
      }
    }
    await this.loadRecords();
    if (this.closed) return;
    const previous = this.view!;
    const view = this.internView(this.buildView(this.loaded!, this.placements));
    if (VIEW_LISTS.every((list) => view[list] === previous[list]) && view.namespaces === previous.namespaces) return;
    this.view = view;
    this.log?.info({ pods: view.pods.length, namespaces: view.namespaces.size }, 'config changed');
    this.listeners.changed(view);
    this.dropStatusesOfGonePolicies(view);
  }

  private reportError(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.log?.warn({ err: error.message }, 'invalid config ignored; keeping the last good view');
    this.listeners.failed(error);
  }

  // -------------------------------------------------------------------------------------------
  // Watching

  private startWatching(): void {
    // Editors and the lab replace files by rename, which ends a watch on the file itself; a watch
    // on the containing directory sees the new file.
    const filters = new Map<string, ((name: string) => boolean)[]>();
    const add = (dir: string, filter: (name: string) => boolean): void => {
      filters.set(dir, [...(filters.get(dir) ?? []), filter]);
    };
    for (const path of this.paths) {
      if (isDirectorySync(path)) add(path, (name) => /\.ya?ml$/.test(name));
      else add(dirname(path), (name) => name === basename(path));
    }
    for (const file of this.jsonInputs()) add(dirname(file), (name) => name === basename(file));
    for (const [dir, accept] of filters) {
      try {
        const watcher = watch(dir, { persistent: false }, (_event, name) => {
          // No name (some platforms): cannot filter, so re-read.
          if (name === null || accept.some((f) => f(name.toString()))) this.scheduleRefresh();
        });
        watcher.on('error', (err) => {
          this.log?.warn({ dir, err: err.message }, 'file watch failed; falling back to polling');
          watcher.close();
        });
        this.watchers.push(watcher);
      } catch (err) {
        // The directory may not exist yet (the status file's); the poll covers it.
        this.log?.debug({ dir, err: errorMessage(err) }, 'cannot watch directory; polling it');
      }
    }
  }

  /** The JSON files read beside the YAML: the lab's placements and the agents' records. */
  private jsonInputs(): string[] {
    return [...(this.podStatusFile !== undefined ? [this.podStatusFile] : []), ...this.redirectionFiles];
  }

  private scheduleRefresh(): void {
    if (this.closed) return;
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => this.runRefresh(), this.debounceMs);
  }

  /** One refresh at a time; a request during one runs another after it (listeners never overlap). */
  private runRefresh(): void {
    if (this.refreshing) {
      this.refreshAgain = true;
      return;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        try {
          await this.refresh();
        } catch (err) {
          this.reportError(err);
        }
      } while (this.refreshAgain && !this.closed);
    })().finally(() => {
      this.refreshing = undefined;
    });
  }

  private async poll(): Promise<void> {
    if (this.polling || this.closed) return;
    this.polling = true;
    try {
      const signature = await this.inputSignature();
      if (signature !== this.signature) this.scheduleRefresh();
    } finally {
      this.polling = false;
    }
  }

  /** Name, inode, size and mtime of every input file: what any edit changes. */
  private async inputSignature(): Promise<string> {
    const parts: string[] = [];
    const describe = (file: string, s: Stats | undefined): string => (s ? `${file}:${s.ino}:${s.size}:${s.mtimeMs}` : `${file}:missing`);
    const statOrUndefined = async (file: string): Promise<Stats | undefined> => stat(file).catch(() => undefined);
    for (const path of this.paths) {
      const s = await statOrUndefined(path);
      if (s?.isDirectory()) {
        const names = (await readdir(path).catch(() => [] as string[])).filter((n) => /\.ya?ml$/.test(n)).sort();
        for (const name of names) parts.push(describe(join(path, name), await statOrUndefined(join(path, name))));
      } else {
        parts.push(describe(path, s));
      }
    }
    for (const file of this.jsonInputs()) parts.push(describe(file, await statOrUndefined(file)));
    return parts.join('\n');
  }

  // -------------------------------------------------------------------------------------------
  // Status record

  /** A status write must never fail its caller: the writer has logged the failure. */
  private writeStatuses(): Promise<void> {
    return this.statusWriter.schedule().catch(() => undefined);
  }

  private dropStatusesOfGonePolicies(view: ClusterView): void {
    if (this.statuses.size === 0) return;
    const present = new Set(view.authorizationPolicies.map((p) => statusKey({ kind: 'AuthorizationPolicy', namespace: p.metadata.namespace ?? 'default', name: p.metadata.name })));
    let dropped = false;
    for (const key of this.statuses.keys()) {
      if (!present.has(key)) {
        this.statuses.delete(key);
        dropped = true;
      }
    }
    if (dropped) void this.writeStatuses();
  }
}

/** The object with a creation time and generation 1 unless it has its own, as the API server would give it. */
function stamped<T extends { metadata: ObjectMeta | ViewObject['metadata'] }>(obj: T, created: string | undefined): T {
  const metadata = { ...obj.metadata } as ObjectMeta;
  if (metadata.creationTimestamp === undefined && created !== undefined) metadata.creationTimestamp = created;
  if (metadata.generation === undefined) metadata.generation = 1;
  return { ...obj, metadata };
}

/** A service the file gives no cluster IP gets the one the lab assigned. */
function withClusterIP(svc: Service, placements: Placements): Service {
  if (svc.spec.clusterIP !== undefined || svc.spec.type === 'ExternalName') return svc;
  const assigned = placements.services.get(keyOf(svc));
  if (!assigned) return svc;
  return { ...svc, spec: { ...svc.spec, clusterIP: assigned.clusterIP, clusterIPs: svc.spec.clusterIPs ?? [assigned.clusterIP] } };
}

/** Each object's creation time from its document's position across the input files, in reading order. */
function creationTimes(manifest: Manifest, files: string[]): Map<string, string> {
  const rank = new Map(files.map((f, i) => [f, i]));
  const documents: { key: string; file: number; index: number }[] = [];
  const add = (key: string, source: string, index: number): void => {
    documents.push({ key, file: rank.get(source) ?? files.length, index });
  };
  for (const [key, origin] of manifest.origins ?? []) add(key, origin.source, origin.index);
  for (const other of manifest.others) {
    const meta = (other.object.metadata ?? {}) as { name?: string; namespace?: string };
    add(objectKey(other.kind, meta.namespace ?? 'default', meta.name ?? ''), other.source, other.index);
  }
  // Documents in reading order, numbered; a Deployment's pods share its document's number.
  const sorted = [...documents].sort((a, b) => a.file - b.file || a.index - b.index);
  const ordinal = new Map<string, number>();
  for (const d of sorted) {
    const position = `${d.file}:${d.index}`;
    if (!ordinal.has(position)) ordinal.set(position, ordinal.size);
  }
  return new Map(documents.map((d) => [d.key, rfc3339(new Date(FILE_EPOCH + ordinal.get(`${d.file}:${d.index}`)! * 1000))]));
}

/** The files loadManifests reads, in its order. */
function inputFiles(paths: string[]): string[] {
  return paths.flatMap((path) => (isDirectorySync(path) ? readdirSync(path).filter((n) => /\.ya?ml$/.test(n)).sort().map((n) => join(path, n)) : [path]));
}

function sameItems(a: readonly unknown[], b: readonly unknown[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sameEntries<V>(a: ReadonlyMap<string, V>, b: ReadonlyMap<string, V>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

function isDirectorySync(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
