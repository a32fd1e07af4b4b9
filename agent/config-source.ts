import type { Namespace, Pod } from '../mesh/k8s/types.js';

/** What the node agent knows of the cluster: every namespace, and the pods scheduled on its node. */
export interface NodeView {
  namespaces: ReadonlyMap<string, Namespace>;
  /** Pods whose spec.nodeName is this node. A pod without status.podIP is not yet networked. */
  pods: readonly Pod[];
}

/**
 * What the agent records about a pod's capture, in Istio's vocabulary (istio-ambient-spec.md §5.2):
 * `enabled` = captured and the node's ztunnel is ready; `pending` = captured, ztunnel not ready (the
 * pod has no network until it is); null = not captured (the annotation is removed).
 */
export type RedirectionState = 'enabled' | 'pending' | null;

/**
 * Where the agent's view of its node comes from. Two implementations: the Kubernetes API
 * (informers filtered to the node) and a watched YAML file or directory (the lab).
 */
export interface ConfigSource {
  /** Starts watching; resolves once the first complete view is available. */
  start(): Promise<void>;
  /** The latest complete view. Valid after start() resolved. */
  current(): NodeView;
  /** Called after every change to the view (coalesced; never concurrently with itself). */
  onChange(listener: (view: NodeView) => void): void;
  /** Reports a problem with the input (a malformed object); the last good view stays in force. */
  onError(listener: (err: Error) => void): void;
  /** Records a pod's redirection state where the cluster keeps it. */
  recordRedirection(pod: Pod, state: RedirectionState): Promise<void>;
  close(): Promise<void>;
}
