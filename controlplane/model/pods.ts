// Which pods are workloads, and their addresses, as istiod decides (workloads.go podWorkloadBuilder).

import type { Pod } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import { ipBytes } from '../../mesh/ip-text.js';
import { arr, isRecord, show } from './labels.js';
import { ofObject } from './memo.js';

export interface PodAddresses {
  /** Text and bytes of each address, primary first; empty when the pod has none yet. */
  ips: { text: string; bytes: Buffer }[];
  /** Set when an address is not an IP: the pod is left out (istiod does the same). */
  error?: string;
}

/** status.podIPs when it has entries, else status.podIP (istiod's getPodIPs). */
const addressesOf = ofObject((pod: Pod): PodAddresses => {
  const status: Record<string, unknown> = isRecord(pod.status) ? pod.status : {};
  const list = arr(status.podIPs);
  const entries: { field: string; value: unknown }[] = list.length > 0
    ? list.map((e, i) => ({ field: `status.podIPs[${i}].ip`, value: isRecord(e) ? e.ip : e }))
    : status.podIP === undefined || status.podIP === '' ? [] : [{ field: 'status.podIP', value: status.podIP }];
  const ips: PodAddresses['ips'] = [];
  for (const { field, value } of entries) {
    const bytes = ipBytes(value);
    if (!bytes) return { ips: [], error: `${field}: ${show(value)} is not an IP address; the pod is left out` };
    if (!ips.some((ip) => ip.text === value)) ips.push({ text: value as string, bytes });
  }
  return { ips };
});

export function podAddresses(pod: Pod, _ctx?: ModelContext): PodAddresses {
  return addressesOf(pod);
}

/** Succeeded or Failed: the pod will never run again (kubeutil.CheckPodTerminal). */
export function isTerminal(pod: Pod): boolean {
  const phase = isRecord(pod.status) ? pod.status.phase : undefined;
  return phase === 'Succeeded' || phase === 'Failed';
}

/** The pod becomes a Workload: not finished and networked with valid addresses. Terminating pods still are (UNHEALTHY). */
export function isWorkloadPod(pod: Pod, ctx: ModelContext): boolean {
  if (isTerminal(pod)) return false;
  const addresses = podAddresses(pod, ctx);
  return addresses.error === undefined && addresses.ips.length > 0;
}
