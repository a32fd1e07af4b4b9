// Reaching lab addresses from a process in the root namespace without configuring anything there:
// the socket is created inside the lab namespace (by the native shim) and then driven by Node as
// usual, so the connection originates in that namespace and never touches the root one.
import net from 'node:net';
import http from 'node:http';
import { socketIn } from '../native/index.js';

export interface ConnectOptions {
  timeoutMs?: number;
  noDelay?: boolean;
  /** Connect from this local port (SO_REUSEADDR), e.g. to reuse a 4-tuple on purpose. */
  localPort?: number;
}

/** Connects from inside `netns` (a path) to host:port. Rejects on error or timeout. */
export function connectFrom(netns: string, host: string, port: number, opts: ConnectOptions = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = new net.Socket({ fd: socketIn(netns, opts.localPort ? { port: opts.localPort } : undefined), allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`connect to ${host}:${port} from ${netns} timed out after ${opts.timeoutMs ?? 5000} ms`), { code: 'ETIMEDOUT' }));
    }, opts.timeoutMs ?? 5000);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.connect(port, host, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(opts.noDelay ?? true);
      resolve(socket);
    });
  });
}

export interface HttpResult {
  status: number;
  body: string;
}

/** A plain HTTP/1.1 GET from inside `netns`. */
export async function httpGetFrom(netns: string, host: string, port: number, path = '/', timeoutMs = 5000): Promise<HttpResult> {
  const socket = await connectFrom(netns, host, port, { timeoutMs });
  return new Promise((resolve, reject) => {
    // No `agent` option: with one (even `false`) Node ignores createConnection and would connect
    // from this process's own namespace.
    const req = http.request({ host, port, path, method: 'GET', timeout: timeoutMs, createConnection: () => socket }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET http://${host}:${port}${path} from ${netns} timed out`)));
    req.on('error', reject);
    req.end();
  });
}
