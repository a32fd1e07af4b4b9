// Pods and selector-less EndpointSlice endpoints as istio.workload.Workload (istio-ambient-spec.md
// §4.2, §5), following istiod's pilot/pkg/serviceregistry/kube/controller/ambient/workloads.go.
import {
  NetworkMode,
  PortList,
  TunnelProtocol,
  Workload,
  WorkloadStatus,
  WorkloadType,
} from '../../proto/gen/istio/workload/workload.js';
import type { EndpointSlice, Pod } from '../../mesh/k8s/types.js';
import { REDIRECTION_ANNOTATION } from '../../mesh/k8s/types.js';
import { OWNER_ANNOTATION } from '../../mesh/k8s/manifest.js';
import { DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN } from '../../mesh/identity/spiffe.js';
import type { ModelContext } from './context.js';
import { ipBytes } from '../../mesh/ip-text.js';
import { annotationsOf, arr, isRecord, labelsOf, namespaceOf, objectRef, show, str, type Labels } from './labels.js';
import { isTerminal, podAddresses } from './pods.js';
import { namedContainerPort } from './ports.js';
import { workloadPolicies } from './policy-selection.js';
import { isFqdnSlice, isPodTargetRef, podSliceMemberships, selectingServices, serviceKey, slicePorts, sliceService } from './selection.js';
import type { Translation } from './translation.js';
import type { Problem } from './types.js';
import { podWaypoint } from './waypoint-binding.js';

export const CANONICAL_NAME_LABELS = ['service.istio.io/canonical-name', 'app.kubernetes.io/name', 'app'] as const;
export const CANONICAL_REVISION_LABELS = ['service.istio.io/canonical-revision', 'app.kubernetes.io/version', 'version'] as const;
/** Istio's override of the heuristic workload name. */
export const WORKLOAD_NAME_LABEL = 'service.istio.io/workload-name';
/** `http`: the workload speaks HBONE itself (istiod's model.SupportsTunnel). */
export const TUNNEL_LABEL = 'networking.istio.io/tunnel';
const REDIRECTION_ENABLED = 'enabled';
// A Job a CronJob created: `<cronjob>-<8 to 10 digit schedule time>` (istiod's cronJobNameRegexp).
const CRONJOB_JOB_NAME = /^(.+)-\d{8,10}$/;

export function podUid(pod: Pod, ctx: ModelContext): string {
  return `${ctx.opts.clusterId}//Pod/${namespaceOf(pod)}/${pod.metadata.name}`;
}

/** istiod sends an empty trust domain for cluster.local (ztunnel's default). */
export function workloadTrustDomain(ctx: ModelContext): string {
  return ctx.opts.trustDomain === DEFAULT_TRUST_DOMAIN ? '' : ctx.opts.trustDomain;
}

/** The pod's Workload; no value for pods that are not networked (no IP) or finished. */
export function podWorkload(pod: Pod, ctx: ModelContext): Translation<Workload> {
  if (isTerminal(pod)) return { value: undefined, problems: [] };
  const addresses = podAddresses(pod, ctx);
  if (addresses.error) return { value: undefined, problems: [{ object: objectRef('Pod', pod), severity: 'error', message: addresses.error }] };
  if (addresses.ips.length === 0) return { value: undefined, problems: [] };

  const problems: Problem[] = [];
  const labels = labelsOf(pod);
  const annotations = annotationsOf(pod);
  const spec: Record<string, unknown> = isRecord(pod.spec) ? pod.spec : {};
  const owner = workloadOwner(pod, labels, annotations, problems);
  const waypoint = podWaypoint(pod, ctx);
  problems.push(...waypoint.problems);
  // Istio's readiness: the Ready condition; a pod being deleted is no longer an endpoint.
  const ready = podReady(pod) && (pod.metadata.deletionTimestamp === undefined || pod.metadata.deletionTimestamp === null);

  // Built from scalars, lists and maps set after: fromPartial would deep-copy them (10,000 pods).
  const w = Workload.fromPartial({
    uid: podUid(pod, ctx),
    name: pod.metadata.name,
    namespace: namespaceOf(pod),
    network: ctx.opts.network,
    trustDomain: workloadTrustDomain(ctx),
    serviceAccount: str(spec.serviceAccountName) || DEFAULT_SERVICE_ACCOUNT,
    node: str(spec.nodeName) ?? '',
    canonicalName: firstLabel(labels, CANONICAL_NAME_LABELS) ?? owner.name,
    canonicalRevision: firstLabel(labels, CANONICAL_REVISION_LABELS) ?? 'latest',
    workloadType: owner.type,
    workloadName: owner.name,
    status: ready ? WorkloadStatus.HEALTHY : WorkloadStatus.UNHEALTHY,
    clusterId: ctx.opts.clusterId,
    networkMode: spec.hostNetwork === true ? NetworkMode.HOST_NETWORK : NetworkMode.STANDARD,
  });
  w.addresses = addresses.ips.map((ip) => ip.bytes);
  w.services = podServices(pod, labels, ctx);
  w.authorizationPolicies = workloadPolicies(pod, ctx);
  if (waypoint.value) w.waypoint = waypoint.value.address;
  setTunnelProtocol(w, labels, annotations);
  return { value: w, problems };
}

function firstLabel(labels: Labels, keys: readonly string[]): string | undefined {
  // Presence counts, as in istiod: an empty value is still the value.
  for (const key of keys) {
    const value = labels.get(key);
    if (value !== undefined) return value;
  }
  return undefined;
}

function podReady(pod: Pod): boolean {
  const conditions = isRecord(pod.status) ? arr(pod.status.conditions) : [];
  const ready = conditions.find((c) => isRecord(c) && c.type === 'Ready');
  return isRecord(ready) && ready.status === 'True';
}

/**
 * istiod's setTunnelProtocol: HBONE once the node agent confirmed redirection (annotation
 * `enabled`), and native HBONE for workloads labelled networking.istio.io/tunnel=http.
 */
function setTunnelProtocol(w: Workload, labels: Labels, annotations: Labels): void {
  w.tunnelProtocol = annotations.get(REDIRECTION_ANNOTATION) === REDIRECTION_ENABLED ? TunnelProtocol.HBONE : TunnelProtocol.NONE;
  const tunnel = labels.get(TUNNEL_LABEL);
  if (tunnel !== undefined && tunnel.split(',').includes('http')) {
    w.tunnelProtocol = TunnelProtocol.HBONE;
    w.nativeTunnel = true;
  }
}

interface Owner {
  type: WorkloadType;
  name: string;
}

/**
 * The workload a pod belongs to (istiod's GetWorkloadMetaFromPod): its controller owner when the
 * pod's name was generated, a ReplicaSet with the pod-template-hash suffix standing for its
 * Deployment and a Job with a CronJob's timestamp suffix for the CronJob; the lab's
 * ambit.dev/owner annotation for pods it expanded from a Deployment; else the pod itself. Label
 * service.istio.io/workload-name overrides the name.
 */
function workloadOwner(pod: Pod, labels: Labels, annotations: Labels, problems: Problem[]): Owner {
  let owner: Owner = { type: WorkloadType.POD, name: pod.metadata.name };
  const meta = pod.metadata as unknown as Record<string, unknown>;
  const controller = arr(meta.ownerReferences).find((r) => isRecord(r) && r.controller === true);
  const generated = typeof meta.generateName === 'string' && meta.generateName !== '';
  if (generated && isRecord(controller) && typeof controller.kind === 'string' && typeof controller.name === 'string' && controller.name !== '') {
    owner = { type: WorkloadType.POD, name: controller.name };
    const hash = labels.get('pod-template-hash');
    if (controller.kind === 'ReplicaSet' && hash && controller.name.endsWith(`-${hash}`)) {
      owner = { type: WorkloadType.DEPLOYMENT, name: controller.name.slice(0, -(hash.length + 1)) };
    } else if (controller.kind === 'Job') {
      const cron = CRONJOB_JOB_NAME.exec(controller.name);
      owner = cron ? { type: WorkloadType.CRONJOB, name: cron[1]! } : { type: WorkloadType.JOB, name: controller.name };
    }
  } else {
    const annotation = annotations.get(OWNER_ANNOTATION);
    if (annotation !== undefined) {
      const [kind, name, extra] = annotation.split('/');
      if (kind === 'Deployment' && name && extra === undefined) owner = { type: WorkloadType.DEPLOYMENT, name };
      else problems.push({ object: objectRef('Pod', pod), severity: 'warning', message: `metadata.annotations[${OWNER_ANNOTATION}]: ${show(annotation)} is not "Deployment/<name>"; the pod is its own workload` });
    }
  }
  const override = labels.get(WORKLOAD_NAME_LABEL);
  if (override !== undefined) owner.name = override;
  return owner;
}

/**
 * `<namespace>/<hostname>` of every service the pod serves, with the ports it serves them on:
 * selector services of its namespace (a named target port resolved through this pod's containers;
 * a name the pod does not have leaves the port out, as Kubernetes endpoints do), and selector-less
 * services whose EndpointSlices list the pod (with the ports the slices give).
 *
 * Deviation from istiod: for a pod in a selector-less service's EndpointSlice, istiod takes the
 * ports from the Service (its targetPort, a named one resolved through the pod's containers).
 * Ambit takes each port from the slice, joined to the service port by name: whoever writes the
 * slice of a selector-less service says where the endpoints listen, and the Service's targetPort
 * is not used by Kubernetes for such a service either (kube-proxy routes to the slice's ports).
 */
function podServices(pod: Pod, labels: Labels, ctx: ModelContext): { [key: string]: PortList } {
  const out: { [key: string]: PortList } = {};
  for (const s of selectingServices(pod, labels, ctx)) {
    const ports: PortList['ports'] = [];
    for (const p of s.ports) {
      const targetPort = p.targetPortName === '' ? p.targetPort : namedContainerPort(pod, p.targetPortName);
      if (targetPort === undefined) continue;
      ports.push({ servicePort: p.port, targetPort, appProtocol: 0 });
    }
    out[s.key] = { ports };
  }
  for (const m of podSliceMemberships(pod, ctx)) {
    if (out[m.key]) continue;
    out[m.key] = { ports: m.ports.map((p) => ({ servicePort: p.servicePort, targetPort: p.targetPort, appProtocol: 0 })) };
  }
  return out;
}

/**
 * Workloads for the endpoints of a slice that do not name a Pod (addresses someone put in the
 * slice of a service, typically one without a selector); as istiod, an endpoint is never matched
 * to a pod by its address. Like istiod: HOST_NETWORK (the
 * address may be shared), no identity, no waypoint, health from conditions.ready.
 */
export function endpointSliceWorkloads(slice: EndpointSlice, ctx: ModelContext): Translation<Workload[]> {
  if (isFqdnSlice(slice)) return { value: [], problems: [] };
  const svc = sliceService(slice, ctx);
  if (!svc) return { value: [], problems: [] };
  const problems: Problem[] = [];
  const key = serviceKey(svc, ctx);
  const services = { [key]: PortList.fromPartial({ ports: slicePorts(slice, svc) }) };
  const seen = new Set<string>();
  const out: Workload[] = [];
  const ns = namespaceOf(slice);
  arr(slice.endpoints).forEach((endpoint, i) => {
    if (!isRecord(endpoint)) {
      problems.push({ object: objectRef('EndpointSlice', slice), severity: 'error', message: `endpoints[${i}]: ${show(endpoint)} is not an endpoint; left out` });
      return;
    }
    // Pods are workloads of their own, with far more to say (identity, waypoint, policies).
    if (isPodTargetRef(endpoint)) return;
    const texts = arr(endpoint.addresses);
    if (texts.length === 0) return;
    const addresses = texts.map(ipBytes);
    const bad = addresses.findIndex((a) => a === undefined);
    if (bad >= 0) {
      problems.push({ object: objectRef('EndpointSlice', slice), severity: 'error', message: `endpoints[${i}].addresses[${bad}]: ${show(texts[bad])} is not an IP address; the endpoint is left out` });
      return;
    }
    const first = texts[0] as string;
    if (seen.has(first)) {
      problems.push({ object: objectRef('EndpointSlice', slice), severity: 'warning', message: `endpoints[${i}]: address ${first} is listed twice; the first is used` });
      return;
    }
    seen.add(first);
    const conditions = isRecord(endpoint.conditions) ? endpoint.conditions : {};
    const ready = (conditions as Record<string, unknown>).ready;
    out.push(Workload.fromPartial({
      uid: `${ctx.opts.clusterId}/discovery.k8s.io/EndpointSlice/${ns}/${slice.metadata.name}/${first}`,
      name: slice.metadata.name,
      namespace: ns,
      addresses: addresses as Buffer[],
      network: ctx.opts.network,
      trustDomain: workloadTrustDomain(ctx),
      services,
      // Kubernetes: an endpoint without a ready condition is ready.
      status: ready === undefined || ready === null || ready === true ? WorkloadStatus.HEALTHY : WorkloadStatus.UNHEALTHY,
      clusterId: ctx.opts.clusterId,
      networkMode: NetworkMode.HOST_NETWORK,
    }));
  });
  return { value: out, problems };
}
