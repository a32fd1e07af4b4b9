// Reads Kubernetes YAML (plus Ambit's Lab document) into typed objects, rejecting what the API
// server would reject. The lab and the file config source have no API server in front of them, so
// this module is the validation a user would otherwise get from `kubectl apply`, and its errors must
// be as precise: file, document number, object and field path.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigError, errorMessage } from '../errors.js';
import { DEFAULT_TRUST_DOMAIN } from '../identity/spiffe.js';
import type {
  Container,
  ContainerPort,
  Deployment,
  Namespace,
  ObjectMeta,
  OwnerReference,
  Pod,
  PodSpec,
  Service,
  ServicePort,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// Public shapes

export const LAB_API_VERSION = 'ambit.dev/v1alpha1';
export const LAB_KIND = 'Lab';
export const DEFAULT_SERVICE_CIDR = '10.96.0.0/16';
export const DEFAULT_FABRIC_CIDR = '172.30.0.0/24';
export const DEFAULT_FAIL_MODE: LabFailMode = 'closed';
export { DEFAULT_TRUST_DOMAIN };
/** Lab names end up inside network namespace and pin path names; keep them short. */
export const LAB_NAME_MAX = 32;
/** Annotation on Pods expanded from a Deployment, naming it (the lab has no ReplicaSets). */
export const OWNER_ANNOTATION = 'ambit.dev/owner';
/** More than any node of any cluster runs, and small enough to expand in memory. */
export const MAX_REPLICAS = 10_000;

export type LabFailMode = 'closed' | 'open';

export interface LabNode {
  name: string;
  /** Unset: the planner assigns 10.244.<index+1>.0/24. */
  podCIDR?: string;
}

/** The `ambit.dev/v1alpha1 Lab` document, with its defaults applied. */
export interface LabDocument {
  apiVersion: typeof LAB_API_VERSION;
  kind: typeof LAB_KIND;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: {
    nodes: LabNode[];
    serviceCIDR: string;
    fabricCIDR: string;
    failMode: LabFailMode;
    /** The mesh's SPIFFE trust domain. */
    trustDomain: string;
    /** Each node ztunnel's proxy worker threads (`ambit ztunnel --workers`). */
    ztunnelWorkers: number;
  };
}

export interface OtherObject {
  source: string;
  /** 1-based document number within `source`. */
  index: number;
  apiVersion: string;
  kind: string;
  object: Record<string, unknown>;
}

/** Where an object came from, for error messages of later stages (the lab planner). */
export interface ManifestOrigin {
  source: string;
  index: number;
  /** For Pods expanded from a Deployment: `Deployment ns/name`. */
  via?: string;
}

export interface Manifest {
  namespaces: Namespace[];
  /** Declared Pods, then the Pods expanded from Deployments. */
  pods: Pod[];
  services: Service[];
  deployments: Deployment[];
  labs: LabDocument[];
  /** Kinds this module does not model (AuthorizationPolicy, Gateway, ...), exactly as written. */
  others: OtherObject[];
  /** Keyed by objectKey(kind, namespace, name). Absent on manifests not built by this module. */
  origins?: ReadonlyMap<string, ManifestOrigin>;
}

/** Namespaces every cluster has, so objects may live in them without a Namespace document. */
export const BUILTIN_NAMESPACES: readonly string[] = ['default', 'kube-system'];

export function objectKey(kind: string, namespace: string | undefined, name: string): string {
  return namespace === undefined ? `${kind} ${name}` : `${kind} ${namespace}/${name}`;
}

/** `lab.yaml: document 3 (Pod demo/web)` when the origin is known, else `source: Pod demo/web`. */
export function describeObject(manifest: Manifest, source: string, kind: string, namespace: string | undefined, name: string): string {
  const key = objectKey(kind, namespace, name);
  const origin = manifest.origins?.get(key);
  if (!origin) return `${source}: ${key}`;
  return `${origin.source}: document ${origin.index} (${key}${origin.via ? `, from ${origin.via}` : ''})`;
}

// ---------------------------------------------------------------------------------------------
// IPv4 arithmetic, shared with the lab planner (addresses as unsigned 32-bit numbers)

export interface Ipv4Cidr {
  /** The network address. */
  readonly network: number;
  readonly prefix: number;
  /** Number of addresses, network and broadcast included. */
  readonly size: number;
  readonly text: string;
}

export function parseIpv4(text: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  let n = 0;
  for (const part of m.slice(1)) {
    // Leading zeros are rejected as Go's net.ParseIP does (they once meant octal).
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const v = Number(part);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Returns the CIDR, or a phrase saying what is wrong (callers prefix the field path). */
export function parseIpv4Cidr(text: string, minPrefix = 0, maxPrefix = 32): Ipv4Cidr | string {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  const network = m ? parseIpv4(m[1]!) : undefined;
  if (!m || network === undefined) return `must be an IPv4 CIDR like 10.0.0.0/24, got ${JSON.stringify(text)}`;
  const prefix = Number(m[2]);
  if (prefix < minPrefix || prefix > maxPrefix) {
    return `prefix length must be between /${minPrefix} and /${maxPrefix}, got ${JSON.stringify(text)}`;
  }
  const size = 2 ** (32 - prefix);
  if (network % size !== 0) {
    return `host bits must be zero (did you mean ${formatIpv4(network - (network % size))}/${prefix}?), got ${JSON.stringify(text)}`;
  }
  return { network, prefix, size, text };
}

export function cidrContains(cidr: Ipv4Cidr, ip: number): boolean {
  return ip >= cidr.network && ip < cidr.network + cidr.size;
}

export function cidrsOverlap(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  return a.network < b.network + b.size && b.network < a.network + a.size;
}

/** Pod CIDRs need room for the gateway (.1), the ztunnel (.2) and at least one pod. */
export const POD_CIDR_PREFIX: readonly [number, number] = [8, 29];
export const SERVICE_CIDR_PREFIX: readonly [number, number] = [8, 28];
export const FABRIC_CIDR_PREFIX: readonly [number, number] = [8, 28];

// ---------------------------------------------------------------------------------------------
// Entry points

export function parseManifests(text: string, source: string): Manifest {
  const collector = new Collector();
  collector.addText(text, source);
  return collector.finish();
}

/** Each path is a file, or a directory whose `*.yaml` / `*.yml` files are read in name order. */
export function loadManifests(paths: string[]): Manifest {
  const collector = new Collector();
  for (const path of paths) {
    for (const file of manifestFiles(path)) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        throw new ConfigError(`${file}: cannot read: ${errorMessage(err)}`, { cause: err });
      }
      collector.addText(text, file);
    }
  }
  return collector.finish();
}

function manifestFiles(path: string): string[] {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch (err) {
    throw new ConfigError(`${path}: cannot read: ${errorMessage(err)}`, { cause: err });
  }
  if (!isDirectory) return [path];
  return readdirSync(path)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => join(path, name));
}

// ---------------------------------------------------------------------------------------------
// Field validation

interface DocContext {
  source: string;
  index: number;
  /** `Kind ns/name`, once known. */
  label?: string;
}

function where(ctx: DocContext): string {
  return `${ctx.source}: document ${ctx.index}${ctx.label ? ` (${ctx.label})` : ''}`;
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  if (typeof value === 'string') {
    const quoted = JSON.stringify(value);
    return quoted.length > 70 ? `${quoted.slice(0, 66)}..."` : quoted;
  }
  return String(value);
}

type Raw = Record<string, unknown>;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const IANA_SVC_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function isDns1123Label(s: string): boolean {
  return s.length <= 63 && DNS1123_LABEL.test(s);
}

export function isDns1123Subdomain(s: string): boolean {
  return s.length <= 253 && DNS1123_SUBDOMAIN.test(s);
}

/** A named port (IANA_SVC_NAME): at most 15 characters, at least one letter, no "--". */
export function isIanaSvcName(s: string): boolean {
  return s.length <= 15 && IANA_SVC_NAME.test(s) && /[a-z]/.test(s) && !s.includes('--');
}

const LABEL_RULE = "a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)";
const SUBDOMAIN_RULE = "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)";

/** Validates fields of one document; every failure throws a ConfigError naming the field. */
class Fields {
  constructor(readonly ctx: DocContext) {}

  fail(path: string, message: string): never {
    throw new ConfigError(`${where(this.ctx)}: ${path ? `${path}: ` : ''}${message}`);
  }

  map(value: unknown, path: string): Raw {
    if (value === undefined || value === null) this.fail(path, 'is required');
    if (typeof value !== 'object' || Array.isArray(value)) this.fail(path, `must be a map, got ${show(value)}`);
    return value as Raw;
  }

  optMap(value: unknown, path: string): Raw | undefined {
    return value === undefined || value === null ? undefined : this.map(value, path);
  }

  list(value: unknown, path: string): unknown[] {
    if (value === undefined || value === null) this.fail(path, 'is required');
    if (!Array.isArray(value)) this.fail(path, `must be a list, got ${show(value)}`);
    return value;
  }

  string(value: unknown, path: string): string {
    if (value === undefined || value === null) this.fail(path, 'is required');
    if (typeof value !== 'string') this.fail(path, `must be a string, got ${show(value)}`);
    if (value === '') this.fail(path, 'must not be empty');
    return value;
  }

  optString(value: unknown, path: string): string | undefined {
    return value === undefined || value === null ? undefined : this.string(value, path);
  }

  bool(value: unknown, path: string): boolean | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'boolean') this.fail(path, `must be true or false, got ${show(value)}`);
    return value;
  }

  int(value: unknown, path: string, min: number, max: number): number {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}-${max}`;
    if (value === undefined || value === null) this.fail(path, `is required (an integer ${range})`);
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.fail(path, `must be an integer ${range}, got ${show(value)}`);
    }
    return value;
  }

  port(value: unknown, path: string): number {
    return this.int(value, path, 1, 65535);
  }

  label(value: unknown, path: string, max = 63): string {
    const s = this.string(value, path);
    if (s.length > max || !DNS1123_LABEL.test(s)) {
      const rule = max === 63 ? LABEL_RULE : LABEL_RULE.replace('at most 63', `at most ${max}`);
      this.fail(path, `must be ${rule}, got ${show(s)}`);
    }
    return s;
  }

  subdomain(value: unknown, path: string): string {
    const s = this.string(value, path);
    if (!isDns1123Subdomain(s)) this.fail(path, `must be ${SUBDOMAIN_RULE}, got ${show(s)}`);
    return s;
  }

  portName(value: unknown, path: string): string {
    const s = this.string(value, path);
    if (!isIanaSvcName(s)) {
      this.fail(path, `must be an IANA service name (at most 15 lowercase letters, digits and '-', with at least one letter), got ${show(s)}`);
    }
    return s;
  }

  protocol(value: unknown, path: string): 'TCP' | 'UDP' | 'SCTP' | undefined {
    if (value === undefined || value === null) return undefined;
    if (value !== 'TCP' && value !== 'UDP' && value !== 'SCTP') this.fail(path, `must be TCP, UDP or SCTP, got ${show(value)}`);
    return value;
  }

  /** Label or annotation keys: an optional DNS subdomain prefix and '/', then a name of <= 63. */
  qualifiedName(key: string, path: string): void {
    const slash = key.indexOf('/');
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    const ok = (prefix === undefined || isDns1123Subdomain(prefix)) && name.length <= 63 && QUALIFIED_NAME.test(name);
    if (!ok) {
      this.fail(path, `key ${show(key)} is not a valid Kubernetes key (an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)`);
    }
  }

  stringMap(value: unknown, path: string, what: 'labels' | 'annotations'): Record<string, string> | undefined {
    const raw = this.optMap(value, path);
    if (!raw) return undefined;
    const out: Record<string, string> = {};
    for (const [key, v] of Object.entries(raw)) {
      const keyPath = `${path}[${JSON.stringify(key)}]`;
      this.qualifiedName(key, path);
      // The most common mistake: `version: 1` or `enabled: true` unquoted.
      if (typeof v !== 'string') this.fail(keyPath, `must be a string (quote it), got ${show(v)}`);
      if (what === 'labels' && v !== '' && (v.length > 63 || !QUALIFIED_NAME.test(v))) {
        this.fail(keyPath, `label values must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, got ${show(v)}`);
      }
      out[key] = v;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Kinds

const KNOWN_KINDS: Readonly<Record<string, string>> = {
  Namespace: 'v1',
  Pod: 'v1',
  Service: 'v1',
  Deployment: 'apps/v1',
  [LAB_KIND]: LAB_API_VERSION,
};

/** API groups whose kinds we model: a known kind there with another version is a mistake. */
const MODELLED_GROUPS = new Set(['', 'apps', 'ambit.dev']);

function apiGroup(apiVersion: string): string {
  const slash = apiVersion.indexOf('/');
  return slash < 0 ? '' : apiVersion.slice(0, slash);
}

function parseMetadata(f: Fields, value: unknown, opts: { namespaced: boolean; name: 'label' | 'subdomain'; nameMax?: number }): ObjectMeta {
  const raw = f.map(value, 'metadata');
  const name = opts.name === 'label' ? f.label(raw.name, 'metadata.name', opts.nameMax) : f.subdomain(raw.name, 'metadata.name');
  const meta: ObjectMeta = { name };
  if (opts.namespaced) meta.namespace = raw.namespace === undefined || raw.namespace === null ? 'default' : f.label(raw.namespace, 'metadata.namespace');
  const labels = f.stringMap(raw.labels, 'metadata.labels', 'labels');
  const annotations = f.stringMap(raw.annotations, 'metadata.annotations', 'annotations');
  if (labels) meta.labels = labels;
  if (annotations) meta.annotations = annotations;
  const uid = f.optString(raw.uid, 'metadata.uid');
  if (uid !== undefined) meta.uid = uid;
  return meta;
}

function parseContainerPort(f: Fields, value: unknown, path: string): ContainerPort {
  const raw = f.map(value, path);
  const port: ContainerPort = { containerPort: f.port(raw.containerPort, `${path}.containerPort`) };
  if (raw.name !== undefined && raw.name !== null) port.name = f.portName(raw.name, `${path}.name`);
  const protocol = f.protocol(raw.protocol, `${path}.protocol`);
  if (protocol) port.protocol = protocol;
  return port;
}

function parseContainer(f: Fields, value: unknown, path: string): Container {
  const raw = f.map(value, path);
  const container: Container = { name: f.label(raw.name, `${path}.name`) };
  const image = f.optString(raw.image, `${path}.image`);
  if (image !== undefined) container.image = image;
  if (raw.ports !== undefined && raw.ports !== null) {
    const seen = new Map<string, number>();
    container.ports = f.list(raw.ports, `${path}.ports`).map((p, i) => {
      const port = parseContainerPort(f, p, `${path}.ports[${i}]`);
      if (port.name !== undefined) {
        const first = seen.get(port.name);
        if (first !== undefined) f.fail(`${path}.ports[${i}].name`, `duplicate port name ${show(port.name)} (also ${path}.ports[${first}])`);
        seen.set(port.name, i);
      }
      return port;
    });
  }
  return container;
}

function parsePodSpec(f: Fields, value: unknown, path: string): PodSpec {
  const raw = f.map(value, path);
  const list = f.list(raw.containers, `${path}.containers`);
  if (list.length === 0) f.fail(`${path}.containers`, 'must list at least one container');
  const names = new Map<string, number>();
  const containers = list.map((c, i) => {
    const container = parseContainer(f, c, `${path}.containers[${i}]`);
    const first = names.get(container.name);
    if (first !== undefined) f.fail(`${path}.containers[${i}].name`, `duplicate container name ${show(container.name)} (also ${path}.containers[${first}])`);
    names.set(container.name, i);
    return container;
  });
  const spec: PodSpec = { containers };
  if (raw.nodeName !== undefined && raw.nodeName !== null) spec.nodeName = f.subdomain(raw.nodeName, `${path}.nodeName`);
  const hostNetwork = f.bool(raw.hostNetwork, `${path}.hostNetwork`);
  if (hostNetwork !== undefined) spec.hostNetwork = hostNetwork;
  if (raw.serviceAccountName !== undefined && raw.serviceAccountName !== null) {
    spec.serviceAccountName = f.subdomain(raw.serviceAccountName, `${path}.serviceAccountName`);
  }
  return spec;
}

function parsePod(f: Fields, raw: Raw): Pod {
  // status is not configuration: the API server ignores it on create, and so do we (a pasted
  // `kubectl get -o yaml` must not carry another cluster's pod IP into the lab).
  const metadata = parseMetadata(f, raw.metadata, { namespaced: true, name: 'subdomain' });
  parsePodProvenance(f, raw.metadata as Raw, metadata);
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec: parsePodSpec(f, raw.spec, 'spec') };
}

/**
 * A pod's creation time and owners, when the file gives them: what the control plane reports as
 * the workload's age and controller (a pod pasted from a cluster keeps them).
 */
function parsePodProvenance(f: Fields, raw: Raw, meta: ObjectMeta): void {
  if (raw.creationTimestamp !== undefined && raw.creationTimestamp !== null) {
    const text = f.string(raw.creationTimestamp, 'metadata.creationTimestamp');
    if (!RFC3339.test(text) || Number.isNaN(Date.parse(text))) f.fail('metadata.creationTimestamp', `must be an RFC 3339 time such as 2024-01-31T12:00:00Z, got ${show(text)}`);
    meta.creationTimestamp = text;
  }
  if (raw.ownerReferences !== undefined && raw.ownerReferences !== null) {
    meta.ownerReferences = f.list(raw.ownerReferences, 'metadata.ownerReferences').map((value, i) => {
      const path = `metadata.ownerReferences[${i}]`;
      const ref = f.map(value, path);
      const owner: OwnerReference = { kind: f.string(ref.kind, `${path}.kind`), name: f.string(ref.name, `${path}.name`) };
      const apiVersion = f.optString(ref.apiVersion, `${path}.apiVersion`);
      if (apiVersion !== undefined) owner.apiVersion = apiVersion;
      const uid = f.optString(ref.uid, `${path}.uid`);
      if (uid !== undefined) owner.uid = uid;
      const controller = f.bool(ref.controller, `${path}.controller`);
      if (controller !== undefined) owner.controller = controller;
      return owner;
    });
  }
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function parseNamespace(f: Fields, raw: Raw): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: parseMetadata(f, raw.metadata, { namespaced: false, name: 'label' }) };
}

const SERVICE_TYPES = new Set(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);

function parseServicePort(f: Fields, value: unknown, path: string): ServicePort {
  const raw = f.map(value, path);
  const port: ServicePort = { port: f.port(raw.port, `${path}.port`) };
  if (raw.name !== undefined && raw.name !== null) port.name = f.label(raw.name, `${path}.name`);
  const target = raw.targetPort;
  if (typeof target === 'number') port.targetPort = f.port(target, `${path}.targetPort`);
  else if (typeof target === 'string') port.targetPort = f.portName(target, `${path}.targetPort`);
  else if (target !== undefined && target !== null) {
    f.fail(`${path}.targetPort`, `must be a port number 1-65535 or the name of a container port, got ${show(target)}`);
  }
  const protocol = f.protocol(raw.protocol, `${path}.protocol`);
  if (protocol) port.protocol = protocol;
  const appProtocol = f.optString(raw.appProtocol, `${path}.appProtocol`);
  if (appProtocol !== undefined) port.appProtocol = appProtocol;
  return port;
}

function parseService(f: Fields, raw: Raw): Service {
  const metadata = parseMetadata(f, raw.metadata, { namespaced: true, name: 'label' });
  const spec = f.map(raw.spec, 'spec');
  const out: Service['spec'] = { ports: [] };
  const type = f.optString(spec.type, 'spec.type');
  if (type !== undefined) {
    if (!SERVICE_TYPES.has(type)) f.fail('spec.type', `must be ClusterIP, NodePort, LoadBalancer or ExternalName, got ${show(type)}`);
    out.type = type;
  }
  if (spec.clusterIP !== undefined && spec.clusterIP !== null && spec.clusterIP !== '') {
    const ip = f.string(spec.clusterIP, 'spec.clusterIP');
    if (ip !== 'None' && parseIpv4(ip) === undefined) f.fail('spec.clusterIP', `must be an IPv4 address or "None" (headless), got ${show(ip)}`);
    out.clusterIP = ip;
  }
  const clusterIPs = spec.clusterIPs === undefined || spec.clusterIPs === null ? [] : f.list(spec.clusterIPs, 'spec.clusterIPs').map((v, i) => f.string(v, `spec.clusterIPs[${i}]`));
  // IPv4 only, as everywhere in the lab: one address at most (a second one would be the IPv6 family).
  if (clusterIPs.length > 1) f.fail('spec.clusterIPs', `must list at most one address (the lab is IPv4-only), got ${clusterIPs.length}`);
  if (clusterIPs.length === 1) {
    const ip = clusterIPs[0]!;
    if (ip !== 'None' && parseIpv4(ip) === undefined) f.fail('spec.clusterIPs[0]', `must be an IPv4 address or "None" (headless), got ${show(ip)}`);
    // The API server's rule: clusterIPs[0] is clusterIP, and either one defaults the other.
    if (out.clusterIP !== undefined && out.clusterIP !== ip) f.fail('spec.clusterIPs[0]', `must equal spec.clusterIP ${show(out.clusterIP)}, got ${show(ip)}`);
    out.clusterIP = ip;
    out.clusterIPs = [ip];
  }
  const trafficDistribution = f.optString(spec.trafficDistribution, 'spec.trafficDistribution');
  if (trafficDistribution !== undefined) out.trafficDistribution = trafficDistribution;
  const selector = f.stringMap(spec.selector, 'spec.selector', 'labels');
  if (selector) out.selector = selector;
  const headless = out.clusterIP === 'None';
  if (spec.ports === undefined || spec.ports === null) {
    if (!headless && type !== 'ExternalName') f.fail('spec.ports', 'is required (only headless services may omit ports)');
  } else {
    const list = f.list(spec.ports, 'spec.ports');
    if (list.length === 0 && !headless && type !== 'ExternalName') f.fail('spec.ports', 'must list at least one port');
    const names = new Map<string, number>();
    const numbers = new Map<string, number>();
    out.ports = list.map((p, i) => {
      const port = parseServicePort(f, p, `spec.ports[${i}]`);
      if (list.length > 1 && port.name === undefined) f.fail(`spec.ports[${i}].name`, 'is required when a service has more than one port');
      if (port.name !== undefined) {
        const first = names.get(port.name);
        if (first !== undefined) f.fail(`spec.ports[${i}].name`, `duplicate port name ${show(port.name)} (also spec.ports[${first}])`);
        names.set(port.name, i);
      }
      const key = `${port.port}/${port.protocol ?? 'TCP'}`;
      const first = numbers.get(key);
      if (first !== undefined) f.fail(`spec.ports[${i}].port`, `duplicate port ${key} (also spec.ports[${first}])`);
      numbers.set(key, i);
      return port;
    });
  }
  return { apiVersion: 'v1', kind: 'Service', metadata, spec: out };
}

type Requirement = (labels: Record<string, string>) => boolean;

/** A label selector as Kubernetes evaluates it; returns the predicate and whether it is empty. */
function parseLabelSelector(f: Fields, value: unknown, path: string): { matchLabels?: Record<string, string>; matches: Requirement; empty: boolean } {
  const raw = f.map(value, path);
  const matchLabels = f.stringMap(raw.matchLabels, `${path}.matchLabels`, 'labels');
  const requirements: Requirement[] = [];
  for (const [k, v] of Object.entries(matchLabels ?? {})) requirements.push((labels) => labels[k] === v);
  if (raw.matchExpressions !== undefined && raw.matchExpressions !== null) {
    f.list(raw.matchExpressions, `${path}.matchExpressions`).forEach((e, i) => {
      const p = `${path}.matchExpressions[${i}]`;
      const expr = f.map(e, p);
      const key = f.string(expr.key, `${p}.key`);
      const operator = f.string(expr.operator, `${p}.operator`);
      const values = expr.values === undefined || expr.values === null ? [] : f.list(expr.values, `${p}.values`).map((v, j) => f.string(v, `${p}.values[${j}]`));
      switch (operator) {
        case 'In':
        case 'NotIn':
          if (values.length === 0) f.fail(`${p}.values`, `must not be empty for operator ${operator}`);
          requirements.push(operator === 'In' ? (l) => l[key] !== undefined && values.includes(l[key]!) : (l) => l[key] === undefined || !values.includes(l[key]!));
          break;
        case 'Exists':
        case 'DoesNotExist':
          if (values.length > 0) f.fail(`${p}.values`, `must be empty for operator ${operator}`);
          requirements.push(operator === 'Exists' ? (l) => l[key] !== undefined : (l) => l[key] === undefined);
          break;
        default:
          f.fail(`${p}.operator`, `must be In, NotIn, Exists or DoesNotExist, got ${show(operator)}`);
      }
    });
  }
  const selector: { matchLabels?: Record<string, string>; matches: Requirement; empty: boolean } = {
    matches: (labels) => requirements.every((r) => r(labels)),
    empty: requirements.length === 0,
  };
  if (matchLabels) selector.matchLabels = matchLabels;
  return selector;
}

function parseDeployment(f: Fields, raw: Raw): Deployment {
  const metadata = parseMetadata(f, raw.metadata, { namespaced: true, name: 'subdomain' });
  const spec = f.map(raw.spec, 'spec');
  // Bounded because every replica becomes a Pod object in memory: an absurd count must be an
  // error naming the field, not an agent killed by its heap limit.
  const replicas = spec.replicas === undefined || spec.replicas === null ? undefined : f.int(spec.replicas, 'spec.replicas', 0, MAX_REPLICAS);
  const template = f.map(spec.template, 'spec.template');
  const tmeta = f.optMap(template.metadata, 'spec.template.metadata') ?? {};
  const labels = f.stringMap(tmeta.labels, 'spec.template.metadata.labels', 'labels');
  const annotations = f.stringMap(tmeta.annotations, 'spec.template.metadata.annotations', 'annotations');
  const podSpec = parsePodSpec(f, template.spec, 'spec.template.spec');
  const selector = parseLabelSelector(f, spec.selector, 'spec.selector');
  // apps/v1 requires a non-empty selector that the template's labels satisfy; without it the
  // Deployment would own no pods (or other controllers' pods).
  if (selector.empty) f.fail('spec.selector', 'must not be empty (apps/v1 requires a selector matching the template labels)');
  if (!selector.matches(labels ?? {})) {
    f.fail('spec.template.metadata.labels', `${JSON.stringify(labels ?? {})} does not match spec.selector (Kubernetes requires the template to carry the selector's labels)`);
  }
  const templateMeta: Deployment['spec']['template']['metadata'] = {};
  if (labels) templateMeta.labels = labels;
  if (annotations) templateMeta.annotations = annotations;
  const out: Deployment['spec'] = { template: { metadata: templateMeta, spec: podSpec } };
  if (replicas !== undefined) out.replicas = replicas;
  if (selector.matchLabels) out.selector = { matchLabels: selector.matchLabels };
  else out.selector = {};
  return { apiVersion: 'apps/v1', kind: 'Deployment', metadata, spec: out };
}

function parseLabNode(f: Fields, value: unknown, path: string): LabNode {
  if (typeof value === 'string') return { name: f.label(value, path) };
  const raw = f.map(value, path);
  const node: LabNode = { name: f.label(raw.name, `${path}.name`) };
  if (raw.podCIDR !== undefined && raw.podCIDR !== null) node.podCIDR = cidrField(f, raw.podCIDR, `${path}.podCIDR`, POD_CIDR_PREFIX);
  return node;
}

function cidrField(f: Fields, value: unknown, path: string, [min, max]: readonly [number, number]): string {
  const parsed = parseIpv4Cidr(f.string(value, path), min, max);
  if (typeof parsed === 'string') f.fail(path, parsed);
  return parsed.text;
}

function parseLab(f: Fields, raw: Raw): LabDocument {
  const meta = parseMetadata(f, raw.metadata, { namespaced: false, name: 'label', nameMax: LAB_NAME_MAX });
  const name = meta.name;
  const spec = f.map(raw.spec, 'spec');
  const list = f.list(spec.nodes, 'spec.nodes');
  if (list.length === 0) f.fail('spec.nodes', 'must list at least one node');
  const seen = new Map<string, number>();
  const nodes = list.map((n, i) => {
    const node = parseLabNode(f, n, `spec.nodes[${i}]`);
    const first = seen.get(node.name);
    if (first !== undefined) f.fail(`spec.nodes[${i}]`, `duplicate node name ${show(node.name)} (also spec.nodes[${first}])`);
    seen.set(node.name, i);
    return node;
  });
  const serviceCIDR = spec.serviceCIDR === undefined || spec.serviceCIDR === null ? DEFAULT_SERVICE_CIDR : cidrField(f, spec.serviceCIDR, 'spec.serviceCIDR', SERVICE_CIDR_PREFIX);
  const fabricCIDR = spec.fabricCIDR === undefined || spec.fabricCIDR === null ? DEFAULT_FABRIC_CIDR : cidrField(f, spec.fabricCIDR, 'spec.fabricCIDR', FABRIC_CIDR_PREFIX);
  let failMode: LabFailMode = DEFAULT_FAIL_MODE;
  if (spec.failMode !== undefined && spec.failMode !== null) {
    if (spec.failMode !== 'closed' && spec.failMode !== 'open') f.fail('spec.failMode', `must be "closed" or "open", got ${show(spec.failMode)}`);
    failMode = spec.failMode;
  }
  let trustDomain = DEFAULT_TRUST_DOMAIN;
  if (spec.trustDomain !== undefined && spec.trustDomain !== null) {
    if (typeof spec.trustDomain !== 'string' || !isDns1123Subdomain(spec.trustDomain)) f.fail('spec.trustDomain', `must be a DNS name such as cluster.local, got ${show(spec.trustDomain)}`);
    trustDomain = spec.trustDomain;
  }
  let ztunnelWorkers = 1;
  if (spec.ztunnelWorkers !== undefined && spec.ztunnelWorkers !== null) {
    if (typeof spec.ztunnelWorkers !== 'number' || !Number.isInteger(spec.ztunnelWorkers) || spec.ztunnelWorkers < 1 || spec.ztunnelWorkers > 64) {
      f.fail('spec.ztunnelWorkers', `must be a whole number from 1 to 64, got ${show(spec.ztunnelWorkers)}`);
    }
    ztunnelWorkers = spec.ztunnelWorkers;
  }
  const metadata: LabDocument['metadata'] = { name };
  if (meta.labels) metadata.labels = meta.labels;
  if (meta.annotations) metadata.annotations = meta.annotations;
  return { apiVersion: LAB_API_VERSION, kind: LAB_KIND, metadata, spec: { nodes, serviceCIDR, fabricCIDR, failMode, trustDomain, ztunnelWorkers } };
}

// ---------------------------------------------------------------------------------------------
// Collecting documents across files, then the checks that need all of them

interface Placed {
  ctx: DocContext;
  /** Set for namespaced objects. */
  namespace?: string;
}

class Collector {
  private readonly manifest: Manifest & { origins: Map<string, ManifestOrigin> } = {
    namespaces: [], pods: [], services: [], deployments: [], labs: [], others: [], origins: new Map(),
  };
  /** Objects by `group/Kind ns/name`, to report name clashes with both documents. */
  private readonly seen = new Map<string, DocContext>();
  private readonly namespaced: Placed[] = [];
  private readonly deploymentContexts: DocContext[] = [];

  addText(text: string, source: string): void {
    const docs = parseAllDocuments(text);
    // An empty stream parses to a non-array EmptyStream.
    if (!Array.isArray(docs)) return;
    docs.forEach((doc, i) => {
      const ctx: DocContext = { source, index: i + 1 };
      const syntax = doc.errors[0];
      if (syntax) {
        // yaml's message carries "at line L, column C:" and a code excerpt; keep the first line.
        const first = syntax.message.split('\n')[0]!.replace(/:\s*$/, '');
        throw new ConfigError(`${where(ctx)}: YAML syntax error: ${first}`, { cause: syntax });
      }
      const value: unknown = doc.toJS({ maxAliasCount: 100 });
      if (value === null || value === undefined) return;
      this.addObject(value, ctx);
    });
  }

  private addObject(value: unknown, ctx: DocContext): void {
    const f = new Fields(ctx);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      f.fail('', `must be a Kubernetes object (a map with apiVersion, kind and metadata), got ${show(value)}`);
    }
    const raw = value as Raw;
    const apiVersion = f.string(raw.apiVersion, 'apiVersion');
    const kind = f.string(raw.kind, 'kind');
    const meta = raw.metadata !== null && typeof raw.metadata === 'object' && !Array.isArray(raw.metadata) ? (raw.metadata as Raw) : {};
    const rawName = typeof meta.name === 'string' ? meta.name : undefined;
    const expected = KNOWN_KINDS[kind];
    const modelled = expected !== undefined && MODELLED_GROUPS.has(apiGroup(apiVersion));
    const clusterScoped = kind === 'Namespace' || kind === LAB_KIND;
    const rawNamespace = typeof meta.namespace === 'string' ? meta.namespace : modelled && !clusterScoped ? 'default' : undefined;
    if (rawName !== undefined) ctx.label = objectKey(kind, clusterScoped ? undefined : rawNamespace, rawName);
    else ctx.label = kind;

    if (!modelled) {
      this.addOther(f, raw, apiVersion, kind);
      return;
    }
    if (apiVersion !== expected) f.fail('apiVersion', `must be ${show(expected)} for kind ${kind}, got ${show(apiVersion)}`);

    switch (kind) {
      case 'Namespace': {
        const ns = parseNamespace(f, raw);
        this.register(f, 'Namespace', undefined, ns.metadata.name);
        this.manifest.namespaces.push(ns);
        break;
      }
      case 'Pod': {
        const pod = parsePod(f, raw);
        this.register(f, 'Pod', pod.metadata.namespace, pod.metadata.name);
        this.manifest.pods.push(pod);
        break;
      }
      case 'Service': {
        const svc = parseService(f, raw);
        this.register(f, 'Service', svc.metadata.namespace, svc.metadata.name);
        this.manifest.services.push(svc);
        break;
      }
      case 'Deployment': {
        const d = parseDeployment(f, raw);
        this.register(f, 'Deployment', d.metadata.namespace, d.metadata.name);
        this.manifest.deployments.push(d);
        this.deploymentContexts.push(ctx);
        break;
      }
      default: {
        const lab = parseLab(f, raw);
        this.register(f, LAB_KIND, undefined, lab.metadata.name);
        this.manifest.labs.push(lab);
      }
    }
  }

  private addOther(f: Fields, raw: Raw, apiVersion: string, kind: string): void {
    const meta = f.map(raw.metadata, 'metadata');
    const name = f.string(meta.name, 'metadata.name');
    const namespace = meta.namespace === undefined || meta.namespace === null ? undefined : f.label(meta.namespace, 'metadata.namespace');
    this.register(f, kind, namespace, name, apiGroup(apiVersion));
    this.manifest.others.push({ source: f.ctx.source, index: f.ctx.index, apiVersion, kind, object: raw });
  }

  private register(f: Fields, kind: string, namespace: string | undefined, name: string, group = ''): void {
    const key = `${group}/${objectKey(kind, namespace, name)}`;
    const first = this.seen.get(key);
    if (first) {
      f.fail('metadata.name', `name clash: ${objectKey(kind, namespace, name)} is already defined in ${first.source} document ${first.index}`);
    }
    this.seen.set(key, f.ctx);
    if (group === '' || MODELLED_GROUPS.has(group)) this.manifest.origins.set(objectKey(kind, namespace, name), { source: f.ctx.source, index: f.ctx.index });
    if (namespace !== undefined) this.namespaced.push({ ctx: f.ctx, namespace });
  }

  finish(): Manifest {
    const declared = new Set([...BUILTIN_NAMESPACES, ...this.manifest.namespaces.map((n) => n.metadata.name)]);
    for (const { ctx, namespace } of this.namespaced) {
      if (namespace !== undefined && !declared.has(namespace)) {
        new Fields(ctx).fail('metadata.namespace', `namespace ${show(namespace)} is not declared in the files: add a Namespace document for it (only ${BUILTIN_NAMESPACES.join(' and ')} exist without one)`);
      }
    }
    this.manifest.deployments.forEach((d, i) => this.expand(d, this.deploymentContexts[i]!));
    return this.manifest;
  }

  /** The lab has no ReplicaSets: a Deployment becomes its replicas as Pods, `<name>-<i>`. */
  private expand(d: Deployment, ctx: DocContext): void {
    const f = new Fields(ctx);
    const namespace = d.metadata.namespace ?? 'default';
    const owner = `Deployment/${d.metadata.name}`;
    const replicas = d.spec.replicas ?? 1;
    for (let i = 0; i < replicas; i++) {
      const name = `${d.metadata.name}-${i}`;
      if (!isDns1123Subdomain(name)) f.fail('metadata.name', `replica pod name ${show(name)} is longer than 253 characters`);
      const key = `/${objectKey('Pod', namespace, name)}`;
      const clash = this.seen.get(key);
      if (clash) {
        const what = clash.label?.startsWith('Deployment') ? `a replica of ${clash.label}` : `the Pod`;
        f.fail('metadata.name', `name clash: replica ${i} would be Pod ${namespace}/${name}, the same name as ${what} in ${clash.source} document ${clash.index}`);
      }
      this.seen.set(key, ctx);
      const template = d.spec.template;
      const metadata: ObjectMeta = {
        name,
        namespace,
        annotations: { ...template.metadata?.annotations, [OWNER_ANNOTATION]: owner },
      };
      if (template.metadata?.labels) metadata.labels = { ...template.metadata.labels };
      this.manifest.pods.push({ apiVersion: 'v1', kind: 'Pod', metadata, spec: structuredClone(template.spec) });
      this.manifest.origins.set(objectKey('Pod', namespace, name), { source: ctx.source, index: ctx.index, via: objectKey('Deployment', namespace, d.metadata.name) });
    }
  }
}
