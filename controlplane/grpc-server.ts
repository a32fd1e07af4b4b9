// The control plane's gRPC endpoint (15012): TLS with a serving certificate signed by the mesh CA,
// for the names Istio's clients expect (istiod.istio-system.svc), the control plane's own service
// names and its addresses. Message sizes and concurrent streams are bounded, so a client cannot
// make the server allocate without limit.
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { CertificateAuthority } from './ca/authority.js';
import { ISTIOD_NAME } from '../mesh/identity/ca-client.js';

const MAX_MESSAGE_BYTES = 4 << 20;
const MAX_CONCURRENT_STREAMS = 100;

export interface GrpcServerOptions {
  authority: CertificateAuthority;
  host: string;
  port: number;
  dnsNames: string[];
  ips: string[];
  services: { definition: ServiceDefinition; implementation: UntypedServiceImplementation }[];
}

export interface GrpcEndpoint {
  server: Server;
  port: number;
  /** The serving certificate chain (leaf first), for diagnostics. */
  servingChain: string[];
  close(): Promise<void>;
}

export async function startGrpcServer(opts: GrpcServerOptions): Promise<GrpcEndpoint> {
  const { keyPem, chain } = await opts.authority.issueWithKey(
    { dnsNames: [...new Set([ISTIOD_NAME, ...opts.dnsNames])], ips: opts.ips },
    opts.authority.maxTtlSeconds,
  );
  const server = new Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
  });
  for (const s of opts.services) server.addService(s.definition, s.implementation);
  // The leaf and intermediates, not the roots: clients already hold those.
  const certChain = Buffer.from(chain.slice(0, -1).join(''));
  const creds = ServerCredentials.createSsl(null, [{ private_key: Buffer.from(keyPem), cert_chain: certChain }], false);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.host}:${opts.port}`, creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    server,
    port,
    servingChain: chain,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => server.forceShutdown(), 2000).unref();
      }),
  };
}
