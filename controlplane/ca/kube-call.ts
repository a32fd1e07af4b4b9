// One Kubernetes API request with a deadline, and a short account of why one failed. The client has
// no timeout of its own: an API server that accepted the connection and then hung would hold the
// CA call (or the control plane's start) that made the request forever.

import {
  ApiException,
  Observable,
  type ConfigurationOptions,
  type ObservableMiddleware,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';
import { TimeoutError, errorMessage } from '../../mesh/errors.js';

/**
 * Runs `call` with request options that abort it after `timeoutMs`; rejects with a TimeoutError
 * naming `what` then, even when the request never started (a credential plugin that hangs).
 */
export async function callWithDeadline<T>(what: string, timeoutMs: number, call: (options: ConfigurationOptions) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const signalling: ObservableMiddleware = {
    pre: (context: RequestContext) => {
      context.setSignal(controller.signal);
      return new Observable(Promise.resolve(context));
    },
    post: (context: ResponseContext) => new Observable(Promise.resolve(context)),
  };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort();
      reject(new TimeoutError(`${what}: the Kubernetes API did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    // race() handles the loser's rejection too: an aborted request rejects after the deadline won.
    return await Promise.race([call({ middleware: [signalling], middlewareMergeStrategy: 'append' }), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** The HTTP status of a failed request, when the server answered. */
export function apiStatusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

/** `HTTP 403: <the Status message>`, or the transport error; never the whole response dump. */
export function describeApiError(err: unknown): string {
  if (!(err instanceof ApiException)) return errorMessage(err);
  const message = statusMessage(err.body);
  return `HTTP ${err.code}${message ? `: ${truncate(message, 300)}` : ''}`;
}

function statusMessage(body: unknown): string | undefined {
  let parsed = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body.trim() || undefined;
    }
  }
  if (typeof parsed === 'object' && parsed !== null && 'message' in parsed && typeof parsed.message === 'string') return parsed.message;
  return undefined;
}

export function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
