// ztunnel's admin endpoint on localhost:15000, as Istio's ztunnel has it: /config_dump (JSON, the
// keys istioctl's ztunnel-config reads) and, later, /logging. Bound to 127.0.0.1 only: it exposes
// what the node holds, and reaching it means being on the node (the CLI enters the namespace).
import http from 'node:http';
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import type { CertificateStatus } from '../identity/manager.js';
import { splitPem } from '../../mesh/identity/x509.js';
import type { XdsClientStatus } from '../../mesh/xds/client.js';
import type { DumpedPolicy, DumpedService, DumpedWorkload } from './discovery.js';

export const ADMIN_PORT = 15000;

/** One certificate of a chain in config_dump, as ztunnel writes it. */
export interface DumpedCertificate {
  /** The PEM, base64-encoded (ztunnel's shape). */
  pem: string;
  serialNumber: string;
  validFrom: string;
  expirationTime: string;
}

export interface DumpedIdentity {
  identity: string;
  state: CertificateStatus['state'];
  certChain: DumpedCertificate[];
  rootCerts: DumpedCertificate[];
  nextRefresh?: string;
  lastError?: string;
}

export interface ConfigDump {
  certificates: DumpedIdentity[];
  /** From the xDS stream, when the ztunnel has one (see discovery.ts). */
  workloads?: DumpedWorkload[];
  services?: DumpedService[];
  policies?: DumpedPolicy[];
  xds?: XdsClientStatus;
}

function dumpCertificate(pem: string): DumpedCertificate {
  const c = new X509Certificate(pem);
  return {
    pem: Buffer.from(pem).toString('base64'),
    serialNumber: c.serialNumber.toLowerCase(),
    validFrom: new Date(c.validFrom).toISOString(),
    expirationTime: new Date(c.validTo).toISOString(),
  };
}

/** Splits a status's chain into the certificates ztunnel reports: chain (leaf, intermediates) and roots (the last element). */
export function dumpIdentity(s: CertificateStatus): DumpedIdentity {
  const chain = s.chain ?? [];
  const roots = chain.length ? splitPem(chain.at(-1)!) : [];
  return {
    identity: s.identity,
    state: s.state,
    certChain: chain.slice(0, -1).map(dumpCertificate),
    rootCerts: roots.map(dumpCertificate),
    ...(s.nextRefresh ? { nextRefresh: s.nextRefresh } : {}),
    ...(s.lastError ? { lastError: s.lastError } : {}),
  };
}

export class AdminServer {
  private readonly server: http.Server;

  constructor(dump: () => ConfigDump) {
    this.server = http.createServer((req, res) => {
      if (req.method !== 'GET') {
        res.writeHead(405).end();
      } else if (req.url === '/config_dump') {
        let body: string;
        try {
          body = JSON.stringify(dump(), null, 2);
        } catch (err) {
          // A diagnostics request must never take the proxy down.
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`config dump failed: ${(err as Error).message}\n`);
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      } else {
        res.writeHead(404).end();
      }
    });
  }

  async listen(port = ADMIN_PORT): Promise<void> {
    this.server.listen(port, '127.0.0.1');
    await once(this.server, 'listening');
  }

  close(): void {
    this.server.close();
  }
}
