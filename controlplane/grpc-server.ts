// The control plane's gRPC endpoint (15012): TLS with a serving certificate signed by the mesh CA,
// for the names Istio's clients expect (istiod.istio-system.svc), the control plane's own service
// names and its addresses, renewed in place. Messages are small (a CSR is at most 16 KiB), and the
// limit applies before a request is decoded: a large message would otherwise cost the event loop
// its decoding before any authentication could refuse it.
import { Server, experimental, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { CertificateAuthority } from './ca/authority.js';
import { ISTIOD_NAME } from '../mesh/identity/ca-client.js';
import type { Logger } from '../mesh/log.js';
import { ServingCertificate } from './serving-certificate.js';

export const MAX_MESSAGE_BYTES = 64 * 1024;
const MAX_CONCURRENT_STREAMS = 100;
/** Idle connections are closed, so abandoned clients do not hold server state forever. */
const MAX_CONNECTION_IDLE_MS = 5 * 60_000;

export interface GrpcServerOptions {
  authority: CertificateAuthority;
  host: string;
  port: number;
  dnsNames: string[];
  ips: string[];
  services: { definition: ServiceDefinition; implementation: UntypedServiceImplementation }[];
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
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': 4 << 20,
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    'grpc.max_connection_idle_ms': MAX_CONNECTION_IDLE_MS,
  });
  for (const s of opts.services) server.addService(s.definition, s.implementation);
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
