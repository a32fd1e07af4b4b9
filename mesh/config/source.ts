// Where the cluster's objects come from, behind one interface with two implementations: the
// Kubernetes API (list+watch informers) and watched YAML files (the lab). The node agent reads the
// namespaces and its node's pods; the control plane reads every kind and writes back the status of
// the policies it translated.

import type { Pod, StatusCondition } from '../k8s/types.js';
import type { ClusterView } from './view.js';

export type { ClusterView };

/** The part of the view the node agent reads: every namespace, and the pods of its node. */
export type NodeView = Pick<ClusterView, 'namespaces' | 'pods'>;

/**
 * What the agent records about a pod's capture, in Istio's vocabulary (istio-ambient-spec.md §5.2):
 * `enabled` = captured and the node's ztunnel is ready; `pending` = captured, ztunnel not ready (the
 * pod has no network until it is); null = not captured (the annotation is removed).
 */
export type RedirectionState = 'enabled' | 'pending' | null;

/** An object whose status the control plane writes. */
export interface StatusTarget {
  kind: 'AuthorizationPolicy';
  namespace: string;
  name: string;
}

/**
 * Where the cluster's objects come from. Views are immutable, and an object that did not change
 * between two views is the same object (reference) in both: consumers find what changed by
 * comparing references. Only the kinds a source was asked for are filled; the other lists are empty.
 */
export interface ConfigSource {
  /** Starts watching; resolves once the first complete view is available. */
  start(): Promise<void>;
  /** The latest complete view. Valid after start() resolved. */
  current(): ClusterView;
  /** Called after every change to the view (coalesced; never concurrently with itself). */
  onChange(listener: (view: ClusterView) => void): void;
  /** Reports a problem with the input (a malformed object); the last good view stays in force. */
  onError(listener: (err: Error) => void): void;
  /** Records a pod's redirection state where the cluster keeps it. */
  recordRedirection(pod: Pod, state: RedirectionState): Promise<void>;
  /**
   * Records an object's status conditions where the cluster keeps them (the object's status in
   * Kubernetes, a status file in the lab). Never rejects: failures are logged and retried. A
   * condition's lastTransitionTime is the source's to set: kept while its status stays the same,
   * now when it changes.
   */
  recordStatus(target: StatusTarget, conditions: StatusCondition[]): Promise<void>;
  close(): Promise<void>;
}
