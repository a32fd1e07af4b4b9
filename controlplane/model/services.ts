// Kubernetes Services as istio.workload.Service (istio-ambient-spec.md §4.2).
import type { Service as WorkloadService } from '../../proto/gen/istio/workload/workload.js';
import type { Service } from '../../mesh/k8s/types.js';
import type { ModelContext } from './context.js';
import type { Translation } from './translation.js';

/** The service's resource, named `<namespace>/<hostname>`; no value for kinds ztunnel does not route (ExternalName). */
export function serviceResource(svc: Service, ctx: ModelContext): Translation<WorkloadService> {
  void svc; void ctx;
  // PLACEHOLDER until implemented (issue 4 work in progress).
  return { value: undefined, problems: [] };
}
