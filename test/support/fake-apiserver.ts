// A small Kubernetes API server for tests, speaking the HTTP protocol the real one does to the
// clients Ambit uses (@kubernetes/client-node): lists with a resourceVersion, chunked
// newline-delimited watch streams with ADDED/MODIFIED/DELETED/BOOKMARK/ERROR events, 410 Gone for
// compacted resource versions, field and label selectors, and GET/POST/PUT/PATCH/DELETE of single
// objects (merge patch), with the status subresource. It is generic over resources, so control
// plane tests can serve Services, EndpointSlices and Istio or Gateway API kinds from it too: core
// (/api/v1) and built-in group resources are always served, a custom resource version only once
// the test installs it (serve(), like applying its CRD), and 404 otherwise, as for a missing CRD.
// Like the real server it sets metadata.generation (bumped when spec changes) and
// creationTimestamp, and a write that changes nothing is not an event. It answers TokenReviews
// from a token table the test fills. Everything it received is recorded.

import http from 'node:http';
import { once } from 'node:events';
import type net from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

/** A JSON object as the API server stores it. */
export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [field: string]: unknown };
  [field: string]: unknown;
}

/** Where a resource lives: `v1` + `pods` for core, `gateway.networking.k8s.io/v1` + `gateways` for a group. */
export interface ResourceRef {
  groupVersion: string;
  plural: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface MutationOptions {
  /** false: change the store without telling open watches or keeping history, as if the events were lost to compaction. */
  notify?: boolean;
}

export interface InjectedFailure {
  method?: string;
  /** The request path must start with this. */
  pathPrefix?: string;
  /** Only watch requests (true) or only non-watch requests (false). */
  watch?: boolean;
  status: number;
  /** How many matching requests fail; default 1. */
  times?: number;
}

/** Which requests to match (stallRequests). */
export interface RequestFilter {
  method?: string;
  /** The request path must start with this. */
  pathPrefix?: string;
  /** How many matching requests; default 1. */
  times?: number;
}

/** A bearer token the fake server knows, as TokenReview reports it. */
export interface FakeToken {
  user: { username: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  /** The audiences the token was issued for (its `aud` claim). */
  audiences: string[];
  /**
   * Reported as status.audiences of a successful review instead of the real answer (the token's
   * audiences that the request asked for): an authenticator that ignores spec.audiences.
   */
  reportedAudiences?: string[];
}

/** The API server's own audience, used when a TokenReview names none (kubeadm's default). */
export const API_SERVER_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

interface HistoryEntry {
  resource: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: ApiObject;
  previous: ApiObject | undefined;
  rv: number;
}

interface OpenWatch {
  resource: string;
  namespace: string | undefined;
  fieldSelector: string | undefined;
  labelSelector: string | undefined;
  bookmarks: boolean;
  res: http.ServerResponse;
}

interface ParsedPath {
  resource: string;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}

const CORE_KINDS: Record<string, string> = {
  namespaces: 'Namespace',
  pods: 'Pod',
  services: 'Service',
  endpoints: 'Endpoints',
  nodes: 'Node',
  serviceaccounts: 'ServiceAccount',
  configmaps: 'ConfigMap',
  secrets: 'Secret',
};

/** Resources of built-in API groups, served like the core ones. */
const BUILTIN_GROUP_KINDS: Record<string, string> = {
  'discovery.k8s.io/v1/endpointslices': 'EndpointSlice',
  'apps/v1/deployments': 'Deployment',
};

export function resourceKey(ref: ResourceRef): string {
  return `${ref.groupVersion}/${ref.plural}`;
}

export const PODS: ResourceRef = { groupVersion: 'v1', plural: 'pods' };
export const NAMESPACES: ResourceRef = { groupVersion: 'v1', plural: 'namespaces' };
export const SERVICES: ResourceRef = { groupVersion: 'v1', plural: 'services' };
export const ENDPOINTSLICES: ResourceRef = { groupVersion: 'discovery.k8s.io/v1', plural: 'endpointslices' };

export class FakeApiServer {
  readonly requests: RecordedRequest[] = [];
  /** Bearer tokens that TokenReview accepts, keyed by the token. */
  readonly tokens = new Map<string, FakeToken>();
  private readonly stalls: (RequestFilter & { left: number })[] = [];
  private readonly store = new Map<string, Map<string, ApiObject>>();
  private readonly kinds = new Map<string, string>();
  private readonly history: HistoryEntry[] = [];
  private readonly watches = new Set<OpenWatch>();
  private readonly sockets = new Set<net.Socket>();
  private readonly failures: (InjectedFailure & { left: number })[] = [];
  private rv = 100;
  /** Watches from a resourceVersion older than this get 410 Gone. */
  private compactedRv = 0;
  private readonly server: http.Server;
  private port = 0;

  private constructor() {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (socket: net.Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  static async start(): Promise<FakeApiServer> {
    const api = new FakeApiServer();
    api.server.listen(0, '127.0.0.1');
    await once(api.server, 'listening');
    api.port = (api.server.address() as net.AddressInfo).port;
    return api;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A KubeConfig pointing at this server (plain HTTP, which the client allows only with skipTLSVerify). */
  kubeConfig(): KubeConfig {
    return FakeApiServer.kubeConfigAt(this.url);
  }

  /** A kubeconfig for the server at `url` (for a process other than the one serving it). */
  static kubeConfigAt(url: string): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
      users: [{ name: 'fake' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
      currentContext: 'fake',
    });
    return kc;
  }

  /** Serves a resource that is not a built-in one (a CRD's version), as `kind`. */
  defineKind(ref: ResourceRef, kind: string): void {
    this.kinds.set(resourceKey(ref), kind);
  }

  /** Installs a custom resource version: from now on its paths answer instead of 404. */
  serve(ref: ResourceRef, kind: string): void {
    this.defineKind(ref, kind);
  }

  /**
   * Stops serving a custom resource version, as when its CRD is deleted: its objects are gone,
   * open watches on it end, and its paths answer 404.
   */
  unserve(ref: ResourceRef): void {
    const resource = resourceKey(ref);
    this.kinds.delete(resource);
    this.store.delete(resource);
    for (const w of [...this.watches]) if (w.resource === resource) this.endWatch(w);
  }

  /** Whether requests for the resource are answered (core and built-in ones always are). */
  served(ref: ResourceRef): boolean {
    return this.isServed(resourceKey(ref));
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Creates or replaces an object; open watches see ADDED or MODIFIED. Returns the stored copy. */
  upsert(ref: ResourceRef, obj: ApiObject, opts: MutationOptions = {}): ApiObject {
    const resource = resourceKey(ref);
    const objects = this.objectsOf(resource);
    const key = objectKey(obj.metadata.namespace, obj.metadata.name);
    const previous = objects.get(key);
    const copy = structuredClone(obj);
    this.carryOver(copy, previous);
    const stored = this.stamp(resource, copy);
    objects.set(key, stored);
    this.emit(resource, previous ? 'MODIFIED' : 'ADDED', stored, previous, opts);
    return stored;
  }

  /** Deletes an object; open watches see DELETED. */
  remove(ref: ResourceRef, name: string, namespace?: string, opts: MutationOptions = {}): boolean {
    const resource = resourceKey(ref);
    const objects = this.objectsOf(resource);
    const key = objectKey(namespace, name);
    const previous = objects.get(key);
    if (!previous) return false;
    objects.delete(key);
    const tombstone = this.stamp(resource, structuredClone(previous));
    this.emit(resource, 'DELETED', tombstone, previous, opts);
    return true;
  }

  get(ref: ResourceRef, name: string, namespace?: string): ApiObject | undefined {
    const found = this.objectsOf(resourceKey(ref)).get(objectKey(namespace, name));
    return found ? structuredClone(found) : undefined;
  }

  list(ref: ResourceRef): ApiObject[] {
    return [...this.objectsOf(resourceKey(ref)).values()].map((o) => structuredClone(o));
  }

  /**
   * Simulates etcd compaction: history up to now is gone, so open watches get an ERROR event with
   * code 410 (`mode: 'event'`, what a watch-cache server sends) or are just closed and then get
   * HTTP 410 when they come back with their old resourceVersion (`mode: 'status'`).
   */
  expireWatches(mode: 'event' | 'status' = 'event'): void {
    this.rv++;
    this.compactedRv = this.rv;
    this.history.length = 0;
    for (const w of [...this.watches]) {
      if (mode === 'event') this.send(w, 'ERROR', expiredStatus());
      this.endWatch(w);
    }
  }

  /** Ends every open watch normally, as the server does when a watch's timeout expires. */
  endWatches(): void {
    for (const w of [...this.watches]) this.endWatch(w);
  }

  /** Sends a BOOKMARK with the current resourceVersion to watches that asked for bookmarks. */
  bookmark(): void {
    for (const w of this.watches) {
      if (!w.bookmarks) continue;
      this.send(w, 'BOOKMARK', { kind: this.kindOf(w.resource), apiVersion: apiVersionOf(w.resource), metadata: { name: '', resourceVersion: String(this.rv) } });
    }
  }

  /** The next matching requests fail with `status` (a Status body), before anything is recorded or applied. */
  failRequests(failure: InjectedFailure): void {
    this.failures.push({ ...failure, left: failure.times ?? 1 });
  }

  /**
   * The next matching requests are recorded and never answered (until close()), like an API
   * server that accepted the connection and hung.
   */
  stallRequests(filter: RequestFilter): void {
    this.stalls.push({ ...filter, left: filter.times ?? 1 });
  }

  watchCount(ref?: ResourceRef): number {
    if (!ref) return this.watches.size;
    const resource = resourceKey(ref);
    return [...this.watches].filter((w) => w.resource === resource).length;
  }

  requestsMatching(filter: { method?: string; path?: string; watch?: boolean }): RecordedRequest[] {
    return this.requests.filter(
      (r) =>
        (filter.method === undefined || r.method === filter.method) &&
        (filter.path === undefined || r.path === filter.path) &&
        (filter.watch === undefined || (r.query.get('watch') === 'true') === filter.watch),
    );
  }

  async close(): Promise<void> {
    for (const w of [...this.watches]) this.endWatch(w);
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private objectsOf(resource: string): Map<string, ApiObject> {
    let objects = this.store.get(resource);
    if (!objects) {
      objects = new Map();
      this.store.set(resource, objects);
    }
    return objects;
  }

  private kindOf(resource: string): string {
    const plural = resource.slice(resource.lastIndexOf('/') + 1);
    return this.kinds.get(resource) ?? BUILTIN_GROUP_KINDS[resource] ?? CORE_KINDS[plural] ?? plural;
  }

  private isServed(resource: string): boolean {
    return !resource.includes('/', resource.indexOf('/') + 1) || this.kinds.has(resource) || BUILTIN_GROUP_KINDS[resource] !== undefined;
  }

  private stamp(resource: string, obj: ApiObject): ApiObject {
    this.rv++;
    obj.apiVersion = apiVersionOf(resource);
    obj.kind = this.kindOf(resource);
    obj.metadata.resourceVersion = String(this.rv);
    return obj;
  }

  /** What the server keeps of an object across writes: creation time, and generation bumped on spec changes. */
  private carryOver(obj: ApiObject, previous: ApiObject | undefined): void {
    const meta = obj.metadata;
    if (!previous) {
      meta.creationTimestamp ??= new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
      meta.generation ??= 1;
      return;
    }
    meta.creationTimestamp = previous.metadata.creationTimestamp;
    const generation = typeof previous.metadata.generation === 'number' ? previous.metadata.generation : 1;
    meta.generation = JSON.stringify(obj.spec) === JSON.stringify(previous.spec) ? generation : generation + 1;
  }

  private emit(resource: string, type: HistoryEntry['type'], object: ApiObject, previous: ApiObject | undefined, opts: MutationOptions): void {
    if (opts.notify === false) return;
    const entry: HistoryEntry = { resource, type, object, previous, rv: this.rv };
    this.history.push(entry);
    for (const w of this.watches) this.deliver(w, entry);
  }

  /** What a watch sees of a change, given its selectors: objects leaving the selection are DELETED. */
  private deliver(w: OpenWatch, entry: HistoryEntry): void {
    if (entry.resource !== w.resource) return;
    const now = entry.type !== 'DELETED' && this.selects(w, entry.object);
    const before = entry.previous !== undefined && this.selects(w, entry.previous);
    if (entry.type === 'DELETED') {
      if (before) this.send(w, 'DELETED', entry.object);
    } else if (now) {
      this.send(w, before ? 'MODIFIED' : 'ADDED', entry.object);
    } else if (before) {
      this.send(w, 'DELETED', entry.object);
    }
  }

  private selects(w: Pick<OpenWatch, 'namespace' | 'fieldSelector' | 'labelSelector'>, obj: ApiObject): boolean {
    if (w.namespace !== undefined && obj.metadata.namespace !== w.namespace) return false;
    return matchesFieldSelector(obj, w.fieldSelector) && matchesLabelSelector(obj.metadata.labels ?? {}, w.labelSelector);
  }

  private send(w: OpenWatch, type: WatchEventType, object: unknown): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private endWatch(w: OpenWatch): void {
    this.watches.delete(w);
    if (!w.res.writableEnded) w.res.end();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', this.url);
      const recorded: RecordedRequest = {
        method: req.method ?? 'GET',
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      };
      const failure = this.takeFailure(recorded);
      this.requests.push(recorded);
      if (this.takeStall(recorded)) return;
      if (failure !== undefined) {
        sendStatus(res, failure, 'injected failure');
        return;
      }
      try {
        this.route(recorded, res);
      } catch (err) {
        sendStatus(res, 500, err instanceof Error ? err.message : String(err));
      }
    });
  }

  private takeFailure(r: RecordedRequest): number | undefined {
    const isWatch = r.query.get('watch') === 'true';
    const failure = this.failures.find(
      (f) =>
        f.left > 0 &&
        (f.method === undefined || f.method === r.method) &&
        (f.pathPrefix === undefined || r.path.startsWith(f.pathPrefix)) &&
        (f.watch === undefined || f.watch === isWatch),
    );
    if (!failure) return undefined;
    failure.left--;
    return failure.status;
  }

  private takeStall(r: RecordedRequest): boolean {
    const stall = this.stalls.find(
      (f) => f.left > 0 && (f.method === undefined || f.method === r.method) && (f.pathPrefix === undefined || r.path.startsWith(f.pathPrefix)),
    );
    if (!stall) return false;
    stall.left--;
    return true;
  }

  private route(r: RecordedRequest, res: http.ServerResponse): void {
    if (r.method === 'POST' && r.path === '/apis/authentication.k8s.io/v1/tokenreviews') {
      this.serveTokenReview(r, res);
      return;
    }
    const parsed = parsePath(r.path);
    if (!parsed) {
      sendStatus(res, 404, `no route for ${r.path}`);
      return;
    }
    if (!this.isServed(parsed.resource)) {
      sendStatus(res, 404, 'the server could not find the requested resource');
      return;
    }
    const collection = parsed.name === undefined;
    if (collection && r.method === 'GET') {
      if (r.query.get('watch') === 'true' || r.query.get('watch') === '1') this.serveWatch(parsed, r, res);
      else this.serveList(parsed, r, res);
      return;
    }
    if (collection && r.method === 'POST') {
      const obj = JSON.parse(r.body) as ApiObject;
      if (parsed.namespace !== undefined) obj.metadata.namespace = parsed.namespace;
      if (this.get(refOf(parsed.resource), obj.metadata.name, obj.metadata.namespace)) {
        sendStatus(res, 409, `${obj.metadata.name} already exists`);
        return;
      }
      sendJson(res, 201, this.upsert(refOf(parsed.resource), obj));
      return;
    }
    const ref = refOf(parsed.resource);
    const name = parsed.name ?? '';
    const existing = this.get(ref, name, parsed.namespace);
    if (!existing) {
      sendStatus(res, 404, `${parsed.resource} "${name}" not found`);
      return;
    }
    switch (r.method) {
      case 'GET':
        sendJson(res, 200, existing);
        return;
      case 'DELETE':
        this.remove(ref, name, parsed.namespace);
        sendJson(res, 200, existing);
        return;
      case 'PUT': {
        const obj = JSON.parse(r.body) as ApiObject;
        const replaced = parsed.subresource === 'status' ? { ...existing, status: obj.status } : obj;
        sendJson(res, 200, this.write(ref, existing, { ...replaced, metadata: { ...replaced.metadata, name, namespace: parsed.namespace } }));
        return;
      }
      case 'PATCH': {
        const type = (r.headers['content-type'] ?? '').split(';')[0]?.trim();
        if (type !== 'application/merge-patch+json' && type !== 'application/strategic-merge-patch+json') {
          sendStatus(res, 415, `the fake API server applies merge patches only, got ${type ?? 'no content-type'}`);
          return;
        }
        const patched = mergePatch(existing, JSON.parse(r.body) as unknown) as ApiObject;
        // Through the status subresource only status changes; the rest of the patch is ignored.
        const result = parsed.subresource === 'status' ? { ...existing, status: patched.status } : patched;
        sendJson(res, 200, this.write(ref, existing, { ...result, metadata: { ...result.metadata, name, namespace: parsed.namespace } }));
        return;
      }
      default:
        sendStatus(res, 405, `${r.method} not supported`);
    }
  }

  /** A client's write: stored and sent to watches, unless it changes nothing (then no new resourceVersion, no event). */
  private write(ref: ResourceRef, existing: ApiObject, obj: ApiObject): ApiObject {
    const { resourceVersion: _before, ...before } = existing.metadata;
    const { resourceVersion: _after, ...after } = obj.metadata;
    const same = JSON.stringify(sortedKeys({ ...existing, metadata: before })) === JSON.stringify(sortedKeys({ ...obj, metadata: after }));
    return same ? existing : this.upsert(ref, obj);
  }

  /**
   * What kube-apiserver answers: 201 with the review echoed back, authenticated when the token is
   * known and issued for one of the requested audiences (the server's own when none is named);
   * status.audiences is that intersection.
   */
  private serveTokenReview(r: RecordedRequest, res: http.ServerResponse): void {
    const review = JSON.parse(r.body) as { spec?: { token?: string; audiences?: string[] } };
    const spec = review.spec ?? {};
    const wanted = spec.audiences !== undefined && spec.audiences.length > 0 ? spec.audiences : [API_SERVER_AUDIENCE];
    const known = spec.token === undefined ? undefined : this.tokens.get(spec.token);
    const body = { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec };
    if (!known) {
      sendJson(res, 201, { ...body, status: { user: {}, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive]' } });
      return;
    }
    const granted = known.audiences.filter((a) => wanted.includes(a));
    if (granted.length === 0) {
      const list = (xs: string[]): string => `[${xs.map((x) => JSON.stringify(x)).join(' ')}]`;
      sendJson(res, 201, { ...body, status: { user: {}, error: `[invalid bearer token, token audiences ${list(known.audiences)} is invalid for the target audiences ${list(wanted)}]` } });
      return;
    }
    sendJson(res, 201, { ...body, status: { authenticated: true, user: known.user, audiences: known.reportedAudiences ?? granted } });
  }

  private serveList(parsed: ParsedPath, r: RecordedRequest, res: http.ServerResponse): void {
    const w = { namespace: parsed.namespace, fieldSelector: r.query.get('fieldSelector') ?? undefined, labelSelector: r.query.get('labelSelector') ?? undefined };
    // Items of a list carry no apiVersion/kind, as with the real server.
    const items = [...this.objectsOf(parsed.resource).values()]
      .filter((o) => this.selects(w, o))
      .map((o) => {
        const { apiVersion: _apiVersion, kind: _kind, ...rest } = structuredClone(o);
        return rest;
      });
    sendJson(res, 200, { kind: `${this.kindOf(parsed.resource)}List`, apiVersion: apiVersionOf(parsed.resource), metadata: { resourceVersion: String(this.rv) }, items });
  }

  private serveWatch(parsed: ParsedPath, r: RecordedRequest, res: http.ServerResponse): void {
    const from = r.query.get('resourceVersion') ?? '';
    const fromRv = Number(from);
    if (from !== '' && from !== '0' && fromRv < this.compactedRv) {
      sendStatus(res, 410, `too old resource version: ${from} (${this.compactedRv})`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: OpenWatch = {
      resource: parsed.resource,
      namespace: parsed.namespace,
      fieldSelector: r.query.get('fieldSelector') ?? undefined,
      labelSelector: r.query.get('labelSelector') ?? undefined,
      bookmarks: r.query.get('allowWatchBookmarks') === 'true',
      res,
    };
    if (from === '' || from === '0') {
      // No resourceVersion: the current state as synthetic ADDED events, then changes.
      for (const obj of this.objectsOf(parsed.resource).values()) if (this.selects(w, obj)) this.send(w, 'ADDED', obj);
    } else {
      for (const entry of this.history) if (entry.rv > fromRv) this.deliver(w, entry);
    }
    this.watches.add(w);
    res.on('close', () => this.watches.delete(w));
  }
}

function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortedKeys((value as Record<string, unknown>)[k])]));
}

function objectKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

function apiVersionOf(resource: string): string {
  return resource.slice(0, resource.lastIndexOf('/'));
}

function refOf(resource: string): ResourceRef {
  const cut = resource.lastIndexOf('/');
  return { groupVersion: resource.slice(0, cut), plural: resource.slice(cut + 1) };
}

/** `/api/v1/...` and `/apis/<group>/<version>/...`, cluster-wide or under `namespaces/<ns>/`. */
function parsePath(path: string): ParsedPath | undefined {
  const parts = path.split('/').filter((p) => p !== '').map(decodeURIComponent);
  let groupVersion: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) {
    groupVersion = parts[1] ?? '';
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    groupVersion = `${parts[1]}/${parts[2]}`;
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  // namespaces/<ns>/<plural>[/<name>[/<sub>]] is namespaced; namespaces[/<name>] is the Namespace resource.
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    const [, namespace, plural, name, subresource] = rest;
    return { resource: `${groupVersion}/${plural}`, namespace, name, subresource };
  }
  const [plural, name, subresource] = rest;
  return { resource: `${groupVersion}/${plural}`, namespace: undefined, name, subresource };
}

function fieldValue(obj: unknown, path: string): string | undefined {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur === undefined || cur === null ? undefined : String(cur);
}

/** `a.b=x,c!=y` (also `==`): the subset of field selectors the real server supports for most kinds. */
export function matchesFieldSelector(obj: unknown, selector: string | undefined): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const m = /^([^!=]+)(!=|==|=)(.*)$/.exec(term.trim());
    if (!m) throw new Error(`unsupported field selector term '${term}'`);
    const [, field = '', op, want = ''] = m;
    const value = fieldValue(obj, field.trim()) ?? '';
    return op === '!=' ? value !== want : value === want;
  });
}

/** `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`. */
export function matchesLabelSelector(labels: Record<string, string>, selector: string | undefined): boolean {
  if (!selector) return true;
  const terms = selector.match(/[^,(]+(\([^)]*\))?/g) ?? [];
  return terms.every((raw) => {
    const term = raw.trim();
    const set = /^(\S+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term);
    if (set) {
      const [, key = '', op, values = ''] = set;
      const inSet = labels[key] !== undefined && values.split(',').map((v) => v.trim()).includes(labels[key] ?? '');
      return op === 'in' ? inSet : !inSet;
    }
    const eq = /^([^!=]+)(!=|==|=)(.*)$/.exec(term);
    if (eq) {
      const [, key = '', op, want = ''] = eq;
      const value = labels[key.trim()];
      return op === '!=' ? value !== want.trim() : value === want.trim();
    }
    if (term.startsWith('!')) return labels[term.slice(1)] === undefined;
    return labels[term] !== undefined;
  });
}

/** RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> =
    typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

function expiredStatus(): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'too old resource version', reason: 'Expired', code: 410 };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendStatus(res: http.ServerResponse, code: number, message: string): void {
  const reason = code === 404 ? 'NotFound' : code === 409 ? 'AlreadyExists' : code === 410 ? 'Expired' : code === 415 ? 'UnsupportedMediaType' : 'InternalError';
  sendJson(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
}
