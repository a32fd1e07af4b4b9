// `npm run bench -- controlplane`: the control plane at scale. A list/watch API server
// (test/support/fake-apiserver.ts, so the real client library's informers run) holds 10,000 pods,
// 1,000 services, 500 AuthorizationPolicies, PeerAuthentications, waypoints and routes; the real
// ControlPlane (Kubernetes source, model, delta xDS over TLS), in a process of its own
// (test/support/controlplane-process.ts), serves 100 clients that subscribe like ztunnels
// (wildcard Address and Authorization) and ACK every response. The API server and the 100 clients
// share this process.
//
// Measured, medians over ROUNDS runs:
// 1. time to the first full push: from starting the control plane process until all 100 clients
//    hold their initial state (list of every kind, model, encoding, 100 x ~11,600 resources);
// 2. memory of the control plane process: heap after a forced GC, and RSS, with the 100 clients
//    connected and after they left;
// 3. propagation: a pod's label changed through the API server, the time until each of the 100
//    clients has the new version (watch event, informer, debounce, model, push); CHANGES changes
//    per round, p50 and p99 over all clients and changes;
// 4. the model alone, in this process: a full build of a fresh copy of the view, and one pod's
//    incremental update.
// The clients parse only what they need (nonce, type, resource names) so that their decoding does
// not dominate the process they share with the API server.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import { NodeCredentials } from '../../controlplane/ca/node-credentials.js';
import { buildModel } from '../../controlplane/model/build.js';
import { IncrementalModel } from '../../controlplane/model/incremental.js';
import { DEFAULT_MODEL_OPTIONS } from '../../controlplane/model/types.js';
import { keyOf, type ClusterView } from '../../mesh/config/view.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE } from '../../mesh/xds/types.js';
import { DeltaDiscoveryRequest } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { ISTIOD_NAME } from '../../mesh/identity/ca-client.js';
import { FakeApiServer, ENDPOINTSLICES, NAMESPACES, PODS, SERVICES, type ApiObject, type ResourceRef } from '../support/fake-apiserver.js';
import { syntheticCluster } from '../support/synthetic.js';
import { ControlPlaneProcess, type ProcessMemory } from '../support/controlplane-process.js';

const PODS_N = Number(process.env.PODS ?? 10_000);
const SERVICES_N = Number(process.env.SERVICES ?? 1_000);
const POLICIES_N = Number(process.env.POLICIES ?? 500);
const CLIENTS = Number(process.env.CLIENTS ?? 100);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const CHANGES = Number(process.env.CHANGES ?? 30);
const NODES = 10;


const CRDS: [ResourceRef, string][] = [
  [{ groupVersion: 'security.istio.io/v1', plural: 'authorizationpolicies' }, 'AuthorizationPolicy'],
  [{ groupVersion: 'security.istio.io/v1', plural: 'peerauthentications' }, 'PeerAuthentication'],
  [{ groupVersion: 'gateway.networking.k8s.io/v1', plural: 'gateways' }, 'Gateway'],
  [{ groupVersion: 'gateway.networking.k8s.io/v1', plural: 'httproutes' }, 'HTTPRoute'],
  [{ groupVersion: 'gateway.networking.k8s.io/v1', plural: 'grpcroutes' }, 'GRPCRoute'],
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/** The synthetic cluster as the API server stores it. */
function populate(api: FakeApiServer, view: ClusterView): void {
  for (const [ref, kind] of CRDS) api.serve(ref, kind);
  for (const ns of view.namespaces.values()) api.upsert(NAMESPACES, ns as unknown as ApiObject, { notify: false });
  const lists: [ResourceRef, readonly unknown[]][] = [
    [PODS, view.pods],
    [SERVICES, view.services],
    [ENDPOINTSLICES, view.endpointSlices],
    [CRDS[0]![0], view.authorizationPolicies],
    [CRDS[1]![0], view.peerAuthentications],
    [CRDS[2]![0], view.gateways],
    [CRDS[3]![0], view.httpRoutes],
  ];
  for (const [ref, list] of lists) for (const obj of list) api.upsert(ref, obj as ApiObject, { notify: false });
}

/** What a benchmark client reads of a response: its nonce, type and resource names, nothing decoded further. */
function scan(bytes: Buffer): { typeUrl: string; nonce: string; names: string[] } {
  const r = new BinaryReader(bytes);
  let typeUrl = '';
  let nonce = '';
  const names: string[] = [];
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 2) {
      const inner = new BinaryReader(r.bytes());
      while (inner.pos < inner.len) {
        const [f, w] = inner.tag();
        if (f === 3) names.push(inner.string());
        else inner.skip(w);
      }
    } else if (field === 4) typeUrl = r.string();
    else if (field === 5) nonce = r.string();
    else r.skip(wireType);
  }
  return { typeUrl, nonce, names };
}

class BenchClient {
  readonly initial = new Set<string>();
  /** Resources in the initial responses (every type). */
  resources = 0;
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<Buffer, Buffer>;
  private watching: { name: string; resolve: () => void; reject: (err: Error) => void } | undefined;
  private onInitial: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private failed: Error | undefined;

  constructor(address: string, root: string, token: string, id: number) {
    this.client = new grpc.Client(address, grpc.credentials.createSsl(Buffer.from(root)), {
      'grpc.ssl_target_name_override': ISTIOD_NAME,
      'grpc.default_authority': ISTIOD_NAME,
      'grpc.max_receive_message_length': 200 << 20,
    });
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    this.call = this.client.makeBidiStreamRequest('/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources', (b: Buffer) => b, (b: Buffer) => b, md);
    this.call.on('data', (bytes: Buffer) => this.receive(bytes));
    this.call.on('error', (err: grpc.ServiceError) => {
      this.failed = new Error(`bench client ${id}: ${grpc.status[err.code]}: ${err.details}`);
      this.onInitial?.reject(this.failed);
      this.watching?.reject(this.failed);
    });
    const node = { id: `ztunnel~10.0.0.${id}~ztunnel-${id}.ambit-system~ambit-system.svc.cluster.local`, cluster: 'Kubernetes', metadata: undefined, userAgentName: 'bench' };
    for (const typeUrl of [ADDRESS_TYPE, AUTHORIZATION_TYPE]) {
      this.call.write(Buffer.from(DeltaDiscoveryRequest.encode({ node, typeUrl, resourceNamesSubscribe: [], resourceNamesUnsubscribe: [], initialResourceVersions: {}, responseNonce: '', errorDetail: undefined }).finish()));
    }
  }

  whenInitial(): Promise<void> {
    if (this.initial.size === 2) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => (this.onInitial = { resolve, reject }));
  }

  /** Resolves when a response carrying `name` arrives. */
  waitFor(name: string): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => (this.watching = { name, resolve, reject }));
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }

  private receive(bytes: Buffer): void {
    const { typeUrl, nonce, names } = scan(bytes);
    this.call.write(Buffer.from(DeltaDiscoveryRequest.encode({ node: undefined, typeUrl, resourceNamesSubscribe: [], resourceNamesUnsubscribe: [], initialResourceVersions: {}, responseNonce: nonce, errorDetail: undefined }).finish()));
    if (!this.initial.has(typeUrl)) {
      this.initial.add(typeUrl);
      this.resources += names.length;
      if (this.initial.size === 2) this.onInitial?.resolve();
    }
    if (this.watching && names.includes(this.watching.name)) {
      const w = this.watching;
      this.watching = undefined;
      w.resolve();
    }
  }
}

interface RoundResult {
  startMs: number;
  firstPushMs: number;
  resources: number;
  /** The control plane process after GC, with the clients connected and after they left. */
  withClients: ProcessMemory;
  alone: ProcessMemory;
  propagation: number[];
}

async function round(view: ClusterView, n: number): Promise<RoundResult> {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-bench-cp-'));
  const api = await FakeApiServer.start();
  populate(api, view);
  // One credential per client, as each ztunnel is a node of its own.
  const nodes = Array.from({ length: CLIENTS }, (_, i) => `node-${i + 1}`);
  NodeCredentials.create(join(dir, 'credentials'), nodes, 'cluster.local');
  const tokens = nodes.map((node) => readFileSync(NodeCredentials.tokenPath(join(dir, 'credentials'), node), 'utf8').trim());
  let cp: ControlPlaneProcess | undefined;
  const clients: BenchClient[] = [];
  try {
    const started = performance.now();
    cp = await ControlPlaneProcess.start({ apiUrl: api.url, dir, nodes });
    const address = `127.0.0.1:${cp.port}`;
    for (let i = 0; i < CLIENTS; i++) clients.push(new BenchClient(address, cp.root, tokens[i]!, i));
    await Promise.all(clients.map((c) => c.whenInitial()));
    const firstPushMs = performance.now() - started;
    const resources = clients[0]!.resources;
    const withClients = await cp.memory();

    const propagation: number[] = [];
    for (let c = 0; c < CHANGES; c++) {
      const pod = structuredClone(view.pods[(c * 7919 + n * 104729) % view.pods.length]!);
      pod.metadata.labels = { ...pod.metadata.labels, version: `bench-${n}-${c}` };
      const uid = `Kubernetes//Pod/${keyOf(pod)}`;
      const arrived = clients.map((cl) => cl.waitFor(uid).then(() => performance.now()));
      const t0 = performance.now();
      api.upsert(PODS, pod as unknown as ApiObject);
      for (const t of await Promise.all(arrived)) propagation.push(t - t0);
      await new Promise((r) => setTimeout(r, 50));
    }
    clients.forEach((c) => c.close());
    clients.length = 0;
    await new Promise((r) => setTimeout(r, 1000));
    const alone = await cp.memory();
    return { startMs: cp.startMs, firstPushMs, resources, withClients, alone, propagation };
  } finally {
    clients.forEach((c) => c.close());
    await cp?.stop();
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function modelAlone(view: ClusterView): { fullMs: number; podUpdateMs: number } {
  const full: number[] = [];
  for (let i = 0; i < 5; i++) {
    // A deep copy: new objects, so nothing memoized for an earlier build is reused.
    const copy = structuredClone(view);
    const t = performance.now();
    buildModel(copy, DEFAULT_MODEL_OPTIONS);
    full.push(performance.now() - t);
  }
  const model = new IncrementalModel(DEFAULT_MODEL_OPTIONS);
  model.update(view);
  const updates: number[] = [];
  let current = view;
  for (let i = 0; i < 50; i++) {
    const index = (i * 131) % current.pods.length;
    const pod = structuredClone(current.pods[index]!);
    pod.metadata.labels = { ...pod.metadata.labels, version: `m${i}` };
    current = { ...current, pods: current.pods.map((p, j) => (j === index ? pod : p)) };
    const t = performance.now();
    model.update(current);
    updates.push(performance.now() - t);
  }
  return { fullMs: median(full), podUpdateMs: median(updates) };
}

export async function main(): Promise<void> {
  const view = syntheticCluster({ namespaces: 50, pods: PODS_N, services: SERVICES_N, policies: POLICIES_N, nodes: NODES });
  console.log(`cluster: ${view.pods.length} pods, ${view.services.length} services, ${view.endpointSlices.length} EndpointSlices, ${view.authorizationPolicies.length} AuthorizationPolicies, ${view.peerAuthentications.length} PeerAuthentications, ${view.gateways.length} waypoints, ${view.httpRoutes.length} HTTPRoutes, ${view.namespaces.size} namespaces; ${CLIENTS} clients; ${ROUNDS} rounds of ${CHANGES} pod changes`);
  const model = modelAlone(view);
  const results: RoundResult[] = [];
  for (let n = 0; n < ROUNDS; n++) {
    const r = await round(view, n);
    results.push(r);
    console.log(`round ${n + 1}: start ${r.startMs.toFixed(0)} ms, first full push to ${CLIENTS} clients ${r.firstPushMs.toFixed(0)} ms (${r.resources} resources each), control plane heap ${r.withClients.heapMb.toFixed(0)} MB RSS ${r.withClients.rssMb.toFixed(0)} MB with the clients, heap ${r.alone.heapMb.toFixed(0)} MB RSS ${r.alone.rssMb.toFixed(0)} MB after, propagation p50 ${percentile(r.propagation, 50).toFixed(1)} ms p99 ${percentile(r.propagation, 99).toFixed(1)} ms`);
  }
  const all = results.flatMap((r) => r.propagation);
  const rows: [string, string][] = [
    ['model: full build of the view (median of 5)', `${model.fullMs.toFixed(0)} ms`],
    ['model: one pod changed, incremental (median of 50)', `${model.podUpdateMs.toFixed(2)} ms`],
    ['control plane start (lists of every kind, first model, cache)', `${median(results.map((r) => r.startMs)).toFixed(0)} ms`],
    [`first full push: start until ${CLIENTS} clients hold the initial state`, `${median(results.map((r) => r.firstPushMs)).toFixed(0)} ms`],
    [`control plane heap after GC, ${CLIENTS} clients connected`, `${median(results.map((r) => r.withClients.heapMb)).toFixed(0)} MB`],
    [`control plane RSS, ${CLIENTS} clients connected`, `${median(results.map((r) => r.withClients.rssMb)).toFixed(0)} MB`],
    ['control plane heap after GC, the clients gone', `${median(results.map((r) => r.alone.heapMb)).toFixed(0)} MB`],
    ['control plane RSS, the clients gone', `${median(results.map((r) => r.alone.rssMb)).toFixed(0)} MB`],
    [`one pod change to all ${CLIENTS} clients, p50 (${all.length} samples)`, `${percentile(all, 50).toFixed(1)} ms`],
    [`one pod change to all ${CLIENTS} clients, p99`, `${percentile(all, 99).toFixed(1)} ms`],
    ['... slowest', `${Math.max(...all).toFixed(1)} ms`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log('');
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
  const p99 = percentile(all, 99);
  const rss = Math.max(...results.map((r) => r.withClients.rssMb));
  console.log(`\ntargets: p99 propagation < 200 ms: ${p99 < 200 ? 'met' : 'MISSED'}; control plane memory (largest RSS) < 500 MB: ${rss < 500 ? 'met' : 'MISSED'}`);
}
