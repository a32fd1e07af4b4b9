// `npm run bench -- redirect`: what capture + relay costs, against the same traffic uncaptured.
//
// A two-node lab; a client pod on node-1 and an echo server pod on node-2, in namespaces whose
// dataplane-mode labels are flipped between rounds by editing the lab file, as a user would:
//   off     neither enrolled: straight through the node namespaces
//   client  the client enrolled: captured by node-1's ztunnel and relayed (one relay)
//   both    both enrolled: node-1's ztunnel outbound and node-2's ztunnel inbound (two relays;
//           the path of ambient traffic between two meshed pods)
// Each round measures, per mode, the rate of new connections (connect, one request, close, with
// a fixed number of concurrent clients) and bulk throughput on one connection. Modes alternate
// within each round so that machine noise hits all of them alike; results are medians over the
// rounds, and the ratios are taken within the run.
import { once } from 'node:events';
import type net from 'node:net';
import { TestLab, waitFor } from '../support/lab.js';
import { connectFrom } from '../../lab/connect.js';
import { netnsPath } from '../../lab/topology.js';
import type { LabPodPlan } from '../../lab/plan.js';
import { privilegedSkipReason } from '../support/env.js';

type Mode = 'off' | 'client' | 'both';
const MODES: Mode[] = ['off', 'client', 'both'];

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const CONN_SECONDS = Number(process.env.CONN_SECONDS ?? 3);
const BULK_SECONDS = Number(process.env.BULK_SECONDS ?? 3);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 8);

function setMode(lab: TestLab, mode: Mode): void {
  const label = (on: boolean) => (on ? 'istio.io/dataplane-mode: ambient' : 'mode: off');
  lab.editFile((text) =>
    text
      .replace(/(name: bench-client\n\s+labels:\n\s+)\S+: \S+/, `$1${label(mode !== 'off')}`)
      .replace(/(name: bench-server\n\s+labels:\n\s+)\S+: \S+/, `$1${label(mode === 'both')}`),
  );
}

async function applied(lab: TestLab, mode: Mode): Promise<void> {
  const want = (node: string, key: string, on: boolean) => (lab.redirection(node)?.pods[key]?.state === 'enabled') === on;
  await waitFor(`mode ${mode} applied by the agents`, () => want('node-1', 'bench-client/client', mode !== 'off') && want('node-2', 'bench-server/server', mode === 'both'));
}

/** New connections per second: connect, GET / with Connection: close, read the answer, close. */
async function connectionRate(client: LabPodPlan, ip: string, seconds: number): Promise<number> {
  const end = Date.now() + seconds * 1000;
  let done = 0;
  const request = `GET / HTTP/1.1\r\nHost: ${ip}\r\nConnection: close\r\n\r\n`;
  const worker = async () => {
    while (Date.now() < end) {
      const s = await connectFrom(netnsPath(client.netns), ip, 8080, { timeoutMs: 5000 });
      // The server closes first, as with any HTTP client: a client that half-closes first keeps
      // every tuple in TIME_WAIT and soon measures its own ephemeral-port search instead.
      s.write(request);
      s.resume();
      await once(s, 'end');
      s.end();
      await once(s, 'close');
      done++;
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return done / ((Date.now() - started) / 1000);
}

/** Bulk throughput of one connection, in Gbit/s: GET /bytes/<lots>, read for `seconds`. */
async function bulkThroughput(client: LabPodPlan, ip: string, seconds: number): Promise<number> {
  const s: net.Socket = await connectFrom(netnsPath(client.netns), ip, 8080, { timeoutMs: 5000 });
  s.write(`GET /bytes/${10 * 1024 ** 3} HTTP/1.1\r\nHost: ${ip}\r\n\r\n`);
  let bytes = 0;
  let started = 0;
  await new Promise<void>((resolve, reject) => {
    s.on('data', (chunk: Buffer) => {
      // Start the clock at the first byte: connection set-up is the other measurement.
      if (!started) started = Date.now();
      else bytes += chunk.length;
      if (started && Date.now() - started >= seconds * 1000) {
        s.destroy();
        resolve();
      }
    });
    s.on('error', (err) => reject(new Error(`bulk connection failed after ${bytes} bytes: ${err.message}`)));
    s.on('close', () => resolve());
  });
  return (bytes * 8) / ((Date.now() - started) / 1000) / 1e9;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function main(): Promise<void> {
  const skip = privilegedSkipReason();
  if (skip) {
    console.log(`redirect benchmark skipped: ${skip}`);
    return;
  }
  const lab = await TestLab.up('bench.yaml', 'bench-redirect');
  try {
    const client = lab.pod('bench-client/client');
    const server = lab.pod('bench-server/server');
    const rate: Record<Mode, number[]> = { off: [], client: [], both: [] };
    const bulk: Record<Mode, number[]> = { off: [], client: [], both: [] };
    console.log(`redirect benchmark: ${ROUNDS} rounds; ${CONCURRENCY} concurrent clients for ${CONN_SECONDS} s; one bulk connection for ${BULK_SECONDS} s`);
    for (let round = 1; round <= ROUNDS; round++) {
      // Rotate the order each round so no mode always runs first (warm caches, timers).
      const order = MODES.map((_, i) => MODES[(i + round) % MODES.length]!);
      for (const mode of order) {
        setMode(lab, mode);
        await applied(lab, mode);
        rate[mode].push(await connectionRate(client, server.ip, CONN_SECONDS));
        bulk[mode].push(await bulkThroughput(client, server.ip, BULK_SECONDS));
      }
      console.log(`  round ${round}: ${MODES.map((m) => `${m} ${rate[m].at(-1)!.toFixed(0)} conn/s ${bulk[m].at(-1)!.toFixed(2)} Gbit/s`).join(' | ')}`);
    }
    const r = (m: Mode) => median(rate[m]);
    const b = (m: Mode) => median(bulk[m]);
    console.log('');
    console.log('                     off (not enrolled)   client enrolled (1 relay)   both enrolled (2 relays)');
    console.log(`connections/s        ${r('off').toFixed(0).padEnd(21)}${r('client').toFixed(0).padEnd(28)}${r('both').toFixed(0)}`);
    console.log(`  ratio to off       1.00                 ${(r('client') / r('off')).toFixed(2).padEnd(28)}${(r('both') / r('off')).toFixed(2)}`);
    console.log(`bulk Gbit/s          ${b('off').toFixed(2).padEnd(21)}${b('client').toFixed(2).padEnd(28)}${b('both').toFixed(2)}`);
    console.log(`  ratio to off       1.00                 ${(b('client') / b('off')).toFixed(2).padEnd(28)}${(b('both') / b('off')).toFixed(2)}`);
    console.log('(medians over the rounds; ratios from this run only)');
  } finally {
    await lab.down();
  }
}
