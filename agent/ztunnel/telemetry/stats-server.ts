// The ztunnel's Prometheus endpoint on 15020 (istio-ambient-spec.md §1, zt:src/metrics/server.rs):
// `/metrics` and `/stats/prometheus`, both paths Istio's scrape annotations and docs use. Bound to
// the wildcard address like Istio's, so Prometheus reaches it on the pod IP.
import http from 'node:http';
import { Registry } from 'prom-client';

export const STATS_PORT = 15020;
const PATHS = new Set(['/metrics', '/stats/prometheus']);

/** The handler alone, for a caller that binds it itself. */
export function createStatsServer(render: () => Promise<string>): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    if (!PATHS.has(path)) {
      res.writeHead(404).end();
    } else if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
    } else {
      void serve(render, res);
    }
  });
}

export interface StatsServerOptions {
  render: () => Promise<string>;
  port?: number;
  /** Without it Node binds the unspecified address: `::` (dual stack) where IPv6 exists, else 0.0.0.0. */
  host?: string;
}

/** Listening once this resolves; a bind failure (port taken) rejects. */
export async function startStatsServer(opts: StatsServerOptions): Promise<http.Server> {
  const server = createStatsServer(opts.render);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? STATS_PORT, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

async function serve(render: () => Promise<string>, res: http.ServerResponse): Promise<void> {
  // A scrape must never take the proxy down: a failed render is the scraper's 500, nothing more.
  try {
    let body: string;
    try {
      body = await render();
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`rendering metrics failed: ${err instanceof Error ? err.message : String(err)}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': Registry.PROMETHEUS_CONTENT_TYPE }).end(body);
  } catch {
    res.destroy();
  }
}
