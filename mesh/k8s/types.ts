// The subset of Kubernetes object shapes Ambit reads. Field names are the Kubernetes API's own so
// that objects from a YAML file and from the API server are the same values.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface ContainerPort {
  containerPort: number;
  name?: string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
}

export interface Container {
  name: string;
  image?: string;
  ports?: ContainerPort[];
}

export interface PodSpec {
  nodeName?: string;
  hostNetwork?: boolean;
  serviceAccountName?: string;
  containers: Container[];
}

export interface PodStatus {
  phase?: string;
  podIP?: string;
  podIPs?: { ip: string }[];
}

export interface Pod {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: ObjectMeta;
  spec: PodSpec;
  status?: PodStatus;
}

export interface Namespace {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
}

export interface ServicePort {
  name?: string;
  port: number;
  /** A number, or the name of a container port. Defaults to `port`. */
  targetPort?: number | string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
}

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec: {
    selector?: Record<string, string>;
    ports: ServicePort[];
    clusterIP?: string;
    type?: string;
  };
}

export interface Deployment {
  apiVersion: 'apps/v1';
  kind: 'Deployment';
  metadata: ObjectMeta;
  spec: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> };
    template: { metadata?: Omit<ObjectMeta, 'name'> & { name?: string }; spec: PodSpec };
  };
}

/** Istio's labels and annotations for ambient enrollment (istio-ambient-spec.md §5). */
export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const DATAPLANE_MODE_AMBIENT = 'ambient';
export const DATAPLANE_MODE_NONE = 'none';
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';

export function podKey(pod: { metadata: ObjectMeta }): string {
  return `${pod.metadata.namespace ?? 'default'}/${pod.metadata.name}`;
}
