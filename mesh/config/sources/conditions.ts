// Status conditions as both sources write them: compared without their timestamps, and given
// lastTransitionTime the way Kubernetes controllers do (metav1.Condition), so a status rewritten
// with the same content is recognised as no change and a real change is dated.

import type { StatusCondition } from '../../k8s/types.js';

/** The same conditions in the same order, whatever their lastTransitionTime. */
export function sameConditions(a: readonly StatusCondition[] | undefined, b: readonly StatusCondition[] | undefined): boolean {
  const left = a ?? [];
  const right = b ?? [];
  if (left.length !== right.length) return false;
  return left.every((c, i) => {
    const d = right[i]!;
    return c.type === d.type && c.status === d.status && c.reason === d.reason && c.message === d.message && c.observedGeneration === d.observedGeneration;
  });
}

/**
 * The conditions to write: each keeps the lastTransitionTime of the current condition of its type
 * when its status did not change, and gets `now` when it did or is new.
 */
export function withTransitionTimes(current: readonly StatusCondition[] | undefined, next: readonly StatusCondition[], now: Date): StatusCondition[] {
  const stamp = rfc3339(now);
  return next.map((c) => {
    const before = current?.find((b) => b.type === c.type);
    const kept = before !== undefined && before.status === c.status ? before.lastTransitionTime : undefined;
    return { ...c, lastTransitionTime: kept ?? stamp };
  });
}

/** metav1.Time's format: RFC 3339 with whole seconds. */
export function rfc3339(time: Date): string {
  return time.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The conditions an object from the API server carries, ignoring anything malformed. */
export function conditionsOf(obj: unknown): StatusCondition[] | undefined {
  const status = isRecord(obj) ? obj.status : undefined;
  const conditions = isRecord(status) ? status.conditions : undefined;
  if (!Array.isArray(conditions)) return undefined;
  return conditions.filter(
    (c): c is StatusCondition => isRecord(c) && typeof c.type === 'string' && typeof c.status === 'string',
  );
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
