// Istio ztunnel's access log (istio-ambient-spec.md §7.3, zt:src/proxy/metrics.rs): the same
// messages, levels and dotted field names, so log queries written for Istio's JSON logs match.
// The caller passes the child logger of target `access`; its level decides what is written, and
// nothing is built for a line that level would drop.
import type { Logger } from '../../../mesh/log.js';
import type { ConnectionBytes, ConnectionEnd, ConnectionInfo } from '../proxy/connection.js';

/** `ip:port`, with brackets for IPv6, as Rust's SocketAddr prints it. */
export function endpointText(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Pod name, falling back to the canonical service (Istio's src.workload / dst.workload). */
function workloadName(end: ConnectionEnd): string | undefined {
  return end.workload?.name || end.workload?.canonicalName || undefined;
}

type Fields = Record<string, string | number>;

function put(f: Fields, key: string, value: string | undefined): void {
  if (value) f[key] = value;
}

function connectionFields(info: ConnectionInfo): Fields {
  const { src, dst } = info;
  const f: Fields = { 'src.addr': endpointText(src.addr, src.port) };
  put(f, 'src.workload', workloadName(src));
  put(f, 'src.namespace', src.workload?.namespace);
  if (info.mtls) put(f, 'src.identity', src.identity);
  put(f, 'src.cluster', src.workload?.clusterId);
  f['dst.addr'] = endpointText(dst.addr, dst.port);
  put(f, 'dst.hbone_addr', dst.hboneAddr);
  put(f, 'dst.service', dst.service?.hostname);
  put(f, 'dst.workload', workloadName(dst));
  put(f, 'dst.namespace', dst.workload?.namespace);
  if (info.mtls) put(f, 'dst.identity', dst.identity);
  put(f, 'dst.cluster', dst.workload?.clusterId);
  f.direction = info.direction;
  return f;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** DEBUG "connection opened". */
export function logOpened(log: Logger, info: ConnectionInfo): void {
  if (!log.isLevelEnabled('debug')) return;
  log.debug(connectionFields(info), 'connection opened');
}

/**
 * INFO "connection complete", or ERROR with `error` when the connection ended badly. Byte counts are
 * the reporter's own view, so the source side's "sent" is what its client sent (Istio un-flips the
 * metric's direction for the log): outbound bytes_sent = client→server, inbound bytes_sent =
 * server→client.
 */
export function logComplete(log: Logger, info: ConnectionInfo, bytes: ConnectionBytes, error?: unknown): void {
  const failed = error !== undefined && error !== null && error !== '';
  if (!log.isLevelEnabled(failed ? 'error' : 'info')) return;
  const f = connectionFields(info);
  const outbound = info.reporter === 'source';
  f.bytes_sent = outbound ? bytes.received : bytes.sent;
  f.bytes_recv = outbound ? bytes.sent : bytes.received;
  f.duration = `${Math.max(0, Date.now() - info.startedAt)}ms`;
  if (failed) {
    f.error = errorText(error);
    log.error(f, 'connection complete');
  } else {
    log.info(f, 'connection complete');
  }
}

/** WARN "connection failed": a deny before the connection could be described, so addresses and direction only. */
export function logFailed(log: Logger, info: ConnectionInfo, error: unknown): void {
  if (!log.isLevelEnabled('warn')) return;
  log.warn(
    { 'src.addr': endpointText(info.src.addr, info.src.port), 'dst.addr': endpointText(info.dst.addr, info.dst.port), direction: info.direction, error: errorText(error) },
    'connection failed',
  );
}
