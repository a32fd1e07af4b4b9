// Pods and selector-less EndpointSlice endpoints as istio.workload.Workload (istio-ambient-spec.md §4.2, §5).
import type { Workload } from '../../proto/gen/istio/workload/workload.js';
import type { EndpointSlice, Pod } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import type { Translation } from './translation.js';

/** The pod's Workload; no value for pods that are not networked (no IP) or finished. */
export function podWorkload(pod: Pod, ctx: ModelContext): Translation<Workload> {
  void pod; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { value: undefined, problems: [] };
}

/** Workloads for the endpoints of a slice that are not pods the view knows (services without selectors). */
export function endpointSliceWorkloads(slice: EndpointSlice, ctx: ModelContext): Translation<Workload[]> {
  void slice; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { value: [], problems: [] };
}
