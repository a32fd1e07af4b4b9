// Watches the node's ztunnel readiness endpoint (15021 /healthz/ready, as Istio's ztunnel serves
// it). A pod is reported `enabled` only while its ztunnel is ready, `pending` otherwise.
import http from 'node:http';
import { EventEmitter } from 'node:events';
import type { Logger } from '../mesh/log.js';
import { READINESS_PORT } from '../mesh/ports.js';

export interface ZtunnelHealthOptions {
  /** ztunnel's address, or null while it is not known. */
  address: () => string | null;
  port?: number;
  log?: Logger;
  intervalMs?: number;
}

export class ZtunnelHealth extends EventEmitter<{ change: [ready: boolean] }> {
  private timer: NodeJS.Timeout | undefined;
  private current = false;
  private stopped = false;
  private readonly opts: ZtunnelHealthOptions;

  constructor(opts: ZtunnelHealthOptions) {
    super();
    this.opts = opts;
  }

  get ready(): boolean {
    return this.current;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Probes now, without waiting for the next tick. */
  async probeNow(): Promise<boolean> {
    const address = this.opts.address();
    const ready = address ? await probe(address, this.opts.port ?? READINESS_PORT) : false;
    if (ready !== this.current) {
      this.current = ready;
      this.opts.log?.info({ ztunnel: address, ready }, ready ? 'ztunnel is ready' : 'ztunnel is not ready');
      this.emit('change', ready);
    }
    return ready;
  }

  private async tick(): Promise<void> {
    await this.probeNow();
    if (this.stopped) return;
    // Poll faster while not ready, so pods turn `enabled` soon after ztunnel comes up.
    const interval = this.opts.intervalMs ?? (this.current ? 2000 : 500);
    this.timer = setTimeout(() => void this.tick(), interval);
    this.timer.unref();
  }
}

function probe(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/healthz/ready', timeout: 1000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}
