// Reading metadata and specs that may be anything: objects come from CRDs with loose schemas and
// from hand-written YAML, so every field is checked before use and a wrong type reads as absent.

import type { ObjectRef, Problem } from './types.js';

export type Labels = ReadonlyMap<string, string>;

const EMPTY_LABELS: Labels = new Map();

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The string entries of a labels or annotations map; entries of another type are not labels. */
export function stringMap(value: unknown): Labels {
  if (!isRecord(value)) return EMPTY_LABELS;
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out.set(k, v);
  return out;
}

// View objects are immutable, so their checked labels and annotations are kept per object.
const labelCache = new WeakMap<object, Labels>();
const annotationCache = new WeakMap<object, Labels>();

/** Labels of an object whose metadata may be malformed. */
export function labelsOf(obj: unknown): Labels {
  return metadataMap(obj, 'labels', labelCache);
}

export function annotationsOf(obj: unknown): Labels {
  return metadataMap(obj, 'annotations', annotationCache);
}

function metadataMap(obj: unknown, field: 'labels' | 'annotations', cache: WeakMap<object, Labels>): Labels {
  if (!isRecord(obj) || !isRecord(obj.metadata)) return EMPTY_LABELS;
  const raw = obj.metadata[field];
  if (!isRecord(raw)) return EMPTY_LABELS;
  let map = cache.get(raw);
  if (!map) {
    map = stringMap(raw);
    cache.set(raw, map);
  }
  return map;
}

export function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function arr(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** A TCP/UDP port number, 1-65535. */
export function portNumber(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535 ? value : undefined;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A name Kubernetes accepts for a Service, Namespace or Gateway (RFC 1123 label, 63 characters at most). */
export function isDns1123Label(value: string): boolean {
  return value.length <= 63 && DNS1123_LABEL.test(value);
}

/** JSON text of a value for messages, short enough for a log line. */
export function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export function objectRef(kind: string, obj: { metadata: { name: string; namespace?: string } }): ObjectRef {
  const out: ObjectRef = { kind, name: obj.metadata.name };
  if (obj.metadata.namespace !== undefined) out.namespace = obj.metadata.namespace;
  return out;
}

export function problem(object: ObjectRef, severity: Problem['severity'], message: string): Problem {
  return { object, severity, message };
}

export function namespaceOf(obj: { metadata: { namespace?: string } }): string {
  return typeof obj.metadata.namespace === 'string' && obj.metadata.namespace !== '' ? obj.metadata.namespace : 'default';
}

/**
 * A Kubernetes equality-based selector (Service spec.selector): every pair must be among the
 * labels. Callers treat an empty selector as selecting nothing, as Services do.
 */
export function selectorMatches(selector: readonly (readonly [string, string])[], labels: Labels): boolean {
  for (const [k, v] of selector) if (labels.get(k) !== v) return false;
  return true;
}
