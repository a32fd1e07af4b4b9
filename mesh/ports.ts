// ztunnel's ports, as Istio's ztunnel has them (istio-ambient-spec.md §1). The redirection
// programs, the ztunnel and the agent's readiness probe must all agree on them.
export const OUTBOUND_CAPTURE_PORT = 15001;
export const INBOUND_CAPTURE_PORT = 15006;
export const HBONE_PORT = 15008;
export const READINESS_PORT = 15021;
