// The control plane's gRPC endpoint (15012): TLS with a serving certificate signed by the mesh CA,
// for the names Istio's clients expect (istiod.istio-system.svc), the control plane's own service
// names and its addresses, renewed in place. Size limits are per method and apply before a request
// is decoded (a large message would otherwise cost the event loop its decoding before any
// authentication could refuse it): a CSR request is small, an xDS request may list every resource
// a client holds.
import {
  Metadata,
  Server,
  experimental,
  status,
  type ServiceDefinition,
  type ServiceError,
  type UntypedServiceImplementation,
  type handleUnaryCall,
} from '@grpc/grpc-js';
import type { CertificateAuthority } from './ca/authority.js';
import { ISTIOD_NAME } from '../mesh/identity/ca-client.js';
import type { Logger } from '../mesh/log.js';
import { ServingCertificate } from './serving-certificate.js';

/** The CA's request limit. */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** The transport's limit: the largest any method accepts (xDS, see controlplane/xds/wire.ts). */
const MAX_TRANSPORT_MESSAGE_BYTES = (16 << 20) + 1024;
const MAX_CONCURRENT_STREAMS = 100;
/** Idle connections are closed, so abandoned clients do not hold server state forever. */
const MAX_CONNECTION_IDLE_MS = 5 * 60_000;

export interface GrpcServerOptions {
  authority: CertificateAuthority;
  host: string;
  port: number;
  dnsNames: string[];
  ips: string[];
  /**
   * Unary methods accept at most `maxRequestBytes` (default MAX_MESSAGE_BYTES); streaming methods
   * enforce their own limit in their deserializer (see controlplane/xds/wire.ts).
   */
  services: { definition: ServiceDefinition; implementation: UntypedServiceImplementation; maxRequestBytes?: number }[];
  log: Logger;
}

export interface GrpcEndpoint {
  server: Server;
  port: number;
  serving: ServingCertificate;
  close(): Promise<void>;
}

export async function startGrpcServer(opts: GrpcServerOptions): Promise<GrpcEndpoint> {
  const serving = await ServingCertificate.start(opts.authority, { dnsNames: [...new Set([ISTIOD_NAME, ...opts.dnsNames])], ips: opts.ips }, opts.log);
  const server = new Server({
    'grpc.max_receive_message_length': MAX_TRANSPORT_MESSAGE_BYTES,
    'grpc.max_send_message_length': -1,
    // Dead peers (a node that vanished) are noticed and their streams freed.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    'grpc.max_connection_idle_ms': MAX_CONNECTION_IDLE_MS,
  });
  for (const s of opts.services) {
    const limited = limitUnaryRequests(s.definition, s.implementation, s.maxRequestBytes ?? MAX_MESSAGE_BYTES);
    server.addService(limited.definition, limited.implementation);
  }
  const creds = experimental.createCertificateProviderServerCredentials(serving, serving, false);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.host}:${opts.port}`, creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    server,
    port,
    serving,
    close: () =>
      new Promise<void>((resolve) => {
        serving.stop();
        server.tryShutdown(() => resolve());
        setTimeout(() => server.forceShutdown(), 2000).unref();
      }),
  };
}

/** Stands in for a request over its method's limit: the handler refuses it without decoding. */
interface Oversized {
  readonly oversizedBytes: number;
}

function isOversized(value: unknown): value is Oversized {
  return typeof value === 'object' && value !== null && 'oversizedBytes' in value;
}

/**
 * A unary service whose requests above `maxBytes` are refused with RESOURCE_EXHAUSTED before
 * decoding (the transport's limit is the largest of all methods').
 */
export function limitUnaryRequests(
  definition: ServiceDefinition,
  implementation: UntypedServiceImplementation,
  maxBytes: number,
): { definition: ServiceDefinition; implementation: UntypedServiceImplementation } {
  const limitedDefinition: Record<string, ServiceDefinition[string]> = {};
  const limitedImplementation: UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition)) {
    if (method.requestStream || method.responseStream) {
      limitedDefinition[name] = method;
      if (implementation[name]) limitedImplementation[name] = implementation[name]!;
      continue;
    }
    limitedDefinition[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => (bytes.length > maxBytes ? { oversizedBytes: bytes.length } : method.requestDeserialize(bytes)),
    };
    const handler = implementation[name] as handleUnaryCall<unknown, unknown> | undefined;
    if (!handler) continue;
    limitedImplementation[name] = ((call, callback) => {
      if (isOversized(call.request)) {
        const message = `the request is ${call.request.oversizedBytes} bytes; this method accepts at most ${maxBytes}`;
        callback({ code: status.RESOURCE_EXHAUSTED, details: message, message, metadata: new Metadata() } as Partial<ServiceError> as ServiceError);
        return;
      }
      handler(call, callback);
    }) as handleUnaryCall<unknown, unknown>;
  }
  return { definition: limitedDefinition, implementation: limitedImplementation };
}
