/**
 * Resolves with the first SIGTERM or SIGINT: how long-running commands learn to stop. Keeps the
 * process alive until then, since a daemon's own timers are unref'd and would not.
 */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => {}, 1 << 30);
    const on = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      clearInterval(keepAlive);
      resolve(signal);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}
