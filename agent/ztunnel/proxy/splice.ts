// Joins the two sides of a proxied connection: bytes both ways with each side's backpressure, a
// half-close passed on (TCP FIN ⇄ HTTP/2 END_STREAM), and an error on one side resetting the other
// so the peer sees a failure rather than a clean end. No per-chunk work of our own.
import net from 'node:net';
import type { Duplex } from 'node:stream';

function reset(s: Duplex): void {
  if (s.destroyed) return;
  if (s instanceof net.Socket) s.resetAndDestroy();
  else s.destroy();
}

/** `done` runs once, when both sides have closed; `error` is the first failure seen, if any. */
export function splice(a: Duplex, b: Duplex, done: (error?: Error) => void): void {
  let first: Error | undefined;
  let closed = 0;
  const onClose = (): void => {
    if (++closed === 2) done(first);
  };
  const fail = (other: Duplex) => (err: Error) => {
    first ??= err;
    reset(other);
  };
  a.on('error', fail(b));
  b.on('error', fail(a));
  // A side that closed without error (an HTTP/2 stream reset by its peer, a destroyed socket)
  // must not leave the other half open forever.
  a.once('close', () => {
    if (!b.destroyed && !b.writableEnded) reset(b);
    onClose();
  });
  b.once('close', () => {
    if (!a.destroyed && !a.writableEnded) reset(a);
    onClose();
  });
  a.pipe(b);
  b.pipe(a);
}
