// The resources being served, per type, each encoded once as an envoy `Resource` message with a
// content-hash version. A client reconnecting with the versions it holds gets only what differs,
// and an unchanged resource keeps its version across control plane restarts.

import { createHash } from 'node:crypto';
import { Buffer } from 'node:buffer';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Resource } from '../../proto/gen/envoy/service/discovery/v3/discovery.js';

export interface CachedResource {
  readonly name: string;
  readonly version: string;
  readonly aliases: readonly string[];
  /** The `Resource` message, ready to be placed in a response. */
  readonly encoded: Buffer;
}

/** One resource to store: its name, aliases, and the encoded message that goes in the Any. */
export interface ResourceUpdate {
  name: string;
  aliases: readonly string[];
  message: Uint8Array;
}

export interface CacheChange {
  names: Set<string>;
  aliases: Set<string>;
}

/** The content hash: 16 hex digits of SHA-256 over the encoded message (Istio uses xxhash64 hex). */
export function contentVersion(message: Uint8Array): string {
  return createHash('sha256').update(message).digest('hex').slice(0, 16);
}

class TypeResources {
  readonly byName = new Map<string, CachedResource>();
  /** Several resources may share an alias (host-network pods share their node's address). */
  readonly byAlias = new Map<string, Set<string>>();

  addAlias(alias: string, name: string): void {
    const names = this.byAlias.get(alias);
    if (names) names.add(name);
    else this.byAlias.set(alias, new Set([name]));
  }

  dropAlias(alias: string, name: string): void {
    const names = this.byAlias.get(alias);
    if (!names) return;
    names.delete(name);
    if (names.size === 0) this.byAlias.delete(alias);
  }
}

export class ResourceCache {
  private readonly types = new Map<string, TypeResources>();
  /** Bumped by every apply() that changed something: the system_version_info of responses. */
  private generationCounter = 0;

  constructor(typeUrls: readonly string[]) {
    for (const t of typeUrls) this.types.set(t, new TypeResources());
  }

  get generation(): number {
    return this.generationCounter;
  }

  serves(typeUrl: string): boolean {
    return this.types.has(typeUrl);
  }

  get(typeUrl: string, name: string): CachedResource | undefined {
    return this.types.get(typeUrl)?.byName.get(name);
  }

  /**
   * By name, or by one of its aliases (`<network>/<ip>` for addresses); of several resources sharing
   * an alias, the first by name (the same answer every time).
   */
  resolve(typeUrl: string, nameOrAlias: string): CachedResource | undefined {
    const t = this.types.get(typeUrl);
    if (!t) return undefined;
    const direct = t.byName.get(nameOrAlias);
    if (direct) return direct;
    const names = t.byAlias.get(nameOrAlias);
    if (!names) return undefined;
    let first: string | undefined;
    for (const n of names) if (first === undefined || n < first) first = n;
    return first === undefined ? undefined : t.byName.get(first);
  }

  all(typeUrl: string): IterableIterator<CachedResource> {
    return (this.types.get(typeUrl)?.byName ?? new Map<string, CachedResource>()).values();
  }

  size(typeUrl: string): number {
    return this.types.get(typeUrl)?.byName.size ?? 0;
  }

  /**
   * Stores the updates and drops the removals; returns the names whose version actually changed
   * (added, modified or removed), and the aliases those resources had or have (for clients that
   * subscribed by alias). An update with unchanged content changes nothing.
   */
  apply(typeUrl: string, updates: Iterable<ResourceUpdate>, removals: Iterable<string>): CacheChange {
    const t = this.types.get(typeUrl);
    if (!t) throw new Error(`resource cache: unknown type ${typeUrl}`);
    const changed = new Set<string>();
    const aliases = new Set<string>();
    for (const u of updates) {
      const version = contentVersion(u.message);
      const old = t.byName.get(u.name);
      if (old && old.version === version && sameAliases(old.aliases, u.aliases)) continue;
      if (old) {
        for (const a of old.aliases) {
          aliases.add(a);
          t.dropAlias(a, u.name);
        }
      }
      const entry: CachedResource = { name: u.name, version, aliases: [...u.aliases], encoded: encodeResource(typeUrl, u, version) };
      t.byName.set(u.name, entry);
      for (const a of entry.aliases) {
        aliases.add(a);
        t.addAlias(a, u.name);
      }
      changed.add(u.name);
    }
    for (const name of removals) {
      const old = t.byName.get(name);
      if (!old) continue;
      t.byName.delete(name);
      for (const a of old.aliases) {
        aliases.add(a);
        t.dropAlias(a, name);
      }
      changed.add(name);
    }
    if (changed.size > 0) this.generationCounter++;
    return { names: changed, aliases };
  }
}

function sameAliases(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function encodeResource(typeUrl: string, u: ResourceUpdate, version: string): Buffer {
  const writer = Resource.encode(
    { name: u.name, aliases: [...u.aliases], version, resource: { typeUrl, value: Buffer.from(u.message.buffer, u.message.byteOffset, u.message.byteLength) }, ttl: undefined },
    new BinaryWriter(),
  );
  return Buffer.from(writer.finish());
}
