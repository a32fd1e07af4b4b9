// Service ports: their application protocol (Istio's rules) and target ports, resolved per pod
// for named target ports as Kubernetes resolves them for endpoints.

import { AppProtocol } from '../../proto/gen/istio/workload/workload.js';
import type { Pod, Service } from '../../mesh/k8s/types.js';
import { arr, isRecord, portNumber, show, str } from './labels.js';

/** One spec.ports entry, checked. */
export interface ServicePortSpec {
  index: number;
  name: string;
  port: number;
  /** The numeric target port; 0 when it is named (see targetPortName). */
  targetPort: number;
  targetPortName: string;
  protocol: string;
  appProtocol: AppProtocol;
  /** `http`, `http2`, `grpc`, `tcp`, `tls` or `` (Ambit's waypoint wording). */
  protocolName: string;
}

const APP_PROTOCOL_NAMES: ReadonlyMap<AppProtocol, string> = new Map([
  [AppProtocol.HTTP11, 'http'],
  [AppProtocol.HTTP2, 'http2'],
  [AppProtocol.GRPC, 'grpc'],
  [AppProtocol.TCP, 'tcp'],
  [AppProtocol.TLS, 'tls'],
  [AppProtocol.UNKNOWN, ''],
]);

// Istio's protocol names (pkg/config/protocol Parse) as the workload API's AppProtocol.
const PROTOCOLS: ReadonlyMap<string, AppProtocol> = new Map([
  ['http', AppProtocol.HTTP11],
  ['http2', AppProtocol.HTTP2],
  ['grpc', AppProtocol.GRPC],
  // gRPC-Web is HTTP/1.1 or HTTP/2 on the wire; Istio counts it among the HTTP/2 protocols.
  ['grpc-web', AppProtocol.HTTP2],
  ['tcp', AppProtocol.TCP],
  ['mongo', AppProtocol.TCP],
  ['redis', AppProtocol.TCP],
  ['mysql', AppProtocol.TCP],
  ['https', AppProtocol.TLS],
  ['tls', AppProtocol.TLS],
]);

// Istio treats these well-known ports as TCP when nothing else names a protocol.
const WELL_KNOWN_TCP_PORTS: ReadonlySet<number> = new Set([25, 53, 3306, 27017]);

/**
 * Istio's ConvertProtocol (pilot/pkg/serviceregistry/kube/conversion.go): UDP is not a TCP
 * protocol; appProtocol wins over the port name; Kubernetes' kubernetes.io/h2c, ws and wss; a
 * name's prefix before `-` (`grpc-web` whole); unknown names on a few well-known ports are TCP.
 */
export function appProtocolOf(port: { name?: unknown; port?: unknown; protocol?: unknown; appProtocol?: unknown }): AppProtocol {
  if (port.protocol === 'UDP' || port.protocol === 'SCTP') return AppProtocol.UNKNOWN;
  const appProtocol = str(port.appProtocol);
  if (appProtocol === 'kubernetes.io/h2c') return AppProtocol.HTTP2;
  if (appProtocol === 'kubernetes.io/ws') return AppProtocol.HTTP11;
  if (appProtocol === 'kubernetes.io/wss') return AppProtocol.TLS;
  let name = (appProtocol ?? str(port.name) ?? '').toLowerCase();
  if (!name.startsWith('grpc-web')) {
    const dash = name.indexOf('-');
    if (dash >= 0) name = name.slice(0, dash);
  } else {
    name = 'grpc-web';
  }
  const protocol = PROTOCOLS.get(name);
  if (protocol !== undefined) return protocol;
  const number = portNumber(port.port);
  return number !== undefined && WELL_KNOWN_TCP_PORTS.has(number) ? AppProtocol.TCP : AppProtocol.UNKNOWN;
}

export function protocolName(protocol: AppProtocol): string {
  return APP_PROTOCOL_NAMES.get(protocol) ?? '';
}

const DIGITS = /^[0-9]+$/;

// Read by several translations per service; view objects are immutable.
const portCache = new WeakMap<Service, { ports: ServicePortSpec[]; errors: string[] }>();

/** The service's ports that can be translated, and a message for each that cannot. */
export function servicePorts(svc: Service): { ports: ServicePortSpec[]; errors: string[] } {
  let cached = portCache.get(svc);
  if (!cached) portCache.set(svc, (cached = readServicePorts(svc)));
  return cached;
}

function readServicePorts(svc: Service): { ports: ServicePortSpec[]; errors: string[] } {
  const ports: ServicePortSpec[] = [];
  const errors: string[] = [];
  const spec: Record<string, unknown> = isRecord(svc.spec) ? svc.spec : {};
  if (spec.ports !== undefined && !Array.isArray(spec.ports)) errors.push(`spec.ports: ${show(spec.ports)} is not a list; the service has no ports`);
  arr(spec.ports).forEach((raw, index) => {
    const field = `spec.ports[${index}]`;
    if (!isRecord(raw)) {
      errors.push(`${field}: ${show(raw)} is not a port; left out`);
      return;
    }
    const port = portNumber(raw.port);
    if (port === undefined) {
      errors.push(`${field}.port: ${show(raw.port)} is not a port number (1-65535); left out`);
      return;
    }
    let targetPort = port;
    let targetPortName = '';
    if (typeof raw.targetPort === 'string') {
      // Kubernetes port names contain a letter; "8080" in quotes is a number written as a string.
      if (raw.targetPort === '' || DIGITS.test(raw.targetPort)) {
        errors.push(`${field}.targetPort: ${show(raw.targetPort)} is neither a port number nor a port name (write numbers without quotes); left out`);
        return;
      }
      targetPort = 0;
      targetPortName = raw.targetPort;
    } else if (raw.targetPort !== undefined) {
      const n = portNumber(raw.targetPort);
      if (n === undefined) {
        errors.push(`${field}.targetPort: ${show(raw.targetPort)} is not a port number (1-65535); left out`);
        return;
      }
      targetPort = n;
    }
    const protocol = str(raw.protocol) ?? 'TCP';
    const appProtocol = appProtocolOf(raw);
    ports.push({ index, name: str(raw.name) ?? '', port, targetPort, targetPortName, protocol, appProtocol, protocolName: protocolName(appProtocol) });
  });
  return { ports, errors };
}

/**
 * The pod's container port of that name (TCP only, as istiod's FindPortName; a port without a
 * protocol is TCP, Kubernetes' default); undefined when the pod has none.
 */
export function namedContainerPort(pod: Pod, name: string): number | undefined {
  const spec: Record<string, unknown> = isRecord(pod.spec) ? pod.spec : {};
  for (const container of arr(spec.containers)) {
    if (!isRecord(container)) continue;
    for (const p of arr(container.ports)) {
      if (!isRecord(p) || p.name !== name) continue;
      if (p.protocol !== undefined && p.protocol !== 'TCP') continue;
      const port = portNumber(p.containerPort);
      if (port !== undefined) return port;
    }
  }
  return undefined;
}
