// The control plane's debug endpoints on the health port (15014), istiod-style: what it serves,
// to whom, and what it made of each policy and object. Read-only; the CLI (`ambit mesh-config`)
// renders them. They answer loopback clients only unless told otherwise (controlplane.ts), and the
// expensive renderings are kept per push generation, so polling them cannot stall the pushes.

import type { Discovery } from './discovery.js';
import type { XdsServer } from './xds/server.js';
import { snapshotJson } from './model/render.js';

export interface DebugAnswer {
  status: number;
  contentType: string;
  body: string;
}

export const DEBUG_PATHS: Readonly<Record<string, string>> = {
  '/debug/syncz': 'xDS clients: node, caller, per type the last nonce sent, ACKed, NACKed (with the error)',
  '/debug/policies': 'every AuthorizationPolicy: where it is enforced, what was dropped, its status conditions (?namespace=NS)',
  '/debug/problems': 'objects that could not be (fully) translated, and why',
  '/debug/push_status': 'pushes, the last push duration, resources served',
  '/debug/config_dump': 'the resources served, as JSON (?type=workloads|services|authorizations|waypoints)',
};

const SECTIONS = new Set(['workloads', 'services', 'authorizations', 'waypoints']);

function json(value: unknown): DebugAnswer {
  return { status: 200, contentType: 'application/json', body: `${JSON.stringify(value, null, 2)}\n` };
}

export class DebugEndpoints {
  private dump: { revision: number; json: Record<string, unknown> } | undefined;

  constructor(private readonly parts: { discovery: Discovery; xds: XdsServer }) {}

  answer(url: URL): DebugAnswer {
    return debugResponse(url, this.parts, () => this.snapshotDump());
  }

  /** The whole rendered model, once per model revision. */
  private snapshotDump(): Record<string, unknown> {
    const revision = this.parts.discovery.revision;
    if (this.dump?.revision !== revision) this.dump = { revision, json: snapshotJson(this.parts.discovery.snapshot()) as Record<string, unknown> };
    return this.dump.json;
  }
}

function debugResponse(url: URL, parts: { discovery: Discovery; xds: XdsServer }, dump: () => Record<string, unknown>): DebugAnswer {
  const snapshot = parts.discovery.snapshot();
  switch (url.pathname) {
    case '/debug':
      return json(DEBUG_PATHS);
    case '/debug/syncz':
      return json(parts.xds.status());
    case '/debug/policies': {
      const namespace = url.searchParams.get('namespace');
      return json([...snapshot.policyStatus.values()].filter((p) => namespace === null || p.namespace === namespace).sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`)));
    }
    case '/debug/problems':
      return json(dump().problems);
    case '/debug/push_status':
      return json({ ...parts.discovery.pushStats(), connections: parts.xds.connectionCount });
    case '/debug/config_dump': {
      const type = url.searchParams.get('type');
      if (type !== null && !SECTIONS.has(type)) return { status: 400, contentType: 'text/plain', body: `unknown type ${JSON.stringify(type)}: one of ${[...SECTIONS].join(', ')}\n` };
      const all = dump();
      return json(type === null ? all : all[type]);
    }
    default:
      return { status: 404, contentType: 'text/plain', body: `not found; try ${Object.keys(DEBUG_PATHS).join(', ')}\n` };
  }
}
