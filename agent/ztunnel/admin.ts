// ztunnel's admin endpoint on localhost:15000, as Istio's ztunnel has it: /config_dump (JSON, the
// keys istioctl's ztunnel-config reads) and /logging (live log levels). Bound to 127.0.0.1 only: it
// exposes what the node holds and changes how it logs, and reaching it means being on the node
// (the CLI enters the namespace).
import http from 'node:http';
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { CertificateStatus } from '../identity/manager.js';
import { splitPem } from '../../mesh/identity/x509.js';
import type { XdsClientStatus } from '../../mesh/xds/client.js';
import type { LogLevels } from '../../mesh/log-levels.js';
import type { DumpedPolicy, DumpedService, DumpedWorkload } from './discovery.js';
import type { ConnectionBytes, ConnectionInfo } from './proxy/connection.js';
import { endpointText } from './telemetry/access-log.js';

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

/**
 * One open connection, in the shape of Istio ztunnel's ConnectionManager dump
 * (zt:src/proxy/connection_manager.rs), which istioctl's `ztunnel-config connections` prints.
 */
export interface DumpedConnection {
  /** The client's `ip:port`. */
  src: string;
  /** Inbound: the service hostname the client addressed, or null. Outbound: the `ip:port` the client dialled. */
  originalDst: string | null;
  /** Inbound: the pod's `ip:port` the connection was delivered to. Outbound: the `ip:port` ztunnel connected to. */
  actualDst: string;
  protocol: 'HBONE' | 'TCP';
  /**
   * Ambit: the node's own workload at this connection's end (Istio nests connections under it in
   * `workloadState`; its keys are those of Istio's WorkloadInfo).
   */
  workload?: { name: string; namespace: string; serviceAccount: string; trustDomain: string };
  /** Ambit: bytes so far, from the reporter's side (sent = towards the client). */
  bytes: ConnectionBytes;
}

/** Istio's ConnectionManagerDump: the two directions kept apart. */
export interface DumpedConnections {
  inbound: DumpedConnection[];
  outbound: DumpedConnection[];
}

export interface ConfigDump {
  certificates: DumpedIdentity[];
  /** The proxy's open connections, when the ztunnel runs one. */
  connections?: DumpedConnections;
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

export function dumpConnection(info: ConnectionInfo, bytes: ConnectionBytes): DumpedConnection {
  const { src, dst } = info;
  const inbound = info.direction === 'inbound';
  const local = inbound ? dst.workload : src.workload;
  const actualDst = endpointText(dst.addr, dst.port);
  const out: DumpedConnection = {
    src: endpointText(src.addr, src.port),
    originalDst: inbound ? (dst.service?.hostname ?? null) : (dst.original ?? actualDst),
    actualDst,
    // Istio: inbound is HBONE when the peer proved an identity; outbound when it was tunnelled.
    protocol: (inbound ? info.mtls : dst.hboneAddr !== undefined) ? 'HBONE' : 'TCP',
    bytes: { sent: bytes.sent, received: bytes.received },
  };
  if (local) out.workload = { name: local.name, namespace: local.namespace, serviceAccount: local.serviceAccount || 'default', trustDomain: local.trustDomain };
  return out;
}

/** The connections section from what the proxy holds open (anything with its info and a way to read its bytes). */
export function dumpConnections(open: Iterable<{ info: ConnectionInfo; bytes(): ConnectionBytes }>): DumpedConnections {
  const out: DumpedConnections = { inbound: [], outbound: [] };
  for (const c of open) out[c.info.direction].push(dumpConnection(c.info, c.bytes()));
  return out;
}

const LOGGING_HELP = `
usage: POST /logging\t\t\t\t\t\t(To list current level)
usage: POST /logging?level=<level>\t\t\t\t(To change global levels)
usage: POST /logging?level={mod1}:{level1},{mod2}:{level2}\t(To change specific mods' logging level)
usage: POST /logging?reset[&level=...]\t\t\t\t(To go back to the startup levels)

hint: loglevel:\terror|warn|info|debug|trace|off
`;

function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' }).end(body);
}

export class AdminServer {
  private readonly server: http.Server;

  /** Without `levels`, /logging is not offered (404). */
  constructor(dump: () => ConfigDump | Promise<ConfigDump>, levels?: LogLevels) {
    this.server = http.createServer((req, res) => {
      const url = URL.canParse(req.url ?? '/', 'http://admin') ? new URL(req.url ?? '/', 'http://admin') : undefined;
      if (!url) {
        res.writeHead(400).end();
      } else if (url.pathname === '/config_dump') {
        if (req.method !== 'GET') {
          res.writeHead(405, { allow: 'GET' }).end();
          return;
        }
        // A diagnostics request must never take the proxy down (worker threads may not answer).
        Promise.resolve()
          .then(dump)
          .then((d) => JSON.stringify(d, null, 2))
          .then(
            (body) => res.writeHead(200, { 'content-type': 'application/json' }).end(body),
            (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`config dump failed: ${err.message}\n`),
          );
      } else if (url.pathname === '/logging' && levels) {
        logging(levels, req, url, res);
      } else {
        res.writeHead(404).end();
      }
    });
  }

  async listen(port = ADMIN_PORT): Promise<void> {
    this.server.listen(port, '127.0.0.1');
    await once(this.server, 'listening');
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  close(): void {
    this.server.close();
  }
}

/** Istio ztunnel's /logging: POST only; no query lists, `level` changes, `reset` goes back to the startup levels. */
function logging(levels: LogLevels, req: http.IncomingMessage, url: URL, res: http.ServerResponse): void {
  const help = `${LOGGING_HELP}hint: targets:\t${levels.targets().join('|')}\n`;
  if (req.method !== 'POST') {
    res.setHeader('allow', 'POST');
    text(res, 405, `Invalid HTTP method\n${help}`);
    return;
  }
  const level = url.searchParams.get('level') ?? '';
  const reset = url.searchParams.has('reset');
  if (level !== '' || reset) {
    try {
      levels.apply(level, { reset });
    } catch (err) {
      text(res, 400, `Invalid level provided: ${level}: ${(err as Error).message}\n${help}`);
      return;
    }
  }
  text(res, 200, `current log level is ${levels.list()}\n`);
}
