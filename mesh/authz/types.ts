// What the L4 authorization engine reads and answers (istio-ambient-spec.md §6.1, §6.3): one inbound
// connection as the destination ztunnel sees it, the destination workload as WDS delivers it, and a
// decision worded like ztunnel's, for the access log and the connection-closed message.

import type { Identity } from '../identity/spiffe.js';
import type { Workload } from '../../proto/gen/istio/workload/workload.js';

export interface AuthzConnection {
  /**
   * The peer's SPIFFE identity from its mTLS certificate (HBONE on 15008). Undefined for plaintext
   * captured on 15006: such a connection matches no principal, namespace or service-account value.
   */
  identity: Identity | undefined;
  /** 4 or 16 bytes; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as the IPv4 address. */
  srcIp: Uint8Array;
  /** 4 or 16 bytes, as srcIp. */
  dstIp: Uint8Array;
  /** The resolved target port the workload receives on (never 15008). */
  dstPort: number;
}

/** The part of a WDS Workload that selects policies; a whole Workload is accepted. */
export type AuthzWorkload = Pick<Workload, 'namespace' | 'authorizationPolicies'>;

export interface AuthzDecision {
  readonly allowed: boolean;
  /** `<namespace>/<name>` of the policy that decided: the matching DENY, or the matching ALLOW. */
  readonly policy?: string;
  /** ztunnel's wording: `explicitly denied by: ns/name`, `allow policies exist, but none allowed`, ... */
  readonly reason: string;
  /**
   * Present only when dry-run policies apply to the workload: what the decision would be if they
   * were enforced beside the others. Never changes `allowed`.
   */
  readonly dryRun?: AuthzDecision;
}

export interface PolicySetOptions {
  /**
   * A name in Workload.authorization_policies that no received Authorization has. `skip` (the
   * default) is ztunnel's: the name is ignored, since the Address and Authorization streams are not
   * ordered and a policy deletion would otherwise close every connection to its workloads until the
   * workload update arrives. `deny` refuses the connection instead, closing the window in which a
   * listed STRICT or DENY policy has not arrived yet.
   */
  unknownPolicy?: 'skip' | 'deny';
}

/** One open connection and what it was checked against, for PolicySet.recheck. */
export interface TrackedConnection {
  conn: AuthzConnection;
  workload: AuthzWorkload;
}
