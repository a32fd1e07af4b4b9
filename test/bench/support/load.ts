// Load generators for the L4 benchmark. Every client socket is created inside a lab pod's network
// namespace (lab/connect.ts) and driven by this process: nothing runs in the root namespace and
// nothing is spawned per connection. They talk to the lab's echo workload (lab/echo.ts):
//   bulk        GET /bytes/<10 GiB> over HTTP/1.1: the server sends, the client only counts
//   rr          the echo's raw TCP mode: after its identity line it echoes every byte, so a 1 KB
//               write comes back as a 1 KB reply
//   connections GET / with Connection: close, one request per connection
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { connectFrom } from '../../../lab/connect.js';
import type { EchoReply } from '../../../lab/echo.js';
import type { CpuMeter } from './proc.js';
import { percentile, sortedCopy } from './stats.js';

const CONNECT_TIMEOUT_MS = 5000;
/** What the client sends to put the echo into raw TCP mode (not an HTTP request line). */
const RAW_HELLO = 'l4\n';

export interface Window {
  cores: Record<string, number>;
  seconds: number;
}

/**
 * Reads `socket` until `seconds` have passed after a warm-up of `warmupMs` from the first byte;
 * the meter runs over exactly the counted window. Resolves with the bytes counted and the window.
 */
export function receiveFor(socket: net.Socket, warmupMs: number, seconds: number, meter: CpuMeter): Promise<{ bytes: number; window: Window }> {
  return new Promise((resolve, reject) => {
    let first = 0;
    let started = 0;
    let bytes = 0;
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      socket.removeAllListeners('data');
      if (err) {
        socket.destroy();
        reject(err);
        return;
      }
      const window = meter.stop();
      socket.destroy();
      resolve({ bytes, window });
    };
    socket.on('data', (chunk: Buffer) => {
      const now = performance.now();
      if (!first) first = now;
      if (!started) {
        if (now - first >= warmupMs) {
          started = now;
          meter.start();
        }
        return;
      }
      bytes += chunk.length;
      if (now - started >= seconds * 1000) finish();
    });
    socket.on('error', (err) => finish(new Error(`bulk connection failed after ${bytes} bytes: ${err.message}`)));
    socket.on('close', () => finish(started ? undefined : new Error('bulk connection closed before the measurement started')));
  });
}

/** Bulk throughput of one connection, server to client: `GET /bytes/<10 GiB>`. */
export async function bulk(netns: string, ip: string, port: number, warmupMs: number, seconds: number, meter: CpuMeter): Promise<{ mbps: number; window: Window }> {
  const s = await connectFrom(netns, ip, port, { timeoutMs: CONNECT_TIMEOUT_MS });
  s.write(`GET /bytes/${10 * 1024 ** 3} HTTP/1.1\r\nHost: ${ip}\r\n\r\n`);
  const { bytes, window } = await receiveFor(s, warmupMs, seconds, meter);
  return { mbps: bytes / 1e6 / window.seconds, window };
}

/** A raw TCP echo connection, past the echo's identity line: from here on, bytes come back. */
export async function openRawEcho(netns: string, ip: string, port: number): Promise<{ socket: net.Socket; identity: EchoReply }> {
  const socket = await connectFrom(netns, ip, port, { timeoutMs: CONNECT_TIMEOUT_MS });
  socket.write(RAW_HELLO);
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`no echo identity from ${ip}:${port} within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', fail);
      socket.removeListener('close', onClose);
    };
    function fail(err: Error): void {
      cleanup();
      socket.destroy();
      reject(err);
    }
    const onClose = (): void => fail(new Error(`echo connection to ${ip}:${port} closed during its handshake`));
    const onData = (chunk: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const nl = buf.indexOf(0x0a);
      // The identity line, then our hello echoed back: nothing else may be in flight.
      if (nl === -1 || buf.length < nl + 1 + RAW_HELLO.length) return;
      cleanup();
      if (buf.length !== nl + 1 + RAW_HELLO.length || buf.toString('latin1', nl + 1) !== RAW_HELLO) {
        socket.destroy();
        reject(new Error(`unexpected echo handshake from ${ip}:${port}: ${JSON.stringify(buf.toString('latin1'))}`));
        return;
      }
      resolve({ socket, identity: JSON.parse(buf.toString('utf8', 0, nl)) as EchoReply });
    };
    socket.on('data', onData);
    socket.on('error', fail);
    socket.on('close', onClose);
  });
}

export interface RrOptions {
  /** Requests per second, all connections together; sent on a fixed schedule (open loop). */
  rate: number;
  seconds: number;
  warmupSeconds: number;
  connections: number;
  /** Request size; the echo answers with as many bytes. */
  size: number;
  /** The pod name the echo must report (the connection landed where intended). */
  expectPod: string;
}

export interface RrResult {
  /** Latencies of the measured requests, ms, sorted: from the write to the last byte of the reply. */
  latencies: Float64Array;
  p50: number;
  p90: number;
  p99: number;
  /** Requests sent per second over the measured window (the load generator kept up if ~rate). */
  achievedRps: number;
  /** How late, after its scheduled time, the generator wrote requests: p99 and max, ms. */
  lagP99: number;
  lagMax: number;
  /** Measured requests without a complete reply 5 s after the last was sent. */
  lost: number;
  window: Window;
}

/**
 * Fixed-rate request/response: `connections` raw echo connections, requests spread round-robin,
 * each written at its scheduled time whether or not earlier replies have come back (open loop, so
 * a slow proxy cannot slow the generator down and hide its own latency). Replies come back in order
 * on each connection, so each `size` bytes received completes the oldest outstanding request.
 */
export async function requestResponse(netns: string, ip: string, port: number, opts: RrOptions, meter: CpuMeter): Promise<RrResult> {
  const conns = await Promise.all(Array.from({ length: opts.connections }, () => openRawEcho(netns, ip, port)));
  for (const c of conns) {
    if (c.identity.pod !== opts.expectPod) throw new Error(`rr connection to ${ip}:${port} landed on pod ${c.identity.pod}, not ${opts.expectPod}`);
  }
  const payload = Buffer.alloc(opts.size, 'x');
  const latencies: number[] = [];
  const lags: number[] = [];
  const interval = 1000 / opts.rate;
  const warm = Math.round(opts.rate * opts.warmupSeconds);
  const total = warm + Math.round(opts.rate * opts.seconds);
  let completed = 0;
  let measuredCompleted = 0;
  let onAllDone: (() => void) | undefined;
  let failure: Error | undefined;

  const state = conns.map(({ socket }) => {
    const c = { socket, sentAt: [] as number[], head: 0, carry: 0 };
    socket.on('data', (chunk: Buffer) => {
      const now = performance.now();
      c.carry += chunk.length;
      while (c.carry >= opts.size) {
        c.carry -= opts.size;
        const t = c.sentAt[c.head++];
        completed++;
        if (t !== undefined && t >= 0) {
          latencies.push(now - t);
          measuredCompleted++;
        }
      }
      if (completed === total) onAllDone?.();
    });
    socket.on('error', (err) => (failure ??= err));
    return c;
  });

  try {
    let sent = 0;
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const due = Math.min(total, Math.floor((performance.now() - t0) / interval) + 1);
        while (sent < due) {
          if (sent === warm) meter.start();
          const c = state[sent % state.length]!;
          const at = performance.now();
          if (sent >= warm) {
            c.sentAt.push(at);
            lags.push(at - (t0 + sent * interval));
          } else {
            c.sentAt.push(-1);
          }
          c.socket.write(payload);
          sent++;
        }
        if (sent >= total || failure) {
          resolve();
          return;
        }
        setTimeout(tick, Math.max(0, t0 + sent * interval - performance.now()));
      };
      tick();
    });
    const window = meter.stop();
    if (failure) throw new Error(`rr connection failed: ${failure.message}`);
    if (completed < total) {
      await Promise.race([new Promise<void>((r) => (onAllDone = r)), new Promise((r) => setTimeout(r, 5000))]);
    }
    const sorted = sortedCopy(latencies);
    const lagSorted = sortedCopy(lags);
    return {
      latencies: sorted,
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      achievedRps: (total - warm) / window.seconds,
      lagP99: percentile(lagSorted, 99),
      lagMax: lagSorted[lagSorted.length - 1] ?? NaN,
      lost: total - warm - measuredCompleted,
      window,
    };
  } finally {
    for (const c of state) c.socket.destroy();
  }
}

/**
 * New connections per second: `concurrency` clients, each in a loop: connect, `GET /` with
 * `Connection: close`, read the answer, close after the server does (a client that half-closes
 * first keeps every tuple in TIME_WAIT and ends up measuring its own ephemeral-port search).
 */
export async function connectionRate(netns: string, ip: string, port: number, seconds: number, concurrency: number, meter: CpuMeter): Promise<{ rate: number; window: Window }> {
  const request = `GET / HTTP/1.1\r\nHost: ${ip}\r\nConnection: close\r\n\r\n`;
  let done = 0;
  meter.start();
  const end = performance.now() + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const s = await connectFrom(netns, ip, port, { timeoutMs: CONNECT_TIMEOUT_MS });
      s.write(request);
      s.resume();
      await once(s, 'end');
      s.end();
      await once(s, 'close');
      done++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const window = meter.stop();
  return { rate: done / window.seconds, window };
}

/** Opens `count` raw echo connections, `parallel` at a time, each proven end to end by its handshake. */
export async function openIdle(netns: string, ip: string, port: number, count: number, parallel = 50): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < count && !failed) {
      next++;
      const { socket } = await openRawEcho(netns, ip, port);
      socket.on('error', () => undefined);
      sockets.push(socket);
    }
  };
  const results = await Promise.allSettled(
    Array.from({ length: Math.min(parallel, count) }, () =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      }),
    ),
  );
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) {
    for (const s of sockets) s.destroy();
    throw new Error(`opening ${count} connections failed after ${sockets.length}: ${(rejected.reason as Error).message}`);
  }
  return sockets;
}
