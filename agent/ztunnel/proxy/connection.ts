// One proxied connection as the telemetry (metrics, access log) and the admin endpoint see it.
// Built once per connection by inbound/outbound; never touched per chunk (byte counts are read
// from the sockets when the connection ends or when someone asks).
import type { Workload } from '../../../proto/gen/istio/workload/workload.js';

/** Istio's access-log `direction`. */
export type Direction = 'outbound' | 'inbound';

/** Istio's `response_flags` values that ztunnel reports ('-' is none). */
export type ResponseFlag = '-' | 'DENY' | 'CONNECT' | 'TLS_FAILURE' | 'H2_HANDSHAKE_FAILURE' | 'IDENTITY_ERROR' | 'NETWORK_POLICY';

export interface ServiceRef {
  hostname: string;
  namespace: string;
  name: string;
}

export interface ConnectionEnd {
  /** IP address text. */
  addr: string;
  port: number;
  /** The workload at this end, when the mesh knows the address. */
  workload?: Workload;
  /** SPIFFE URI, only when proven by mTLS (source on inbound HBONE; destination on outbound HBONE). */
  identity?: string;
}

export interface ConnectionInfo {
  /** Unique within the process. */
  id: number;
  reporter: 'source' | 'destination';
  direction: Direction;
  src: ConnectionEnd;
  dst: ConnectionEnd & {
    /** Set whenever the connection was addressed to a service (Istio's destination_service). */
    service?: ServiceRef;
    /** The CONNECT authority (`ip:port`) when the connection is carried over HBONE. */
    hboneAddr?: string;
    /**
     * The `ip:port` the client dialled, when the proxy sent the connection elsewhere (a service VIP
     * resolved to an endpoint): Istio's `originalDst` of an outbound connection in config_dump.
     */
    original?: string;
  };
  /** Carried in (or received over) mutual TLS: Istio's connection_security_policy mutual_tls. */
  mtls: boolean;
  /** Date.now() at accept. */
  startedAt: number;
}

/** Byte counts from the reporter's own point of view: sent = towards the client (downstream). */
export interface ConnectionBytes {
  /** Bytes this proxy wrote to the downstream (client) side: server→client. */
  sent: number;
  /** Bytes this proxy read from the downstream (client) side: client→server. */
  received: number;
}
