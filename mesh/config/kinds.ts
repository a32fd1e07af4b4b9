// The Kubernetes kinds Ambit reads, where each lives in the API, and which view list it fills.
// The file source, the Kubernetes source and the test loaders all classify objects through this
// one table, so a kind or version accepted by one is accepted by all.

import type { ClusterView, ViewList } from './view.js';
import { byKey, emptyView } from './view.js';

export interface KindInfo {
  kind: string;
  group: string;
  /** Served versions Ambit understands, preferred first (the Kubernetes source lists the first one the server serves). */
  versions: readonly string[];
  plural: string;
  /** The view list it fills; undefined for Namespace (the view's map). */
  list: ViewList | undefined;
  /**
   * Whether Ambit reads the kind's status (a pod's IP, a gateway's addresses). When it does not,
   * a change of status alone (the control plane's own policy status, another controller's route
   * status) is no change of the view.
   */
  statusRead: boolean;
}

export const KINDS: readonly KindInfo[] = [
  { kind: 'Namespace', group: '', versions: ['v1'], plural: 'namespaces', list: undefined, statusRead: true },
  { kind: 'Pod', group: '', versions: ['v1'], plural: 'pods', list: 'pods', statusRead: true },
  { kind: 'Service', group: '', versions: ['v1'], plural: 'services', list: 'services', statusRead: true },
  { kind: 'EndpointSlice', group: 'discovery.k8s.io', versions: ['v1'], plural: 'endpointslices', list: 'endpointSlices', statusRead: false },
  { kind: 'AuthorizationPolicy', group: 'security.istio.io', versions: ['v1', 'v1beta1'], plural: 'authorizationpolicies', list: 'authorizationPolicies', statusRead: false },
  { kind: 'PeerAuthentication', group: 'security.istio.io', versions: ['v1', 'v1beta1'], plural: 'peerauthentications', list: 'peerAuthentications', statusRead: false },
  { kind: 'Gateway', group: 'gateway.networking.k8s.io', versions: ['v1', 'v1beta1'], plural: 'gateways', list: 'gateways', statusRead: true },
  { kind: 'HTTPRoute', group: 'gateway.networking.k8s.io', versions: ['v1', 'v1beta1'], plural: 'httproutes', list: 'httpRoutes', statusRead: false },
  { kind: 'GRPCRoute', group: 'gateway.networking.k8s.io', versions: ['v1'], plural: 'grpcroutes', list: 'grpcRoutes', statusRead: false },
];

/** What the node agent (and ztunnel) read: namespaces for enrollment, and pods. The sources' default. */
export const NODE_KINDS: readonly KindInfo[] = KINDS.filter((k) => k.kind === 'Namespace' || k.kind === 'Pod');

/** The entry of a kind by name. */
export function kindInfo(kind: string): KindInfo | undefined {
  return KINDS.find((k) => k.kind === kind);
}

export function apiVersionOf(info: KindInfo, version: string): string {
  return info.group === '' ? version : `${info.group}/${version}`;
}

/** The kind's entry when `apiVersion` is one Ambit understands for it. */
export function kindOf(apiVersion: unknown, kind: unknown): KindInfo | undefined {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return undefined;
  const info = KINDS.find((k) => k.kind === kind);
  if (!info) return undefined;
  return info.versions.some((v) => apiVersionOf(info, v) === apiVersion) ? info : undefined;
}

/** Kinds of an API group Ambit reads, but at a version it does not: worth an error, not silence. */
export function isUnsupportedVersion(apiVersion: unknown, kind: unknown): boolean {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return false;
  const info = KINDS.find((k) => k.kind === kind);
  if (!info) return false;
  const group = apiVersion.includes('/') ? apiVersion.slice(0, apiVersion.indexOf('/')) : '';
  return group === info.group && kindOf(apiVersion, kind) === undefined;
}

/**
 * A view from plain objects (as the API server returns them, status included). Objects of other
 * kinds are ignored; objects of a known kind without metadata.name are returned as rejected.
 */
export function viewFromObjects(objects: readonly unknown[]): { view: ClusterView; rejected: string[] } {
  const view = emptyView();
  const namespaces = new Map<string, never>();
  const lists = new Map<ViewList, unknown[]>();
  const rejected: string[] = [];
  for (const obj of objects) {
    if (obj === null || typeof obj !== 'object') continue;
    const raw = obj as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
    const info = kindOf(raw.apiVersion, raw.kind);
    if (!info) continue;
    if (typeof raw.metadata?.name !== 'string' || raw.metadata.name === '') {
      rejected.push(`${String(raw.kind)} without metadata.name`);
      continue;
    }
    if (info.list === undefined) {
      namespaces.set(raw.metadata.name, obj as never);
      continue;
    }
    const copy = { ...raw, metadata: { ...raw.metadata, namespace: typeof raw.metadata.namespace === 'string' ? raw.metadata.namespace : 'default' } };
    lists.set(info.list, [...(lists.get(info.list) ?? []), copy]);
  }
  const out = { ...view, namespaces } as unknown as Record<string, unknown>;
  for (const [list, items] of lists) out[list] = (items as { metadata: { name: string; namespace?: string } }[]).sort(byKey);
  return { view: out as unknown as ClusterView, rejected };
}
