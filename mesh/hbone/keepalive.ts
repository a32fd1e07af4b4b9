// HTTP/2 PING keepalive, as ztunnel: every 10 s, and a session whose peer does not answer within
// 20 s is destroyed (a peer that vanished without a FIN would otherwise hold the pooled
// connection, and every stream on it, forever). It is also the only bound on a session that
// nghttp2 itself ended for a protocol error: nghttp2 sends its GOAWAY and stops reading, Node is
// not told and keeps the socket, and the PING then never leaves, so the timeout ends it.
import type http2 from 'node:http2';

export const PING_INTERVAL_MS = 10_000;
export const PING_TIMEOUT_MS = 20_000;

/**
 * `dead` ends the session when a PING goes unanswered; by default session.destroy(), which may
 * leave the socket open while its unsent bytes wait for a peer that no longer reads (the server
 * passes one that also closes the socket).
 */
export function keepAlive(
  session: http2.Http2Session,
  intervalMs = PING_INTERVAL_MS,
  timeoutMs = PING_TIMEOUT_MS,
  dead: (err: Error) => void = (err) => session.destroy(err),
): void {
  let awaiting: NodeJS.Timeout | undefined;
  const timer = setInterval(() => {
    if (session.destroyed || awaiting) return;
    awaiting = setTimeout(() => dead(new Error(`no PING answer within ${timeoutMs / 1000} s`)), timeoutMs);
    try {
      session.ping((err) => {
        clearTimeout(awaiting);
        awaiting = undefined;
        if (err && !session.destroyed) dead(err);
      });
    } catch {
      // The session closed between the check and the ping.
      clearTimeout(awaiting);
      awaiting = undefined;
    }
  }, intervalMs);
  timer.unref();
  session.once('close', () => {
    clearInterval(timer);
    clearTimeout(awaiting);
  });
}
