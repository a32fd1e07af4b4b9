// Certificate requests back off as ztunnel's do (zt:src/identity/manager.rs): from 500 ms,
// doubling, capped at 150 s.
import type { BackoffOptions } from '../../mesh/backoff.js';

export { backoffDelay, type BackoffOptions } from '../../mesh/backoff.js';

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = { initialMs: 500, maxMs: 150_000 };
