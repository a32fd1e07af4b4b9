// The subset of Kubernetes object shapes Ambit reads. Field names are the Kubernetes API's own so
// that objects from a YAML file and from the API server are the same values.

export interface OwnerReference {
  apiVersion?: string;
  kind: string;
  name: string;
  uid?: string;
  controller?: boolean;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  /** Bumped by the API server on every spec change; echoed in status conditions. */
  generation?: number;
  /** RFC 3339 (a Date when read through @kubernetes/client-node's typed APIs); the oldest policy wins a conflict. */
  creationTimestamp?: string | Date;
  deletionTimestamp?: string | Date;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
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

export interface PodCondition {
  type: string;
  /** `True`, `False` or `Unknown`. */
  status: string;
}

export interface PodStatus {
  phase?: string;
  podIP?: string;
  podIPs?: { ip: string }[];
  hostIP?: string;
  conditions?: PodCondition[];
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
  /** e.g. `http`, `kubernetes.io/h2c`, `grpc`. */
  appProtocol?: string;
}

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec: {
    selector?: Record<string, string>;
    ports: ServicePort[];
    clusterIP?: string;
    clusterIPs?: string[];
    type?: string;
    externalName?: string;
    ipFamilyPolicy?: string;
    /** `PreferClose` asks for locality-aware routing. */
    trafficDistribution?: string;
  };
}

// discovery.k8s.io/v1
export interface EndpointSlice {
  apiVersion: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  /** labels['kubernetes.io/service-name'] names the Service. */
  metadata: ObjectMeta;
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: {
    addresses: string[];
    conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
    nodeName?: string;
    targetRef?: { kind?: string; name?: string; namespace?: string; uid?: string };
  }[];
  ports?: { name?: string; port?: number; protocol?: string; appProtocol?: string }[];
}

// Istio's security.istio.io (v1 and v1beta1 have the same schema).
export type IstioSecurityVersion = 'security.istio.io/v1' | 'security.istio.io/v1beta1';

export interface PolicyTargetReference {
  group?: string;
  kind: string;
  name: string;
  namespace?: string;
}

export interface AuthorizationPolicySource {
  principals?: string[];
  notPrincipals?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
  serviceAccounts?: string[];
  notServiceAccounts?: string[];
}

export interface AuthorizationPolicyOperation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export interface AuthorizationPolicyRule {
  from?: { source?: AuthorizationPolicySource }[];
  to?: { operation?: AuthorizationPolicyOperation }[];
  when?: { key: string; values?: string[]; notValues?: string[] }[];
}

export interface AuthorizationPolicy {
  apiVersion: IstioSecurityVersion;
  kind: 'AuthorizationPolicy';
  metadata: ObjectMeta;
  spec: {
    selector?: { matchLabels?: Record<string, string> };
    targetRef?: PolicyTargetReference;
    targetRefs?: PolicyTargetReference[];
    /** Default ALLOW. */
    action?: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
    provider?: { name?: string };
    rules?: AuthorizationPolicyRule[];
  };
  status?: { conditions?: StatusCondition[] };
}

export type MutualTlsMode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

export interface PeerAuthentication {
  apiVersion: IstioSecurityVersion;
  kind: 'PeerAuthentication';
  metadata: ObjectMeta;
  spec: {
    selector?: { matchLabels?: Record<string, string> };
    mtls?: { mode?: MutualTlsMode };
    /** Keyed by port number (as a string in YAML/JSON); only with a selector. */
    portLevelMtls?: Record<string, { mode?: MutualTlsMode }>;
  };
}

/** A status condition as Kubernetes (metav1.Condition) and Istio write them. */
export interface StatusCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}

// Gateway API (gateway.networking.k8s.io/v1; v1beta1 has the same shape for these kinds).
export type GatewayApiVersion = 'gateway.networking.k8s.io/v1' | 'gateway.networking.k8s.io/v1beta1';

export interface Gateway {
  apiVersion: GatewayApiVersion;
  kind: 'Gateway';
  metadata: ObjectMeta;
  spec: {
    gatewayClassName: string;
    listeners: { name: string; port: number; protocol: string; hostname?: string; allowedRoutes?: unknown }[];
    addresses?: { type?: string; value: string }[];
  };
  status?: { addresses?: { type?: string; value: string }[] };
}

export interface ParentReference {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  sectionName?: string;
  port?: number;
}

export interface BackendReference {
  group?: string;
  kind?: string;
  name: string;
  namespace?: string;
  port?: number;
  weight?: number;
}

export interface HttpHeaderMatch {
  type?: 'Exact' | 'RegularExpression';
  name: string;
  value: string;
}

export interface HttpRouteFilter {
  type: string;
  requestHeaderModifier?: { set?: { name: string; value: string }[]; add?: { name: string; value: string }[]; remove?: string[] };
  responseHeaderModifier?: { set?: { name: string; value: string }[]; add?: { name: string; value: string }[]; remove?: string[] };
  requestRedirect?: { scheme?: string; hostname?: string; path?: { type: string; replaceFullPath?: string; replacePrefixMatch?: string }; port?: number; statusCode?: number };
  urlRewrite?: { hostname?: string; path?: { type: string; replaceFullPath?: string; replacePrefixMatch?: string } };
  requestMirror?: { backendRef: BackendReference };
}

export interface HTTPRoute {
  apiVersion: GatewayApiVersion;
  kind: 'HTTPRoute';
  metadata: ObjectMeta;
  spec: {
    parentRefs?: ParentReference[];
    hostnames?: string[];
    rules?: {
      name?: string;
      matches?: {
        path?: { type?: 'Exact' | 'PathPrefix' | 'RegularExpression'; value?: string };
        headers?: HttpHeaderMatch[];
        queryParams?: HttpHeaderMatch[];
        method?: string;
      }[];
      filters?: HttpRouteFilter[];
      backendRefs?: (BackendReference & { filters?: HttpRouteFilter[] })[];
      timeouts?: { request?: string; backendRequest?: string };
    }[];
  };
}

export interface GRPCRoute {
  apiVersion: 'gateway.networking.k8s.io/v1';
  kind: 'GRPCRoute';
  metadata: ObjectMeta;
  spec: {
    parentRefs?: ParentReference[];
    hostnames?: string[];
    rules?: {
      name?: string;
      matches?: { method?: { type?: 'Exact' | 'RegularExpression'; service?: string; method?: string }; headers?: HttpHeaderMatch[] }[];
      filters?: HttpRouteFilter[];
      backendRefs?: (BackendReference & { filters?: HttpRouteFilter[] })[];
    }[];
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
export const USE_WAYPOINT_LABEL = 'istio.io/use-waypoint';
export const USE_WAYPOINT_NAMESPACE_LABEL = 'istio.io/use-waypoint-namespace';
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
export const INGRESS_USE_WAYPOINT_LABEL = 'istio.io/ingress-use-waypoint';
export const WAYPOINT_GATEWAY_CLASS = 'istio-waypoint';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export function podKey(pod: { metadata: ObjectMeta }): string {
  return `${pod.metadata.namespace ?? 'default'}/${pod.metadata.name}`;
}
