// Results reused across model computations for as long as what they read is unchanged.
//
// Every read a translation makes of the cluster goes through the ModelContext (context.ts), whose
// getters record which input it was: one view list (pods, services, ...), the namespaces, or the
// options. A memoized result keeps the identities of the inputs it read, including those its
// nested memoized calls read, and is reused while they are the same objects. The config sources
// keep an unchanged list's identity (and each unchanged object's), so after a pod changes only what
// read the pods list is recomputed, not the indexes over services or policies.

import type { ClusterView } from '../../mesh/config/view.js';
import type { ModelOptions } from './types.js';

/** An input of the model: a view list, the namespaces map, or the options. */
export type Input = keyof ClusterView | 'opts';

/** The current identity of each input of one computation. */
export interface Inputs {
  readonly view: ClusterView;
  readonly opts: ModelOptions;
}

interface Entry<T> {
  reads: [Input, unknown][];
  value: T;
}

let collecting: Set<Input> | undefined;
let enabled = true;

/** Off: every memoized function computes afresh (the reference the incremental model is tested against). */
export function setMemoization(on: boolean): void {
  enabled = on;
}

/** Records that the computation in progress read `input`. */
export function track(input: Input): void {
  collecting?.add(input);
}

function identity(inputs: Inputs, input: Input): unknown {
  return input === 'opts' ? inputs.opts : inputs.view[input];
}

function current<T>(entry: Entry<T> | undefined, inputs: Inputs): entry is Entry<T> {
  return enabled && entry !== undefined && entry.reads.every(([input, id]) => identity(inputs, input) === id);
}

function reuse<T>(entry: Entry<T>): T {
  if (collecting) for (const [input] of entry.reads) collecting.add(input);
  return entry.value;
}

function run<T>(inputs: Inputs, compute: () => T): Entry<T> {
  const outer = collecting;
  const reads = new Set<Input>();
  collecting = reads;
  let value: T;
  try {
    value = compute();
  } finally {
    collecting = outer;
  }
  if (outer) for (const input of reads) outer.add(input);
  return { reads: [...reads].map((input) => [input, identity(inputs, input)]), value };
}

/** The contexts' inputs, set by context.ts (kept here so that memo and context do not import each other in a cycle). */
const inputsOf = new WeakMap<object, Inputs>();

export function registerInputs(ctx: object, inputs: Inputs): void {
  inputsOf.set(ctx, inputs);
}

function inputs(ctx: object): Inputs {
  const found = inputsOf.get(ctx);
  if (!found) throw new Error('memo: a ModelContext not made by buildContext');
  return found;
}

/** `build(ctx)`, reused while the inputs it read are unchanged (one cached result). */
export function perView<C extends object, T>(build: (ctx: C) => T): (ctx: C) => T {
  let entry: Entry<T> | undefined;
  return (ctx) => {
    const now = inputs(ctx);
    if (current(entry, now)) return reuse(entry);
    entry = run(now, () => build(ctx));
    return entry.value;
  };
}

/** `compute(obj, ctx)` per object (views' objects are immutable), reused while the inputs it read are unchanged. */
export function perObject<K extends object, C extends object, T>(compute: (obj: K, ctx: C) => T): (obj: K, ctx: C) => T {
  const cache = new WeakMap<K, Entry<T>>();
  return (obj, ctx) => {
    const now = inputs(ctx);
    const entry = cache.get(obj);
    if (current(entry, now)) return reuse(entry);
    const fresh = run(now, () => compute(obj, ctx));
    cache.set(obj, fresh);
    return fresh.value;
  };
}

/**
 * `compute(obj)` once per object, for functions of the object alone (they read nothing else of the
 * cluster, so no input tracking is needed: the cheapest memo, for per-pod work done 10,000 times).
 */
export function ofObject<K extends object, T>(compute: (obj: K) => T): (obj: K) => T {
  const cache = new WeakMap<K, T>();
  return (obj) => {
    if (enabled && cache.has(obj)) return cache.get(obj)!;
    const value = compute(obj);
    cache.set(obj, value);
    return value;
  };
}
