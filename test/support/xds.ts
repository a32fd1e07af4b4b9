// An xDS server for protocol tests: the real XdsServer on the real gRPC endpoint (TLS, the mesh
// CA's serving certificate, node credentials), and a raw stream driver that sends exactly the
// requests a test writes and lets it wait for, or rule out, responses.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { CertificateAuthority } from '../../controlplane/ca/authority.js';
import { NodeCredentials } from '../../controlplane/ca/node-credentials.js';
import { startGrpcServer, type GrpcEndpoint } from '../../controlplane/grpc-server.js';
import { XdsServer } from '../../controlplane/xds/server.js';
import { AggregatedDiscoveryServiceClient } from '../../proto/gen/envoy/service/discovery/v3/ads.js';
import { DeltaDiscoveryRequest as DeltaDiscoveryRequestCodec, type DeltaDiscoveryRequest, type DeltaDiscoveryResponse } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';
import { ISTIOD_NAME } from '../../mesh/identity/ca-client.js';

export interface TestXds {
  address: string;
  root: string;
  tokens: Record<string, string>;
  xds: XdsServer;
  endpoint: GrpcEndpoint;
  close(): Promise<void>;
}

/** A real xDS server on 127.0.0.1 (port 0) accepting node credentials for `nodes`. */
export async function startTestXds(nodes: string[] = ['node-1', 'node-2'], opts: { port?: number; authority?: CertificateAuthority; maxLargeResponses?: number; writeDeadlineMs?: number; maxConnectionsPerCaller?: number } = {}): Promise<TestXds> {
  const authority = opts.authority ?? (await CertificateAuthority.load(await CertificateAuthority.generateRoot('cluster.local')));
  const dir = mkdtempSync(join(tmpdir(), 'ambit-xds-creds-'));
  const creds = NodeCredentials.create(dir, nodes, 'cluster.local');
  const tokens = Object.fromEntries(nodes.map((n) => [n, execFileSync('cat', [NodeCredentials.tokenPath(dir, n)], { encoding: 'utf8' }).trim()]));
  const log = pino({ level: process.env.AMBIT_TEST_LOG ?? 'silent' });
  const xds = new XdsServer({
    authenticator: creds,
    clusterId: 'Kubernetes',
    log,
    ...(opts.maxLargeResponses ? { maxLargeResponses: opts.maxLargeResponses } : {}),
    ...(opts.writeDeadlineMs ? { writeDeadlineMs: opts.writeDeadlineMs } : {}),
    ...(opts.maxConnectionsPerCaller ? { maxConnectionsPerCaller: opts.maxConnectionsPerCaller } : {}),
  });
  const endpoint = await startGrpcServer({
    authority,
    host: '127.0.0.1',
    port: opts.port ?? 0,
    dnsNames: [],
    ips: ['127.0.0.1'],
    log,
    services: [{ definition: xds.definition, implementation: xds.implementation() }],
  });
  return {
    address: `127.0.0.1:${endpoint.port}`,
    root: authority.trustBundle,
    tokens,
    xds,
    endpoint,
    close: async () => {
      xds.stop();
      await endpoint.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function clientChannelOptions(): grpc.ChannelOptions {
  return { 'grpc.ssl_target_name_override': ISTIOD_NAME, 'grpc.default_authority': ISTIOD_NAME, 'grpc.max_receive_message_length': 200 << 20 };
}

/** What ended a stream. */
export interface StreamEnd {
  code: grpc.status;
  details: string;
}

/** One raw DeltaAggregatedResources stream. */
export class RawStream {
  readonly responses: DeltaDiscoveryResponse[] = [];
  ended: StreamEnd | undefined;
  private readonly client: AggregatedDiscoveryServiceClient;
  private readonly call: grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
  private readonly waiters: (() => void)[] = [];
  private read = 0;

  constructor(server: { address: string; root: string }, token: string | undefined) {
    this.client = new AggregatedDiscoveryServiceClient(server.address, grpc.credentials.createSsl(Buffer.from(server.root)), clientChannelOptions());
    const md = new grpc.Metadata();
    if (token !== undefined) md.set('authorization', `Bearer ${token}`);
    this.call = this.client.deltaAggregatedResources(md);
    this.call.on('data', (r: DeltaDiscoveryResponse) => {
      this.responses.push(r);
      this.wake();
    });
    this.call.on('error', (err: grpc.ServiceError) => {
      this.ended ??= { code: err.code, details: err.details };
      this.wake();
    });
    this.call.on('end', () => {
      this.ended ??= { code: grpc.status.OK, details: 'ended' };
      this.wake();
    });
  }

  send(partial: Partial<DeltaDiscoveryRequest>): void {
    this.call.write({
      node: { id: 'ztunnel~10.0.0.1~test.test~test.svc.cluster.local', cluster: 'Kubernetes', metadata: undefined, userAgentName: 'test' },
      typeUrl: '',
      resourceNamesSubscribe: [],
      resourceNamesUnsubscribe: [],
      initialResourceVersions: {},
      responseNonce: '',
      errorDetail: undefined,
      ...partial,
    });
  }

  ack(r: DeltaDiscoveryResponse): void {
    this.send({ typeUrl: r.typeUrl, responseNonce: r.nonce });
  }

  nack(r: DeltaDiscoveryResponse, message = 'rejected by the test'): void {
    this.send({ typeUrl: r.typeUrl, responseNonce: r.nonce, errorDetail: { code: grpc.status.INVALID_ARGUMENT, message, details: [] } });
  }

  /** The next unread response (of `typeUrl` when given; others are skipped), or a failure after `timeoutMs`. */
  async next(typeUrl?: string, timeoutMs = 5000): Promise<DeltaDiscoveryResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.read < this.responses.length) {
        const r = this.responses[this.read++]!;
        if (typeUrl === undefined || r.typeUrl === typeUrl) return r;
      }
      if (this.ended) throw new Error(`stream ended (${grpc.status[this.ended.code]}: ${this.ended.details}) while waiting for a ${typeUrl ?? 'any'} response`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${typeUrl ?? ''} response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Resolves with the unread responses that arrive within `ms` (expected: none). */
  async quiet(ms: number): Promise<DeltaDiscoveryResponse[]> {
    await new Promise((r) => setTimeout(r, ms));
    const extra = this.responses.slice(this.read);
    this.read = this.responses.length;
    return extra;
  }

  /** Waits for the stream to end. */
  async end(timeoutMs = 5000): Promise<StreamEnd> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error('stream did not end');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.ended;
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** A stream that writes the given bytes as request messages, without encoding (garbage tests). */
export function rawBytesStream(server: { address: string; root: string }, token: string): { write(b: Buffer): void; end(): Promise<StreamEnd>; close(): void } {
  const client = new grpc.Client(server.address, grpc.credentials.createSsl(Buffer.from(server.root)), clientChannelOptions());
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const call = client.makeBidiStreamRequest(
    '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources',
    (b: Buffer) => b,
    (b: Buffer) => b,
    md,
  );
  const ended = new Promise<StreamEnd>((resolve) => {
    call.on('error', (err: grpc.ServiceError) => resolve({ code: err.code, details: err.details }));
    call.on('end', () => resolve({ code: grpc.status.OK, details: 'ended' }));
  });
  call.on('data', () => undefined);
  return {
    write: (b) => call.write(b),
    end: () => ended,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

/**
 * A raw HTTP/2 gRPC stream that sends one DeltaDiscoveryRequest and then never reads: its stream
 * window is 0, so the server cannot deliver a byte of response. For tests of what a client that
 * stops reading may cost the server.
 */
export function stalledStream(server: { address: string; root: string }, token: string, request: Partial<DeltaDiscoveryRequest>): { closed: Promise<number>; close(): void } {
  const session = http2.connect(`https://${server.address}`, { ca: server.root, servername: ISTIOD_NAME, settings: { initialWindowSize: 0 } });
  session.on('error', () => undefined);
  const stream = session.request({
    ':method': 'POST',
    ':path': '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources',
    'content-type': 'application/grpc',
    te: 'trailers',
    authorization: `Bearer ${token}`,
  });
  stream.on('error', () => undefined);
  const body = Buffer.from(
    DeltaDiscoveryRequestCodec.encode({ node: undefined, typeUrl: '', resourceNamesSubscribe: [], resourceNamesUnsubscribe: [], initialResourceVersions: {}, responseNonce: '', errorDetail: undefined, ...request }).finish(),
  );
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  stream.write(frame);
  stream.pause();
  const closed = new Promise<number>((resolve) => stream.on('close', () => resolve(stream.rstCode ?? 0)));
  return {
    closed,
    close: () => {
      stream.close();
      session.destroy();
    },
  };
}
