// The L4 authorization engine the node ztunnel runs on every inbound connection (HBONE on 15008,
// plaintext on 15006) and again on open connections when policies change. Istio ztunnel semantics;
// see docs/decisions/0007-l4-authorization-engine.md for where Ambit fails closed instead.
export { PolicySet, type Denial } from './policy-set.js';
export type { AuthzConnection, AuthzDecision, AuthzWorkload, PolicySetOptions, TrackedConnection } from './types.js';
