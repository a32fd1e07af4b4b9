import type { Problem } from './types.js';

/** A translated value (absent when the object is left out) and what the user must hear about it. */
export interface Translation<T> {
  value: T | undefined;
  problems: Problem[];
}
