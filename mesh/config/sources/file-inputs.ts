// The JSON files around the lab's YAML: what a kubelet, the CNI and the service IP allocator would
// report on a real cluster (pods.json, written by the lab), what each node's agent records about
// its pods' capture (redirection-<node>.json), and what the control plane records about policies
// (its status file). Readers and the coalescing atomic writer both sides use.

import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError, errorMessage } from '../../errors.js';
import type { StatusCondition } from '../../k8s/types.js';
import type { Logger } from '../../log.js';
import type { StatusTarget } from '../source.js';

export interface PodPlacement {
  nodeName: string;
  podIP: string;
}

export interface ServicePlacement {
  clusterIP: string;
}

/** pods.json, as the lab writes it. */
export interface PlacementFile {
  pods: Record<string, PodPlacement>;
  /** Cluster IPs the lab assigned to services whose manifest names none. */
  services?: Record<string, ServicePlacement>;
}

export interface Placements {
  pods: Map<string, PodPlacement>;
  services: Map<string, ServicePlacement>;
}

/** redirection-<node>.json, as an agent's file source writes it. */
export interface RedirectionRecord {
  /** Absent for a cluster-wide source. */
  node?: string;
  updated: string;
  pods: Record<string, { state: 'enabled' | 'pending'; ip: string }>;
}

/** The control plane's status file: `{"AuthorizationPolicy <ns>/<name>": {"conditions": [...]}}`. */
export type StatusFile = Record<string, { conditions: StatusCondition[] }>;

export function statusKey(target: StatusTarget): string {
  return `${target.kind} ${target.namespace}/${target.name}`;
}

export function emptyPlacements(): Placements {
  return { pods: new Map(), services: new Map() };
}

/** Reads a JSON file; undefined when it does not exist (yet). */
async function readJsonFile(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`${file}: cannot read the ${what}: ${errorMessage(err)}`, { cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ConfigError(`${file}: the ${what} is not valid JSON: ${errorMessage(err)}`, { cause: err });
  }
}

/** pods.json; empty when the lab has not written it yet. Throws a ConfigError naming the entry at fault. */
export async function readPlacements(file: string): Promise<Placements> {
  const out = emptyPlacements();
  const parsed = await readJsonFile(file, 'pod status file');
  if (parsed === undefined) return out;
  const pods = isRecord(parsed) ? parsed.pods : undefined;
  if (!isRecord(pods)) throw new ConfigError(`${file}: the pod status file must be {"pods": {"<ns>/<name>": {"nodeName": ..., "podIP": ...}}}`);
  for (const [key, value] of Object.entries(pods)) {
    if (!isRecord(value) || typeof value.nodeName !== 'string' || typeof value.podIP !== 'string') {
      throw new ConfigError(`${file}: pods[${JSON.stringify(key)}]: must be {"nodeName": string, "podIP": string}`);
    }
    out.pods.set(key, { nodeName: value.nodeName, podIP: value.podIP });
  }
  const services = (parsed as Record<string, unknown>).services;
  if (services !== undefined) {
    if (!isRecord(services)) throw new ConfigError(`${file}: services: must be {"<ns>/<name>": {"clusterIP": ...}}`);
    for (const [key, value] of Object.entries(services)) {
      if (!isRecord(value) || typeof value.clusterIP !== 'string') throw new ConfigError(`${file}: services[${JSON.stringify(key)}]: must be {"clusterIP": string}`);
      out.services.set(key, { clusterIP: value.clusterIP });
    }
  }
  return out;
}

/** An agent's redirection record; undefined when the agent has not written it yet. */
export async function readRedirectionRecord(file: string): Promise<RedirectionRecord | undefined> {
  const parsed = await readJsonFile(file, 'redirection record');
  if (parsed === undefined) return undefined;
  if (!isRecord(parsed) || !isRecord(parsed.pods)) throw new ConfigError(`${file}: the redirection record must be {"pods": {"<ns>/<name>": {"state": ..., "ip": ...}}}`);
  const pods = parsed.pods;
  const record: RedirectionRecord = { updated: typeof parsed.updated === 'string' ? parsed.updated : '', pods: {} };
  if (typeof parsed.node === 'string') record.node = parsed.node;
  for (const [key, value] of Object.entries(pods)) {
    if (!isRecord(value) || (value.state !== 'enabled' && value.state !== 'pending') || typeof value.ip !== 'string') {
      throw new ConfigError(`${file}: pods[${JSON.stringify(key)}]: must be {"state": "enabled" | "pending", "ip": string}`);
    }
    record.pods[key] = { state: value.state, ip: value.ip };
  }
  return record;
}

/** Readers see the old file or the new one, never a partial write. */
export async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, text);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Writes within this window go to disk as one. */
const WRITE_COALESCE_MS = 20;

/**
 * A file rewritten from in-memory state: bursts of changes (an agent enabling every pod at start,
 * the control plane recording every policy's status) become one write, and each caller awaits the
 * write that includes its change. Without a file, nothing is written.
 */
export class CoalescedWriter {
  private pendingWrite: Promise<void> | undefined;
  private lastWrite: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string | undefined,
    private readonly render: () => unknown,
    private readonly what: string,
    private readonly log: Logger | undefined,
  ) {}

  schedule(): Promise<void> {
    const file = this.file;
    if (file === undefined) return Promise.resolve();
    if (!this.pendingWrite) {
      const write = this.lastWrite
        .then(() => delay(WRITE_COALESCE_MS))
        .then(() => {
          // From here on, new changes need a new write: this one renders the state now.
          this.pendingWrite = undefined;
          return writeAtomically(file, `${JSON.stringify(this.render(), null, 2)}\n`);
        });
      this.pendingWrite = write;
      this.lastWrite = write.catch((err: unknown) => {
        this.log?.error({ file, err: errorMessage(err) }, `cannot write the ${this.what}`);
      });
    }
    return this.pendingWrite;
  }

  /** Resolves when every scheduled write has finished (or failed and been logged). */
  settled(): Promise<void> {
    return this.lastWrite;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
