// Which Services a pod belongs to, as indexes built once per model computation: by selector (an
// inverted index on one selector pair, so a pod looks at a handful of candidates instead of every
// service of its namespace) and, for services without a selector, by their EndpointSlices.

import type { EndpointSlice, Pod, Service } from '../../mesh/k8s/types.js';
import { SERVICE_NAME_LABEL } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { arr, isRecord, labelsOf, namespaceOf, portNumber, selectorMatches, str, type Labels } from './labels.js';
import { perView } from './memo.js';
import { servicePorts, type ServicePortSpec } from './ports.js';

export function serviceHostname(svc: Service, ctx: ModelContext): string {
  return `${svc.metadata.name}.${namespaceOf(svc)}.svc.${ctx.opts.domainSuffix}`;
}

/** `<namespace>/<hostname>`: the key of a Service in Workload.services and of its xDS resource. */
export function serviceKey(svc: Service, ctx: ModelContext): string {
  return `${namespaceOf(svc)}/${serviceHostname(svc, ctx)}`;
}

export function isExternalName(svc: Service): boolean {
  return isRecord(svc.spec) && svc.spec.type === 'ExternalName';
}

export type SelectorCheck =
  | { kind: 'selector'; pairs: [string, string][] }
  /** No selector (or an empty one): endpoints come from EndpointSlices someone else writes. */
  | { kind: 'none' }
  /** A selector that is not a map of strings: the service selects nothing (serviceResource reports it). */
  | { kind: 'invalid'; reason: string };

export function serviceSelector(svc: Service): SelectorCheck {
  const selector = isRecord(svc.spec) ? svc.spec.selector : undefined;
  if (selector === undefined || selector === null) return { kind: 'none' };
  if (!isRecord(selector)) return { kind: 'invalid', reason: 'is not a map of labels' };
  const pairs: [string, string][] = [];
  for (const [k, v] of Object.entries(selector)) {
    if (typeof v !== 'string') return { kind: 'invalid', reason: `value of ${JSON.stringify(k)} is not a string` };
    pairs.push([k, v]);
  }
  if (pairs.length === 0) return { kind: 'none' };
  pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { kind: 'selector', pairs };
}

export interface SelectingService {
  svc: Service;
  key: string;
  pairs: [string, string][];
  ports: ServicePortSpec[];
}

/** Per namespace, services by their first selector pair (`key\0value`). */
const selectorIndex = perView((ctx: ModelContext): ReadonlyMap<string, ReadonlyMap<string, SelectingService[]>> => {
  const out = new Map<string, Map<string, SelectingService[]>>();
  for (const svc of ctx.view.services) {
    // istiod builds no service for ExternalName, so it selects no pods either.
    if (isExternalName(svc)) continue;
    const selector = serviceSelector(svc);
    if (selector.kind !== 'selector') continue;
    const ns = namespaceOf(svc);
    let byPair = out.get(ns);
    if (!byPair) out.set(ns, (byPair = new Map()));
    const [k, v] = selector.pairs[0]!;
    const entry: SelectingService = { svc, key: serviceKey(svc, ctx), pairs: selector.pairs, ports: servicePorts(svc).ports };
    const bucket = byPair.get(`${k}\0${v}`);
    if (bucket) bucket.push(entry);
    else byPair.set(`${k}\0${v}`, [entry]);
  }
  return out;
});

/** The services of the pod's namespace whose selector matches its labels, in view order. */
export function selectingServices(pod: Pod, labels: Labels, ctx: ModelContext): SelectingService[] {
  const byPair = selectorIndex(ctx).get(namespaceOf(pod));
  if (!byPair) return [];
  const out: SelectingService[] = [];
  for (const [k, v] of labels) {
    const bucket = byPair.get(`${k}\0${v}`);
    if (!bucket) continue;
    for (const s of bucket) if (selectorMatches(s.pairs, labels)) out.push(s);
  }
  return out;
}

/** One service port as an EndpointSlice gives it for an endpoint: service port -> the endpoint's port. */
export interface SlicePort {
  servicePort: number;
  targetPort: number;
}

export interface SliceMembership {
  svc: Service;
  key: string;
  ports: SlicePort[];
}

/**
 * The slice's ports joined with the service's ports by name (as istiod's endpointSlicesBuilder):
 * TCP only, each giving the port the endpoints listen on for one service port.
 */
export function slicePorts(slice: EndpointSlice, svc: Service): SlicePort[] {
  const ports = servicePorts(svc).ports;
  const out: SlicePort[] = [];
  for (const p of arr(slice.ports)) {
    if (!isRecord(p)) continue;
    const port = portNumber(p.port);
    if (port === undefined) continue;
    if (p.protocol !== undefined && p.protocol !== 'TCP') continue;
    const name = str(p.name) ?? '';
    const svcPort = ports.find((sp) => sp.name === name);
    if (svcPort && !out.some((o) => o.servicePort === svcPort.port)) out.push({ servicePort: svcPort.port, targetPort: port });
  }
  return out;
}

/** The Service an EndpointSlice belongs to (label kubernetes.io/service-name), when the view has it and ztunnel routes it. */
export function sliceService(slice: EndpointSlice, ctx: ModelContext): Service | undefined {
  const name = labelsOf(slice).get(SERVICE_NAME_LABEL);
  if (name === undefined) return undefined;
  const svc = ctx.services.get(`${namespaceOf(slice)}/${name}`);
  return svc && !isExternalName(svc) ? svc : undefined;
}

export function isFqdnSlice(slice: EndpointSlice): boolean {
  return slice.addressType === 'FQDN';
}

export function isPodTargetRef(endpoint: Record<string, unknown>): boolean {
  return isRecord(endpoint.targetRef) && endpoint.targetRef.kind === 'Pod';
}

/** An endpoint's Pod targetRef: `<namespace>/<name>` and the uid when it names one. */
function podTarget(endpoint: Record<string, unknown>, slice: EndpointSlice): { key: string; uid: string | undefined } | undefined {
  const ref = endpoint.targetRef;
  if (!isRecord(ref) || ref.kind !== 'Pod' || typeof ref.name !== 'string') return undefined;
  const namespace = typeof ref.namespace === 'string' ? ref.namespace : namespaceOf(slice);
  return { key: `${namespace}/${ref.name}`, uid: typeof ref.uid === 'string' ? ref.uid : undefined };
}

interface TargetedMembership extends SliceMembership {
  uid: string | undefined;
}

/**
 * For each pod named by a Pod targetRef (`<namespace>/<name>`), the selector-less services whose
 * EndpointSlices list it, with the ports those slices give. As istiod, only targetRefs count: a pod
 * is never merged with an endpoint by address alone (that endpoint becomes a workload of its
 * own). Services with a selector are matched by selector instead. Built from slices and services
 * only, so a pod change does not rebuild it.
 */
const sliceMemberships = perView((ctx: ModelContext): ReadonlyMap<string, TargetedMembership[]> => {
  const out = new Map<string, TargetedMembership[]>();
  for (const slice of ctx.view.endpointSlices) {
    if (isFqdnSlice(slice)) continue;
    const svc = sliceService(slice, ctx);
    if (!svc || serviceSelector(svc).kind !== 'none') continue;
    const key = serviceKey(svc, ctx);
    const ports = slicePorts(slice, svc);
    for (const endpoint of arr(slice.endpoints)) {
      if (!isRecord(endpoint)) continue;
      const target = podTarget(endpoint, slice);
      if (!target) continue;
      let list = out.get(target.key);
      if (!list) out.set(target.key, (list = []));
      const existing = list.find((m) => m.key === key && m.uid === target.uid);
      if (!existing) {
        list.push({ svc, key, ports: [...ports], uid: target.uid });
        continue;
      }
      // The same service in two slices (IPv4 and IPv6): one entry, ports merged.
      for (const p of ports) if (!existing.ports.some((e) => e.servicePort === p.servicePort)) existing.ports.push(p);
    }
  }
  return out;
});

export function podSliceMemberships(pod: Pod, ctx: ModelContext): readonly SliceMembership[] {
  const entries = sliceMemberships(ctx).get(`${namespaceOf(pod)}/${pod.metadata.name}`);
  if (!entries) return [];
  // A targetRef with a uid names one incarnation of the pod: a recreated pod of the same name is not it.
  const uid = typeof pod.metadata.uid === 'string' ? pod.metadata.uid : undefined;
  const out: SliceMembership[] = [];
  for (const e of entries) {
    if (e.uid !== undefined && uid !== undefined && e.uid !== uid) continue;
    const existing = out.find((m) => m.key === e.key);
    if (!existing) out.push({ svc: e.svc, key: e.key, ports: [...e.ports] });
    else for (const p of e.ports) if (!existing.ports.some((x) => x.servicePort === p.servicePort)) existing.ports.push(p);
  }
  return out;
}
