// The lab's config source: the node agent's view (or, given no node, the control plane's view of
// every pod) comes from the same YAML files the lab was built from, plus the lab's record of where it placed each pod and which address it gave it (the part a
// kubelet and CNI would report on a real cluster). Edits to the files reach the agent like API
// watch events do; a bad edit is reported and ignored, never fatal, as an API server would have
// refused it.

import { statSync, watch, type FSWatcher, type Stats } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { ConfigSource, NodeView, RedirectionState } from '../config-source.js';
import { ConfigError, errorMessage } from '../../mesh/errors.js';
import { loadManifests, type Manifest } from '../../mesh/k8s/manifest.js';
import { podKey, type Namespace, type Pod } from '../../mesh/k8s/types.js';
import type { Logger } from '../../mesh/log.js';
import { SourceListeners } from './listeners.js';

export interface FileSourceOptions {
  /** Files or directories of YAML (directories: their *.yaml / *.yml, not recursive). */
  paths: string[];
  /**
   * The node whose pods make up the view. Without it the view holds every pod the files declare,
   * placed or not: the control plane's cluster-wide view.
   */
  node?: string;
  /** Written by the lab: `{ "pods": { "<ns>/<name>": { "nodeName", "podIP" } } }`. May not exist yet. */
  podStatusFile?: string;
  /** Where recordRedirection() keeps its record; without it the record is kept in memory only. */
  redirectionStatusFile?: string;
  log?: Logger;
  /** Quiet time after a file event before re-reading (editors write in several steps). */
  debounceMs?: number;
  /** The mtime/size poll that backs fs.watch up (network filesystems, replaced directories). */
  pollIntervalMs?: number;
}

export interface PodPlacement {
  nodeName: string;
  podIP: string;
}

export interface RedirectionRecord {
  /** Absent for a cluster-wide source. */
  node?: string;
  updated: string;
  pods: Record<string, { state: 'enabled' | 'pending'; ip: string }>;
}

/** Redirection writes within this window go to disk as one. */
const WRITE_COALESCE_MS = 20;

export class FileSource implements ConfigSource {
  private readonly paths: string[];
  private readonly node: string | undefined;
  private readonly podStatusFile: string | undefined;
  private readonly redirectionStatusFile: string | undefined;
  private readonly log: Logger | undefined;
  private readonly debounceMs: number;
  private readonly pollIntervalMs: number;

  private readonly listeners: SourceListeners;
  private manifest: Manifest | undefined;
  private placements = new Map<string, PodPlacement>();
  private view: NodeView | undefined;
  private fingerprint = '';
  private signature = '';

  private readonly watchers: FSWatcher[] = [];
  private debounceTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private polling = false;
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;
  private closed = false;

  private readonly redirections = new Map<string, { state: 'enabled' | 'pending'; ip: string }>();
  private pendingWrite: Promise<void> | undefined;
  private lastWrite: Promise<void> = Promise.resolve();

  constructor(opts: FileSourceOptions) {
    if (opts.paths.length === 0) throw new ConfigError('the file config source needs at least one file or directory');
    this.paths = [...opts.paths];
    this.node = opts.node;
    this.podStatusFile = opts.podStatusFile;
    this.redirectionStatusFile = opts.redirectionStatusFile;
    this.log = opts.log;
    this.listeners = new SourceListeners(opts.log);
    this.debounceMs = opts.debounceMs ?? 100;
    this.pollIntervalMs = opts.pollIntervalMs ?? 2000;
  }

  /** Rejects with the ConfigError when the files are invalid at start: there is no last good view yet. */
  async start(): Promise<void> {
    // Taken before reading, so an edit racing with the first read is seen by the poll.
    this.signature = await this.inputSignature();
    this.manifest = this.loadManifest();
    this.placements = await this.loadPlacements();
    this.view = this.buildView(this.manifest, this.placements);
    this.fingerprint = fingerprintOf(this.view);
    this.startWatching();
    this.pollTimer = setInterval(() => void this.poll(), this.pollIntervalMs);
    this.pollTimer.unref();
  }

  current(): NodeView {
    if (!this.view) throw new Error('FileSource.current() called before start() resolved');
    return this.view;
  }

  onChange(listener: (view: NodeView) => void): void {
    this.listeners.onChange(listener);
  }

  onError(listener: (err: Error) => void): void {
    this.listeners.onError(listener);
  }

  recordRedirection(pod: Pod, state: RedirectionState): Promise<void> {
    const key = podKey(pod);
    if (state === null) this.redirections.delete(key);
    else this.redirections.set(key, { state, ip: pod.status?.podIP ?? '' });
    return this.scheduleWrite();
  }

  /** The record as recordRedirection() left it (what the file holds once writes settle). */
  redirectionRecord(): RedirectionRecord {
    const pods: RedirectionRecord['pods'] = {};
    for (const key of [...this.redirections.keys()].sort()) pods[key] = { ...this.redirections.get(key)! };
    const record: RedirectionRecord = { updated: new Date().toISOString(), pods };
    if (this.node !== undefined) record.node = this.node;
    return record;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.debounceTimer);
    clearInterval(this.pollTimer);
    for (const w of this.watchers.splice(0)) w.close();
    await this.refreshing;
    await this.lastWrite;
  }

  // -------------------------------------------------------------------------------------------
  // Reading

  private loadManifest(): Manifest {
    const manifest = loadManifests(this.paths);
    // A lab file that does not list this node would silently give an empty view: say so instead.
    const node = this.node;
    if (node !== undefined && manifest.labs.length > 0 && !manifest.labs.some((lab) => lab.spec.nodes.some((n) => n.name === node))) {
      const names = manifest.labs.flatMap((lab) => lab.spec.nodes.map((n) => n.name));
      throw new ConfigError(`${this.paths.join(', ')}: node ${JSON.stringify(node)} is not a node of lab ${manifest.labs.map((l) => l.metadata.name).join(', ')} (nodes: ${names.join(', ')})`);
    }
    return manifest;
  }

  private async loadPlacements(): Promise<Map<string, PodPlacement>> {
    const file = this.podStatusFile;
    const out = new Map<string, PodPlacement>();
    if (file === undefined) return out;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      // Not written yet: the lab writes it once pods are placed.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw new ConfigError(`${file}: cannot read the pod status file: ${errorMessage(err)}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`${file}: the pod status file is not valid JSON: ${errorMessage(err)}`, { cause: err });
    }
    const pods = isRecord(parsed) ? parsed.pods : undefined;
    if (!isRecord(pods)) throw new ConfigError(`${file}: the pod status file must be {"pods": {"<ns>/<name>": {"nodeName": ..., "podIP": ...}}}`);
    for (const [key, value] of Object.entries(pods)) {
      if (!isRecord(value) || typeof value.nodeName !== 'string' || typeof value.podIP !== 'string') {
        throw new ConfigError(`${file}: pods[${JSON.stringify(key)}]: must be {"nodeName": string, "podIP": string}`);
      }
      out.set(key, { nodeName: value.nodeName, podIP: value.podIP });
    }
    return out;
  }

  private buildView(manifest: Manifest, placements: ReadonlyMap<string, PodPlacement>): NodeView {
    const namespaces = new Map<string, Namespace>();
    for (const ns of manifest.namespaces) namespaces.set(ns.metadata.name, ns);
    const pods: Pod[] = [];
    for (const declared of manifest.pods) {
      const placed = placements.get(podKey(declared));
      let pod = declared;
      if (placed && (pod.spec.nodeName === undefined || pod.status?.podIP === undefined)) {
        pod = structuredClone(declared);
        pod.spec.nodeName ??= placed.nodeName;
        // An address given on another node than the pod's (a stale record) is not its address.
        if (pod.status?.podIP === undefined && pod.spec.nodeName === placed.nodeName) pod.status = { ...pod.status, podIP: placed.podIP };
      }
      if (this.node === undefined || pod.spec.nodeName === this.node) pods.push(pod);
    }
    pods.sort((a, b) => (podKey(a) < podKey(b) ? -1 : podKey(a) > podKey(b) ? 1 : 0));
    return { namespaces, pods };
  }

  /**
   * Re-reads everything. Each input keeps its last good value when its new content is invalid,
   * so a broken YAML edit does not hide a pod the lab has placed meanwhile (and vice versa).
   */
  private async refresh(): Promise<void> {
    this.signature = await this.inputSignature();
    let manifest = this.manifest!;
    let placements = this.placements;
    try {
      manifest = this.loadManifest();
      this.manifest = manifest;
    } catch (err) {
      this.reportError(err);
    }
    try {
      placements = await this.loadPlacements();
      this.placements = placements;
    } catch (err) {
      this.reportError(err);
    }
    if (this.closed) return;
    const view = this.buildView(manifest, placements);
    const fingerprint = fingerprintOf(view);
    if (fingerprint === this.fingerprint) return;
    this.view = view;
    this.fingerprint = fingerprint;
    this.log?.info({ pods: view.pods.length, namespaces: view.namespaces.size }, 'config changed');
    this.listeners.changed(view);
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
    if (this.podStatusFile !== undefined) {
      const file = this.podStatusFile;
      add(dirname(file), (name) => name === basename(file));
    }
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
    if (this.podStatusFile !== undefined) parts.push(describe(this.podStatusFile, await statOrUndefined(this.podStatusFile)));
    return parts.join('\n');
  }

  // -------------------------------------------------------------------------------------------
  // Redirection record

  /** Bursts (an agent enabling every pod at start) become one write; each caller awaits its own. */
  private scheduleWrite(): Promise<void> {
    const file = this.redirectionStatusFile;
    if (file === undefined) return Promise.resolve();
    if (!this.pendingWrite) {
      const write = this.lastWrite
        .then(() => delay(WRITE_COALESCE_MS))
        .then(() => {
          // From here on, new changes need a new write: this one snapshots the map now.
          this.pendingWrite = undefined;
          return writeAtomically(file, `${JSON.stringify(this.redirectionRecord(), null, 2)}\n`);
        });
      this.pendingWrite = write;
      this.lastWrite = write.catch((err: unknown) => {
        this.log?.error({ file, err: errorMessage(err) }, 'cannot write the redirection status file');
      });
    }
    return this.pendingWrite;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Readers see the old file or the new one, never a partial write. */
async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, text);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isDirectorySync(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function fingerprintOf(view: NodeView): string {
  const namespaces = [...view.namespaces.values()].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  return JSON.stringify({ namespaces, pods: view.pods });
}
