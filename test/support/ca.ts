// Helpers for CA tests that stay independent of Ambit's own client code: CSRs are made by the
// openssl CLI, and the gRPC client is built at run time from the .proto by @grpc/proto-loader
// (not the ts-proto code the agent uses).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { pino } from 'pino';
import type { Pod } from '../../mesh/k8s/types.js';
import { CertificateAuthority, type AuthorityOptions } from '../../controlplane/ca/authority.js';
import { NodeCredentials } from '../../controlplane/ca/node-credentials.js';
import { caService } from '../../controlplane/ca/service.js';
import { startGrpcServer, type GrpcEndpoint } from '../../controlplane/grpc-server.js';
import { IstioCertificateServiceService } from '../../proto/gen/istio/v1/auth/ca.js';
import type { Authenticator } from '../../controlplane/ca/types.js';

const PROTO_ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', 'proto');

export interface Csr {
  csr: string;
  key: string;
}

/** A CSR made by openssl: `ec` (P-256), `ec384`, `ec521`, `rsa` (2048), `rsa1024`; SAN as the requester wishes. */
export function opensslCsr(kind: 'ec' | 'ec384' | 'ec521' | 'rsa' | 'rsa1024' = 'ec', san = 'URI:spiffe://evil.example/ns/x/sa/admin', digest = 'sha256'): Csr {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-csr-'));
  try {
    const key = join(dir, 'key.pem');
    const newkey =
      kind === 'rsa' ? ['rsa:2048'] : kind === 'rsa1024' ? ['rsa:1024'] : ['ec', '-pkeyopt', `ec_paramgen_curve:${kind === 'ec384' ? 'P-384' : kind === 'ec521' ? 'P-521' : 'P-256'}`];
    const csr = execFileSync('openssl', ['req', '-new', `-${digest}`, '-newkey', ...newkey, '-nodes', '-keyout', key, '-subj', '/', '-addext', `subjectAltName=critical,${san}`], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return { csr, key: execFileSync('cat', [key], { encoding: 'utf8' }) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface DynamicCaClient extends grpc.Client {
  CreateCertificate(req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { certChain: string[] }) => void): void;
}

/** A CA client loaded from the .proto at run time. */
export function dynamicCaClient(address: string, rootPem: string, serverName = 'istiod.istio-system.svc'): DynamicCaClient {
  const def = protoLoader.loadSync(join(PROTO_ROOT, 'istio/v1/auth/ca.proto'), { includeDirs: [PROTO_ROOT], longs: Number, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { istio: { v1: { auth: { IstioCertificateService: new (a: string, c: grpc.ChannelCredentials, o: object) => DynamicCaClient } } } };
  return new pkg.istio.v1.auth.IstioCertificateService(address, grpc.credentials.createSsl(Buffer.from(rootPem)), { 'grpc.ssl_target_name_override': serverName });
}

export interface CallResult {
  code: grpc.status;
  details: string;
  chain: string[];
}

/** One CreateCertificate call; `metadata` is the Struct as proto-loader's JSON mapping wants it. */
export function callCa(client: DynamicCaClient, req: { csr: string; validityDuration?: number; metadata?: unknown }, token?: string, headers: Record<string, string> = {}): Promise<CallResult> {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return new Promise((resolve) =>
    client.CreateCertificate(req, md, { deadline: Date.now() + 10_000 }, (err, res) =>
      resolve(err ? { code: err.code, details: err.details, chain: [] } : { code: grpc.status.OK, details: '', chain: res?.certChain ?? [] }),
    ),
  );
}

/** google.protobuf.Struct as proto-loader encodes it: { fields: { key: { stringValue } } }. */
export function structOf(fields: Record<string, unknown>): unknown {
  const value = (v: unknown): unknown => {
    if (v === null) return { nullValue: 0 };
    if (typeof v === 'string') return { stringValue: v };
    if (typeof v === 'number') return { numberValue: v };
    if (typeof v === 'boolean') return { boolValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(value) } };
    return { structValue: structOf(v as Record<string, unknown>) };
  };
  return { fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, value(v)])) };
}

export interface TestCa {
  address: string;
  root: string;
  authority: CertificateAuthority;
  tokens: Record<string, string>;
  endpoint: GrpcEndpoint;
  close(): Promise<void>;
}

/** A real CA on 127.0.0.1 (port 0): a fresh root, node credentials for `nodes`, the given pods. */
export async function startTestCa(opts: { nodes: string[]; pods: () => readonly Pod[]; trustDomain?: string; authority?: AuthorityOptions; authenticator?: Authenticator }): Promise<TestCa> {
  const trustDomain = opts.trustDomain ?? 'cluster.local';
  const authority = await CertificateAuthority.load(await CertificateAuthority.generateRoot(trustDomain), opts.authority);
  const dir = mkdtempSync(join(tmpdir(), 'ambit-ca-creds-'));
  const creds = NodeCredentials.create(dir, opts.nodes, trustDomain);
  const tokens = Object.fromEntries(opts.nodes.map((n) => [n, execFileSync('cat', [NodeCredentials.tokenPath(dir, n)], { encoding: 'utf8' }).trim()]));
  const endpoint = await startGrpcServer({
    authority,
    host: '127.0.0.1',
    port: 0,
    dnsNames: [],
    ips: ['127.0.0.1'],
    log: pino({ level: 'silent' }),
    services: [
      {
        definition: IstioCertificateServiceService,
        implementation: caService({ authority, authenticator: opts.authenticator ?? creds, pods: opts.pods, trustDomain, clusterId: 'Kubernetes', log: pino({ level: 'silent' }) }),
      },
    ],
  });
  return {
    address: `127.0.0.1:${endpoint.port}`,
    root: authority.trustBundle,
    authority,
    tokens,
    endpoint,
    close: async () => {
      await endpoint.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function pod(namespace: string, name: string, node: string, serviceAccountName?: string, phase = 'Running'): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace },
    spec: { nodeName: node, containers: [{ name: 'app' }], ...(serviceAccountName ? { serviceAccountName } : {}) },
    status: { phase, podIP: '10.244.1.9' },
  };
}
