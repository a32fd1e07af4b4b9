// HTTP/2 PING keepalive, as ztunnel: every 10 s, and a session whose peer does not answer within
// 20 s is destroyed (a peer that vanished without a FIN would otherwise hold the pooled
// connection, and every stream on it, forever).
import type http2 from 'node:http2';

export const PING_INTERVAL_MS = 10_000;
export const PING_TIMEOUT_MS = 20_000;

export function keepAlive(session: http2.Http2Session, intervalMs = PING_INTERVAL_MS, timeoutMs = PING_TIMEOUT_MS): void {
  let awaiting: NodeJS.Timeout | undefined;
  const timer = setInterval(() => {
    if (session.destroyed || awaiting) return;
    awaiting = setTimeout(() => session.destroy(new Error(`no PING answer within ${timeoutMs / 1000} s`)), timeoutMs);
    try {
      session.ping((err) => {
        clearTimeout(awaiting);
        awaiting = undefined;
        if (err && !session.destroyed) session.destroy(err);
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
