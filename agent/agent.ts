// The node agent: watches its node's pods, keeps the redirection datapath in line with them,
// supervises the node's ztunnel (readiness), and records each pod's redirection state.
import type { Logger } from '../mesh/log.js';
import { errorMessage } from '../mesh/errors.js';
import type { ConfigSource, RedirectionState } from '../mesh/config/source.js';
import { ensureBpffs } from './redirection/bpffs.js';
import { Datapath } from './redirection/datapath.js';
import { RedirectionManager, type PodRedirection } from './redirection/manager.js';
import { ZtunnelHealth } from './ztunnel-health.js';

export interface AgentOptions {
  node: string;
  source: ConfigSource;
  /** bpffs directory holding this node's pins, e.g. /sys/fs/bpf/ambit. */
  bpfRoot: string;
  /** Path of the ztunnel's network namespace, e.g. /run/netns/X or /proc/PID/ns/net. */
  ztunnelNetns: string;
  failOpen: boolean;
  log: Logger;
  /** Periodic reconcile, which catches what no event announces (a veth that went away). */
  resyncMs?: number;
}

export class Agent {
  private readonly opts: AgentOptions;
  private datapath: Datapath | undefined;
  private manager: RedirectionManager | undefined;
  private health: ZtunnelHealth | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private switched = false;
  private readonly recorded = new Map<string, RedirectionState>();
  private lastResult: PodRedirection[] = [];

  constructor(opts: AgentOptions) {
    this.opts = opts;
  }

  get pods(): readonly PodRedirection[] {
    return this.lastResult;
  }

  async start(): Promise<void> {
    const { log, source } = this.opts;
    if (ensureBpffs() === 'mounted') log.info('mounted bpffs at /sys/fs/bpf');
    const { datapath, result } = Datapath.open(this.opts.bpfRoot, log);
    this.datapath = datapath;
    log.info({ bpfRoot: this.opts.bpfRoot, ...result }, result.adoptedLinks ? 'adopted pinned redirection state' : 'redirection programs loaded');
    this.manager = new RedirectionManager({ datapath, ztunnelNetns: this.opts.ztunnelNetns, failOpen: this.opts.failOpen, log });
    this.health = new ZtunnelHealth({ address: () => this.manager?.ztunnelAddress ?? null, log });

    source.onError((err) => log.error({ err: err.message }, 'config rejected; keeping the last good view'));
    source.onChange(() => this.schedule());
    this.health.on('change', () => this.schedule());
    await source.start();
    await this.manager.ensureZtunnel();
    await this.health.probeNow();
    this.health.start();
    await this.reconcileNow();
    this.timer = setInterval(() => this.schedule(), this.opts.resyncMs ?? 5000);
    this.timer.unref();
  }

  /** Runs a reconcile now, or right after the one in progress. Never two at once. */
  schedule(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.reconcileNow().finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    });
  }

  private async reconcileNow(): Promise<void> {
    const { source, log } = this.opts;
    if (!this.manager || !this.health || !this.datapath) return;
    try {
      const result = await this.manager.reconcile(source.current(), this.health.ready);
      this.lastResult = result;
      if (!this.switched) {
        // The maps now hold this node's state; only now may live links run the new programs.
        const moved = this.datapath.switchPrograms();
        this.switched = true;
        if (moved) log.info({ links: moved }, 'pinned links switched to the loaded programs');
      }
      this.record(result);
    } catch (err) {
      log.error({ err: errorMessage(err) }, 'reconcile failed; retrying on the next change or resync');
    }
  }

  /** Reports each pod's state where the cluster keeps it. Not awaited: a slow API server must
   * never hold up the datapath (the sources retry and coalesce on their own). */
  private record(result: PodRedirection[]): void {
    const seen = new Set<string>();
    for (const p of result) {
      seen.add(p.key);
      if (this.recorded.has(p.key) && this.recorded.get(p.key) === p.state) continue;
      this.recorded.set(p.key, p.state);
      void this.opts.source.recordRedirection(p.pod, p.state).catch((err: unknown) => {
        this.recorded.delete(p.key);
        this.opts.log.warn({ pod: p.key, err: errorMessage(err) }, 'recording the redirection state failed; will retry');
      });
    }
    for (const key of this.recorded.keys()) if (!seen.has(key)) this.recorded.delete(key);
  }

  stats(): Record<string, bigint> | null {
    return this.datapath?.stats() ?? null;
  }

  /** Stops watching. Pinned links and maps stay: redirection keeps working without the agent. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.health?.stop();
    await this.running;
    await this.opts.source.close();
    this.datapath?.close();
  }
}
