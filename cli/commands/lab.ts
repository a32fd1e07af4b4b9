import { spawn } from 'node:child_process';
import type { Argv, CommandModule } from 'yargs';
import { labUp } from '../../lab/up.js';
import { labDown } from '../../lab/down.js';
import { restartComponent } from '../../lab/components.js';
import { labStatus, loadPlan, resolveLabName, type LabStatus } from '../../lab/status.js';
import { startWorkloads } from '../../lab/workloads.js';
import { LAB_WIDE, paths, writeJsonAtomic, listLabs, type Component } from '../../lab/state.js';
import { ConfigError, LabNotFoundError, NotRootError } from '../../mesh/errors.js';
import { createLogger } from '../../mesh/log.js';
import { untilSignal } from '../signals.js';
import { table } from '../table.js';

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new NotRootError(what);
}

export function printSummary(s: LabStatus, seconds?: number): void {
  const enrolled = s.pods.filter((p) => p.enrolled).length;
  console.log(
    `lab ${s.name} is ${s.phase}${seconds !== undefined ? ` (${seconds.toFixed(1)} s)` : ''}: ${s.nodes.length} nodes, ${s.pods.length} pods (${enrolled} enrolled), ${s.services.length} services, fail ${s.failMode}`,
  );
  console.log('');
  console.log(table(['NODE', 'POD CIDR', 'FABRIC IP', 'ZTUNNEL', 'READY'], s.nodes.map((n) => [n.name, n.podCIDR, n.fabricIP, n.ztunnel.ip, n.ztunnel.ready ? 'yes' : 'no'])));
  console.log('');
  console.log(
    table(
      ['NAMESPACE', 'POD', 'NODE', 'IP', 'PORTS', 'ENROLLED', 'REDIRECTION'],
      s.pods.map((p) => [p.namespace, p.name, p.node, p.ip, p.ports.join(',') || '-', p.enrolled ? 'yes' : 'no', p.redirection ?? '-']),
    ),
  );
  if (s.services.length) {
    console.log('');
    console.log(
      table(
        ['NAMESPACE', 'SERVICE', 'VIP', 'PORTS', 'ENDPOINTS'],
        s.services.map((v) => [v.namespace, v.name, v.vip ?? 'None', v.ports.map((p) => `${p.port}/${p.protocol}`).join(','), v.ports.flatMap((p) => p.endpoints).join(',') || '-']),
      ),
    );
  }
  console.log('');
  console.log(table(['COMPONENT', 'NODE', 'PID', 'RUNNING', 'LOG'], s.components.map((c) => [c.component, c.node, c.pid, c.running ? 'yes' : 'NO', c.log])));
}

const up: CommandModule<object, { file: string; replace: boolean; quiet: boolean; timeout: number }> = {
  command: 'up <file>',
  describe: 'Build a lab cluster from a file of Kubernetes YAML plus a Lab document',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'the lab file' })
      .option('replace', { type: 'boolean', default: false, describe: 'remove an existing lab of the same name first' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'print only the lab name' })
      .option('timeout', { type: 'number', default: 60, describe: 'seconds to wait for the lab to be ready before rolling it back' }),
  handler: async (args) => {
    requireRoot('ambit lab up');
    if (!Number.isFinite(args.timeout) || args.timeout <= 0) throw new ConfigError(`--timeout must be a positive number of seconds, got ${String(args.timeout)}`);
    const started = Date.now();
    const plan = await labUp({ file: args.file, replace: args.replace, timeoutMs: args.timeout * 1000, progress: args.quiet ? undefined : (l) => console.error(`· ${l}`) });
    if (args.quiet) console.log(plan.name);
    else printSummary(await labStatus(plan.name), (Date.now() - started) / 1000);
  },
};

const status: CommandModule<object, { lab?: string; output?: string }> = {
  command: 'status [lab]',
  describe: 'Show a lab: nodes, pods, services, components',
  builder: (y) =>
    y.positional('lab', { type: 'string', describe: 'lab name (default: the only lab)' }).option('output', { alias: 'o', choices: ['json', 'short'], describe: 'output format' }),
  handler: async (args) => {
    requireRoot('ambit lab status');
    const s = await labStatus(resolveLabName(args.lab));
    if (args.output === 'json') console.log(JSON.stringify(s, null, 2));
    else printSummary(s);
  },
};

const down: CommandModule<object, { lab?: string; all: boolean }> = {
  command: 'down [lab]',
  describe: 'Remove a lab: processes, pinned eBPF programs and links, namespaces, files',
  builder: (y) => y.positional('lab', { type: 'string', describe: 'lab name (default: the only lab)' }).option('all', { type: 'boolean', default: false, describe: 'remove every lab' }),
  handler: async (args) => {
    requireRoot('ambit lab down');
    const names = args.all ? listLabs() : [args.lab ?? resolveLabName()];
    for (const name of names) {
      const r = await labDown(name);
      console.log(`lab ${name} removed: ${r.processes} processes, ${r.namespaces} namespaces, ${r.links} links`);
    }
  },
};

const exec: CommandModule<object, { target: string; command: string[]; lab?: string; '--'?: string[] }> = {
  command: 'exec <target> [command..]',
  describe: 'Run a command inside a lab pod (NS/POD) or a node (node/NAME); service names resolve',
  builder: (y) =>
    y
      .positional('target', { type: 'string', demandOption: true, describe: 'NAMESPACE/POD, or node/NODE' })
      .positional('command', { type: 'string', array: true, default: [], describe: 'the command (after --)' })
      .option('lab', { type: 'string', describe: 'lab name (default: the only lab)' })
      .parserConfiguration({ 'populate--': true }),
  handler: async (args) => {
    requireRoot('ambit lab exec');
    const plan = loadPlan(resolveLabName(args.lab));
    const [ns, name] = args.target.split('/');
    const netns =
      ns === 'node'
        ? plan.nodes.find((n) => n.name === name)?.netns
        : plan.pods.find((p) => p.namespace === ns && p.name === name)?.netns;
    if (!netns || !name) {
      throw new LabNotFoundError(
        ns === 'node'
          ? `no node '${name ?? ''}' in lab ${plan.name} (nodes: ${plan.nodes.map((n) => n.name).join(', ')})`
          : `no pod '${args.target}' in lab ${plan.name} (pods: ${plan.pods.map((p) => p.key).join(', ')})`,
      );
    }
    const given = [...args.command, ...(args['--'] ?? [])].map(String);
    const command = given.length ? given : [process.env.SHELL ?? '/bin/sh'];
    // `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts: service names resolve.
    const child = spawn('ip', ['netns', 'exec', netns, ...command], { stdio: 'inherit' });
    const code = await new Promise<number>((resolve) => child.on('exit', (c, sig) => resolve(c ?? (sig ? 128 : 1))));
    process.exitCode = code;
  },
};

const restart: CommandModule<object, { component: string; node?: string; lab?: string; 'fail-open'?: boolean }> = {
  command: 'restart <component>',
  describe: "Restart the control plane, or one node's agent, ztunnel or workloads (as a kubelet restarts a crashed container)",
  builder: (y) =>
    y
      .positional('component', { choices: ['controlplane', 'agent', 'ztunnel', 'workloads'], demandOption: true })
      .option('node', { type: 'string', describe: 'the node (all but controlplane)' })
      .option('lab', { type: 'string', describe: 'lab name (default: the only lab)' })
      .option('fail-open', { type: 'boolean', describe: "agent: fail open instead of the lab's fail mode" }),
  handler: async (args) => {
    requireRoot('ambit lab restart');
    if (args.component !== 'controlplane' && !args.node) throw new ConfigError(`restarting the ${args.component} needs --node`);
    const rec = await restartComponent(resolveLabName(args.lab), args.component as Component, args.node ?? LAB_WIDE, { failOpen: args['fail-open'] });
    console.log(`${args.component}${args.node ? ` on ${args.node}` : ''} restarted (pid ${rec.pid}, log ${rec.log})`);
  },
};

const workloads: CommandModule<object, { lab: string; node: string }> = {
  command: 'workloads',
  describe: false,
  builder: (y) => y.option('lab', { type: 'string', demandOption: true }).option('node', { type: 'string', demandOption: true }),
  handler: async (args) => {
    const log = createLogger({ component: 'workloads' }).child({ node: args.node });
    const plan = loadPlan(args.lab);
    const w = await startWorkloads(plan, args.node, log);
    writeJsonAtomic(paths.workloads(args.lab, args.node), { ready: true, pid: process.pid, listeners: w.listeners });
    await untilSignal();
    w.close();
  },
};

export const labCommand: CommandModule = {
  command: 'lab',
  describe: 'A real multi-node cluster on this machine, built from network namespaces',
  builder: (y: Argv) => y.command(up).command(status).command(exec).command(down).command(restart).command(workloads).demandCommand(1, 'name a lab command'),
  handler: () => {},
};
