// Indexes and results computed once per model computation. A ModelContext lives for one
// computation, so a WeakMap keyed by it needs no invalidation and frees itself with the context.

import type { ModelContext } from './context.js';

/** `build(ctx)` once per context; later calls with the same context return the same value. */
export function perContext<T>(build: (ctx: ModelContext) => T): (ctx: ModelContext) => T {
  const cache = new WeakMap<ModelContext, T>();
  return (ctx) => {
    let value = cache.get(ctx);
    if (value === undefined) {
      value = build(ctx);
      cache.set(ctx, value);
    }
    return value;
  };
}

/** `compute(obj, ctx)` once per object per context (objects of a view are immutable). */
export function perObject<K extends object, T>(compute: (obj: K, ctx: ModelContext) => T): (obj: K, ctx: ModelContext) => T {
  const caches = perContext(() => new Map<K, T>());
  return (obj, ctx) => {
    const cache = caches(ctx);
    if (cache.has(obj)) return cache.get(obj)!;
    const value = compute(obj, ctx);
    cache.set(obj, value);
    return value;
  };
}
