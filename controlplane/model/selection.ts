// Which Services a pod belongs to, as indexes built once per model computation: by selector (an
// inverted index on one selector pair, so a pod looks at a handful of candidates instead of every
// service of its namespace) and, for services without a selector, by their EndpointSlices.

import type { EndpointSlice, Pod, Service } from '../../mesh/k8s/types.js';
import { SERVICE_NAME_LABEL } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { arr, isRecord, labelsOf, namespaceOf, portNumber, selectorMatches, str, type Labels } from './labels.js';
import { perContext } from './memo.js';
import { workloadPodsByIp } from './pods.js';
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
const selectorIndex = perContext((ctx: ModelContext): ReadonlyMap<string, ReadonlyMap<string, SelectingService[]>> => {
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

/**
 * The pod an endpoint stands for: its targetRef when that is a Pod (by namespace and name, and
 * uid when both have one), else the pod owning its first address. A targetRef to a pod the view
 * does not know stands for no pod.
 */
export function endpointPod(endpoint: Record<string, unknown>, slice: EndpointSlice, ctx: ModelContext): Pod | undefined {
  const ref = endpoint.targetRef;
  if (isRecord(ref) && ref.kind !== undefined) {
    if (ref.kind !== 'Pod' || typeof ref.name !== 'string') return undefined;
    const namespace = typeof ref.namespace === 'string' ? ref.namespace : namespaceOf(slice);
    const pod = podsByKey(ctx).get(`${namespace}/${ref.name}`);
    if (pod && typeof ref.uid === 'string' && typeof pod.metadata.uid === 'string' && ref.uid !== pod.metadata.uid) return undefined;
    return pod;
  }
  const first = arr(endpoint.addresses)[0];
  return typeof first === 'string' ? workloadPodsByIp(ctx).get(first) : undefined;
}

export function isPodTargetRef(endpoint: Record<string, unknown>): boolean {
  return isRecord(endpoint.targetRef) && endpoint.targetRef.kind === 'Pod';
}

const podsByKey = perContext((ctx: ModelContext): ReadonlyMap<string, Pod> => new Map(ctx.view.pods.map((p) => [`${namespaceOf(p)}/${p.metadata.name}`, p])));

/**
 * For each pod (by object), the selector-less services whose EndpointSlices list it, with the
 * ports those slices give. Services with a selector are matched by selector instead (istiod).
 */
const sliceMemberships = perContext((ctx: ModelContext): ReadonlyMap<Pod, SliceMembership[]> => {
  const out = new Map<Pod, SliceMembership[]>();
  for (const slice of ctx.view.endpointSlices) {
    if (isFqdnSlice(slice)) continue;
    const svc = sliceService(slice, ctx);
    if (!svc || serviceSelector(svc).kind !== 'none') continue;
    const key = serviceKey(svc, ctx);
    const ports = slicePorts(slice, svc);
    for (const endpoint of arr(slice.endpoints)) {
      if (!isRecord(endpoint)) continue;
      const pod = endpointPod(endpoint, slice, ctx);
      if (!pod) continue;
      let list = out.get(pod);
      if (!list) out.set(pod, (list = []));
      const existing = list.find((m) => m.key === key);
      if (!existing) {
        list.push({ svc, key, ports: [...ports] });
        continue;
      }
      // The same service in two slices (IPv4 and IPv6): one entry, ports merged.
      for (const p of ports) if (!existing.ports.some((e) => e.servicePort === p.servicePort)) existing.ports.push(p);
    }
  }
  return out;
});

export function podSliceMemberships(pod: Pod, ctx: ModelContext): readonly SliceMembership[] {
  return sliceMemberships(ctx).get(pod) ?? [];
}
