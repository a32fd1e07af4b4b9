// Objects as the API server (or a file) gives them, made into the objects of a view: apiVersion and
// kind set (list items lack them), managedFields dropped (large, and nothing reads them), and the
// few fields every consumer relies on checked, so that one unusable object is reported and left
// out instead of failing a whole translation.

import type { ContainerPort } from '../../k8s/types.js';
import type { KindInfo } from '../kinds.js';
import { canonicalJson } from './canonical.js';

/** Any object of a view: what all kinds have in common. */
export interface ViewObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [field: string]: unknown };
  [field: string]: unknown;
}

/** Kinds whose objects have a spec; for those in SPEC_DEFAULTS an absent spec means an empty one. */
const HAS_SPEC = new Set(['Pod', 'Service', 'AuthorizationPolicy', 'PeerAuthentication', 'Gateway', 'HTTPRoute', 'GRPCRoute']);
// An AuthorizationPolicy with an empty spec is meaningful (ALLOW nothing: deny all of its scope).
const SPEC_DEFAULTS = new Set(['AuthorizationPolicy', 'PeerAuthentication']);

const PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP']);

/** `Kind ns/name` (or `Kind name` for cluster-scoped kinds), as far as the object says. */
export function describeRaw(info: KindInfo, raw: unknown): string {
  const meta = isRecord(raw) && isRecord(raw.metadata) ? raw.metadata : {};
  const name = typeof meta.name === 'string' && meta.name !== '' ? meta.name : '<no name>';
  if (info.list === undefined) return `${info.kind} ${name}`;
  return `${info.kind} ${typeof meta.namespace === 'string' ? meta.namespace : 'default'}/${name}`;
}

/** The object's key within its kind: `ns/name`, or the name of a Namespace; undefined without a name. */
export function rawKey(info: KindInfo, raw: unknown): string | undefined {
  const meta = isRecord(raw) && isRecord(raw.metadata) ? raw.metadata : undefined;
  if (!meta || typeof meta.name !== 'string' || meta.name === '') return undefined;
  if (info.list === undefined) return meta.name;
  return `${typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default'}/${meta.name}`;
}

/**
 * The view's object for `raw`, served at `apiVersion`; a phrase saying why when it is unusable.
 * Shallow: the parts not touched are the input's own (the informer's objects are not copied).
 */
export function toViewObject(info: KindInfo, apiVersion: string, raw: unknown): ViewObject | string {
  if (!isRecord(raw)) return `must be an object, got ${show(raw)}`;
  if (!isRecord(raw.metadata)) return 'metadata: must be a map';
  const { managedFields: _managedFields, ...metadata } = raw.metadata;
  if (typeof metadata.name !== 'string' || metadata.name === '') return 'metadata.name: is required';
  const name = metadata.name;
  if (info.list !== undefined && (typeof metadata.namespace !== 'string' || metadata.namespace === '')) metadata.namespace = 'default';
  const out: ViewObject = { ...raw, apiVersion, kind: info.kind, metadata: { ...metadata, name } };
  if (HAS_SPEC.has(info.kind)) {
    if ((raw.spec === undefined || raw.spec === null) && SPEC_DEFAULTS.has(info.kind)) out.spec = {};
    else if (!isRecord(raw.spec)) return `spec: must be a map, got ${show(raw.spec)}`;
  }
  switch (info.kind) {
    case 'Pod':
      return podObject(out);
    case 'Service': {
      const spec = out.spec as Record<string, unknown>;
      // Headless and ExternalName services may have no ports; consumers iterate them.
      if (spec.ports === undefined || spec.ports === null) out.spec = { ...spec, ports: [] };
      else if (!Array.isArray(spec.ports)) return `spec.ports: must be a list, got ${show(spec.ports)}`;
      return out;
    }
    case 'EndpointSlice':
      if (typeof raw.addressType !== 'string') return `addressType: must be a string, got ${show(raw.addressType)}`;
      // The API server sends `endpoints: null` for a slice without endpoints.
      if (raw.endpoints === undefined || raw.endpoints === null) out.endpoints = [];
      else if (!Array.isArray(raw.endpoints)) return `endpoints: must be a list, got ${show(raw.endpoints)}`;
      return out;
    default:
      return out;
  }
}

/** The one loosely typed pod field Ambit reads (a port's protocol) narrowed. */
function podObject(out: ViewObject): ViewObject | string {
  const spec = out.spec as Record<string, unknown>;
  if (!Array.isArray(spec.containers)) return `spec.containers: must be a list, got ${show(spec.containers)}`;
  const containers = spec.containers.map((c: unknown) => {
    if (!isRecord(c) || !Array.isArray(c.ports)) return c;
    return { ...c, ports: c.ports.map((p: unknown) => (isRecord(p) ? { ...p, protocol: toProtocol(p.protocol) } : p)) };
  });
  return { ...out, spec: { ...spec, containers } };
}

function toProtocol(protocol: unknown): ContainerPort['protocol'] {
  return typeof protocol === 'string' && PROTOCOLS.has(protocol) ? (protocol as ContainerPort['protocol']) : undefined;
}

/**
 * What decides whether an object changed: its content without resourceVersion (bumped by any
 * write) and, for kinds whose status Ambit does not read, without status.
 */
export function fingerprint(info: KindInfo, obj: ViewObject): string {
  const { resourceVersion: _resourceVersion, ...metadata } = obj.metadata;
  const { status, ...rest } = obj;
  return canonicalJson(info.statusRead ? { ...rest, status, metadata } : { ...rest, metadata });
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  return JSON.stringify(value) ?? String(value);
}
