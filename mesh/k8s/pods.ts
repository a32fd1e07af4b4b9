import type { Pod } from './types.js';

/** A pod in one of these phases has stopped for good; its IP may already be another pod's. */
const FINISHED_PHASES = new Set(['Succeeded', 'Failed']);

export function isFinished(pod: Pod): boolean {
  return FINISHED_PHASES.has(pod.status?.phase ?? '');
}
