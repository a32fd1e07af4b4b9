// Exponential backoff with jitter, for everything that retries a remote (the CA, the Kubernetes
// API, later xDS). The jitter spreads out the retries of clients that failed together (all of a
// node's identities when the CA restarts; every agent when the API server does), so they do not
// come back in one burst.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

/** ±25 % around the exponential step. */
const JITTER = 0.5;

/** The delay after `failures` consecutive failures (1 after the first); never above `maxMs`. */
export function backoffDelay(failures: number, opts: BackoffOptions, random: () => number = Math.random): number {
  // The exponent is bounded so that a long outage cannot overflow to Infinity or NaN.
  const step = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(Math.max(failures - 1, 0), 40));
  return Math.min(opts.maxMs, Math.round(step * (1 - JITTER / 2 + random() * JITTER)));
}
