// A control plane in a process of its own, for the controlplane benchmark: its memory (heap after
// GC, RSS) is then the control plane's alone, as a container limit would see it, not shared with
// the API server and the 100 clients. Driven over the fork IPC channel:
//   parent → { start: { apiUrl, dir, nodes } }   child → { started: { port, root, startMs } }
//   parent → 'memory'                            child → { memory: { heapMb, rssMb } }
//   parent → 'stop'                              child exits
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { ControlPlane } from '../../controlplane/controlplane.js';
import { DirectoryRootStore } from '../../controlplane/ca/root-store.js';
import { NodeCredentials } from '../../controlplane/ca/node-credentials.js';
import { KINDS } from '../../mesh/config/kinds.js';
import { KubernetesSource } from '../../mesh/config/sources/kubernetes.js';
import { FakeApiServer } from './fake-apiserver.js';

export interface ProcessMemory {
  heapMb: number;
  rssMb: number;
}

interface StartRequest {
  apiUrl: string;
  dir: string;
  nodes: string[];
}

type ChildMessage = { started: { port: number; root: string; startMs: number } } | { memory: ProcessMemory } | { failed: string };

/** The parent's handle on the child. */
export class ControlPlaneProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    readonly root: string,
    readonly startMs: number,
  ) {}

  static async start(req: StartRequest): Promise<ControlPlaneProcess> {
    const child = fork(fileURLToPath(import.meta.url), ['--child'], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const started = await new Promise<{ port: number; root: string; startMs: number }>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the control plane process exited (${code}) before it started`)));
      child.on('message', (m: ChildMessage) => {
        if ('started' in m) resolve(m.started);
        else if ('failed' in m) reject(new Error(`the control plane process failed: ${m.failed}`));
      });
      child.send({ start: req });
    });
    child.removeAllListeners('exit');
    return new ControlPlaneProcess(child, started.port, started.root, started.startMs);
  }

  memory(): Promise<ProcessMemory> {
    return new Promise((resolve) => {
      const on = (m: ChildMessage): void => {
        if (!('memory' in m)) return;
        this.child.off('message', on);
        resolve(m.memory);
      };
      this.child.on('message', on);
      this.child.send('memory');
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.send('stop');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

async function child(): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let cp: ControlPlane | undefined;
  const send = (m: ChildMessage): void => void process.send?.(m);
  process.on('message', (m: { start: StartRequest } | 'memory' | 'stop') => {
    if (m === 'memory') {
      gc();
      gc();
      const u = process.memoryUsage();
      send({ memory: { heapMb: u.heapUsed / 2 ** 20, rssMb: u.rss / 2 ** 20 } });
    } else if (m === 'stop') {
      void (cp?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
    } else {
      const { apiUrl, dir, nodes } = m.start;
      const log = pino({ level: process.env.AMBIT_BENCH_LOG ?? 'silent' });
      const kubeConfig = FakeApiServer.kubeConfigAt(apiUrl);
      const t0 = performance.now();
      ControlPlane.start({
        stateDir: dir,
        trustDomain: 'cluster.local',
        clusterId: 'Kubernetes',
        host: '127.0.0.1',
        port: 0,
        healthPort: 0,
        servingNames: [],
        servingIPs: ['127.0.0.1'],
        source: new KubernetesSource({ kubeConfig, kinds: KINDS, log }),
        authenticator: NodeCredentials.create(join(dir, 'credentials'), nodes, 'cluster.local'),
        rootStore: new DirectoryRootStore(join(dir, 'ca')),
        log,
      }).then(
        (started) => {
          cp = started;
          send({ started: { port: started.port, root: started.authority.trustBundle, startMs: performance.now() - t0 } });
        },
        (err: unknown) => send({ failed: (err as Error).message }),
      );
    }
  });
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[2] === '--child') void child();
