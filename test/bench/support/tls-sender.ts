// The sending half of the l4 benchmark's TLS ceiling, run as its own process inside a lab network
// namespace (`nsenter --net=... node tls-sender.js`). Reads {cred, roots} as JSON on stdin, serves
// TLS 1.3 exactly as HBONE configures it (mesh/hbone/tls.ts: TLS 1.3 only, the AES-GCM suites,
// mutual authentication) on 127.0.0.1, prints {"port":N} and then, to the one client that connects,
// sends 64 KiB buffers as fast as the socket takes them, until the client goes away; then exits.
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { workloadTlsOptions, type WorkloadCredential } from '../../../mesh/hbone/tls.js';

interface Input {
  cred: WorkloadCredential;
  roots: string[];
  /** Where to listen: 127.0.0.1 (loopback ceiling) or 0.0.0.0 (reached across the lab's fabric). */
  host?: string;
}

// Never outlive the benchmark that started us, even if it died without closing the connection.
setTimeout(() => process.exit(3), 120_000).unref();

const chunks: Buffer[] = [];
for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Input;

const FILL = Buffer.alloc(64 * 1024, 'ambit-tls-ceiling/');

const server = tls.createServer({ ...workloadTlsOptions(input.cred, input.roots), requestCert: true, rejectUnauthorized: true }, (socket) => {
  server.close();
  socket.on('error', () => undefined);
  socket.on('close', () => process.exit(0));
  const pump = (): void => {
    while (!socket.destroyed) {
      if (!socket.write(FILL)) {
        socket.once('drain', pump);
        return;
      }
    }
  };
  pump();
});
server.on('tlsClientError', (err) => {
  process.stderr.write(`tls-sender: client error: ${err.message}\n`);
  process.exit(1);
});
server.listen(0, input.host ?? '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
