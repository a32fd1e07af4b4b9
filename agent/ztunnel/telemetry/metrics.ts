// Istio ztunnel's L4 traffic metrics (istio-ambient-spec.md §7.1, zt:src/proxy/metrics.rs), with the
// same names, labels and label order, so dashboards and alerts written for Istio read Ambit as is.
//
// Cost model: the label set of a connection is built once, at open(), and resolves to a series
// shared by every connection with the same labels; afterwards the hot path only adds plain numbers
// to that series, and prom-client sees them when scraped (its own inc hashes all 27 labels on every
// call). Bytes are not counted per chunk: the proxy hands over cumulative socket counts (on a timer
// for long connections, and at close) and only the delta since the previous report is added.
//
// Denied and failed connections, as Istio's ztunnel records them (read in zt:src/proxy/inbound.rs,
// inbound_passthrough.rs, metrics.rs and istio/ztunnel#1695): once the proxy knows enough to label
// a connection it creates its ConnectionResult, which counts tcp_connections_opened right away; an
// RBAC deny or an upstream connect failure after that point ends it with record_with_flag, which
// counts tcp_connections_closed with response_flags DENY / CONNECT (and, since #1695,
// tcp_connections_failed for the failure flags, §7.1; here with the closed counter's labels, the
// stored sources not showing the final code). So a denied connection is opened AND closed, never
// silently missing from the opened/closed pair. Only failures before that context exists (TLS
// handshake, a non-CONNECT request, an unknown destination) record no metric at all: they get
// log_early_deny's "connection failed" access-log line and nothing else. failed() below is the
// former; the latter is the proxy not calling this module.
import { AggregatorRegistry, Counter, Gauge, type Registry } from 'prom-client';
import type { Workload } from '../../../proto/gen/istio/workload/workload.js';
import type { ConnectionBytes, ConnectionInfo, ResponseFlag } from '../proxy/connection.js';

/** One worker's metrics as `Registry.getMetricsAsJSON()` gives them (structured-clone safe, so they cross threads). */
export type WorkerMetrics = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** CommonTrafficLabels in Istio's order; the locality four come last and only when a workload is known. */
export const TRAFFIC_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
  'source_region',
  'source_zone',
  'destination_region',
  'destination_zone',
] as const;

export type TrafficLabel = (typeof TRAFFIC_LABELS)[number];
export type TrafficLabels = Partial<Record<TrafficLabel, string>>;

const UNKNOWN = 'unknown';

/** Istio's DefaultedUnknown: an absent or empty value is `unknown`. */
function orUnknown(v: string | undefined): string {
  return v ? v : UNKNOWN;
}

/**
 * The label set Istio's ztunnel puts on a connection's metrics. Key order is the exposition order
 * (prom-client writes labels in the order the object has them).
 */
export function trafficLabels(info: ConnectionInfo, flag: ResponseFlag = '-'): TrafficLabels {
  const s = info.src.workload;
  const d = info.dst.workload;
  const svc = info.dst.service;
  const labels: TrafficLabels = {
    reporter: info.reporter,
    source_workload: orUnknown(s?.workloadName),
    source_canonical_service: orUnknown(s?.canonicalName),
    source_canonical_revision: orUnknown(s?.canonicalRevision),
    source_workload_namespace: orUnknown(s?.namespace),
    source_principal: orUnknown(info.src.identity),
    source_app: orUnknown(s?.canonicalName),
    source_version: orUnknown(s?.canonicalRevision),
    source_cluster: orUnknown(s?.clusterId),
    destination_service: orUnknown(svc?.hostname),
    destination_service_namespace: orUnknown(svc?.namespace),
    destination_service_name: orUnknown(svc?.name),
    destination_workload: orUnknown(d?.workloadName),
    destination_canonical_service: orUnknown(d?.canonicalName),
    destination_canonical_revision: orUnknown(d?.canonicalRevision),
    destination_workload_namespace: orUnknown(d?.namespace),
    destination_principal: orUnknown(info.dst.identity),
    destination_app: orUnknown(d?.canonicalName),
    destination_version: orUnknown(d?.canonicalRevision),
    destination_cluster: orUnknown(d?.clusterId),
    request_protocol: 'tcp',
    response_flags: flag,
    connection_security_policy: info.mtls ? 'mutual_tls' : UNKNOWN,
  };
  // Istio encodes the locality labels as one optional group: all four once either side is known.
  if (s || d) {
    labels.source_region = region(s);
    labels.source_zone = zone(s);
    labels.destination_region = region(d);
    labels.destination_zone = zone(d);
  }
  return labels;
}

const region = (w: Workload | undefined) => orUnknown(w?.locality?.region);
const zone = (w: Workload | undefined) => orUnknown(w?.locality?.zone);

const ZERO: ConnectionBytes = { sent: 0, received: 0 };

/** The counts of one label set. Plain numbers: prom-client reads them only when scraped. */
interface Series {
  readonly labels: TrafficLabels;
  opened: number;
  closed: number;
  failed: number;
  received: number;
  sent: number;
}

/** Counters of one connection. Not shared between connections; close() is idempotent. */
export class ConnectionMetrics {
  private sent = 0;
  private received = 0;
  private closed = false;

  constructor(
    private readonly m: TrafficMetrics,
    private readonly series: Series,
    private readonly reporter: string,
  ) {}

  /** Adds what the connection moved since the last report; `bytes` are cumulative counts. */
  flush(bytes: ConnectionBytes): void {
    if (this.closed) return;
    this.add(bytes);
  }

  /** The final report: bytes, the closed counter with the connection's response flag, one socket fewer. */
  close(bytes: ConnectionBytes, flag: ResponseFlag = '-'): void {
    if (this.closed) return;
    this.add(bytes);
    this.closed = true;
    if (flag === '-') {
      this.series.closed++;
    } else {
      const flagged = this.m.series({ ...this.series.labels, response_flags: flag });
      flagged.closed++;
      flagged.failed++;
    }
    this.m.socketClosed(this.reporter);
  }

  private add(bytes: ConnectionBytes): void {
    // Istio's bytes counters carry the labels the connection opened with (response_flags "-").
    // received = client→server, sent = server→client, for both reporters (zt:src/copy.rs).
    if (bytes.received > this.received) {
      this.series.received += bytes.received - this.received;
      this.received = bytes.received;
    }
    if (bytes.sent > this.sent) {
      this.series.sent += bytes.sent - this.sent;
      this.sent = bytes.sent;
    }
  }
}

export class TrafficMetrics {
  // Keyed by the label values: connections with the same labels share one series.
  private readonly all = new Map<string, Series>();
  private readonly sockets = new Map<string, number>();

  /** `tag` is istio_build's tag label: the version this build reports. */
  constructor(registry: Registry, tag = UNKNOWN) {
    const all = this.all;
    const counter = (name: string, help: string, read: (s: Series) => number) =>
      new Counter({
        name,
        help,
        labelNames: TRAFFIC_LABELS,
        registers: [registry],
        // Written out from the series at scrape time, so a connection never pays for label hashing.
        collect() {
          this.reset();
          for (const s of all.values()) {
            const v = read(s);
            if (v > 0) this.inc(s.labels, v);
          }
        },
      });
    counter('istio_tcp_connections_opened_total', 'The total number of TCP connections opened', (s) => s.opened);
    counter('istio_tcp_connections_closed_total', 'The total number of TCP connections closed', (s) => s.closed);
    counter('istio_tcp_received_bytes_total', 'The size of total bytes received during request in case of a TCP connection', (s) => s.received);
    counter('istio_tcp_sent_bytes_total', 'The size of total bytes sent during response in case of a TCP connection', (s) => s.sent);
    counter('istio_tcp_connections_failed_total', 'The total number of TCP connections that failed to establish (unstable)', (s) => s.failed);
    const sockets = this.sockets;
    new Gauge({
      name: 'istio_tcp_sockets_open',
      help: 'The current number of open TCP sockets (unstable)',
      labelNames: ['reporter'],
      registers: [registry],
      collect() {
        for (const [reporter, n] of sockets) this.set({ reporter }, n);
      },
    });
    // One per process, not per worker: summing N workers' 1s would report N builds.
    const build = new Gauge({ name: 'istio_build', help: 'Istio component build info', labelNames: ['component', 'tag'], registers: [registry], aggregator: 'first' });
    build.set({ component: 'ztunnel', tag }, 1);
  }

  /** A connection the proxy established (or is about to): counts it opened and its socket open. */
  open(info: ConnectionInfo): ConnectionMetrics {
    const series = this.series(trafficLabels(info));
    series.opened++;
    this.sockets.set(info.reporter, (this.sockets.get(info.reporter) ?? 0) + 1);
    return new ConnectionMetrics(this, series, info.reporter);
  }

  /**
   * A connection refused or failed at setup, once the proxy could label it (policy deny, upstream
   * connect failure): opened and closed with `flag`, and failed, as Istio's record_with_flag does.
   */
  failed(info: ConnectionInfo, flag: ResponseFlag): void {
    this.open(info).close(ZERO, flag);
  }

  /** @internal The shared series of a label set. */
  series(labels: TrafficLabels): Series {
    let key = '';
    for (const k in labels) key += `${labels[k as TrafficLabel]}\u0000`;
    let s = this.all.get(key);
    if (!s) {
      s = { labels, opened: 0, closed: 0, failed: 0, received: 0, sent: 0 };
      this.all.set(key, s);
    }
    return s;
  }

  /** @internal */
  socketClosed(reporter: string): void {
    this.sockets.set(reporter, (this.sockets.get(reporter) ?? 0) - 1);
  }
}

/** Sums the registries of N worker threads into one Prometheus text exposition. */
export async function aggregateMetrics(perWorker: WorkerMetrics[]): Promise<string> {
  return AggregatorRegistry.aggregate(perWorker).metrics();
}
