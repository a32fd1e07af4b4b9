// `ambit mesh-config`: what the control plane made of the cluster, from its debug endpoints
// (15014): where each AuthorizationPolicy is enforced and what was dropped, which objects could not
// be translated, and whether every proxy is in sync (istioctl proxy-status).
import http from 'node:http';
import type { Argv, CommandModule } from 'yargs';
import { httpGetFrom } from '../../lab/connect.js';
import { loadPlan, resolveLabName } from '../../lab/status.js';
import { netnsPath } from '../../lab/topology.js';
import { HEALTH_PORT } from '../../controlplane/controlplane.js';
import type { PolicyStatus } from '../../controlplane/model/types.js';
import type { ConnectionStatus, TypeStatus } from '../../controlplane/xds/connection.js';
import type { PushStats } from '../../controlplane/discovery.js';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_TYPE } from '../../mesh/xds/types.js';
import { AmbitError, NotRootError } from '../../mesh/errors.js';
import { table } from '../table.js';

interface Common {
  lab?: string;
  address?: string;
  output?: string;
}

function getDirect(address: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://${address}${path}`, { timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${address} within 5 s`)));
    req.on('error', reject);
  });
}

/** A debug endpoint of the control plane: at --address, or the lab's (entering its namespace). */
async function debug<T>(args: Common, path: string): Promise<T> {
  let r: { status: number; body: string };
  if (args.address) {
    r = await getDirect(args.address, path);
  } else {
    if (process.getuid?.() !== 0) throw new NotRootError('ambit mesh-config (for a lab; give --address for a control plane you can reach)');
    const plan = loadPlan(resolveLabName(args.lab));
    // Debug endpoints answer loopback clients: ask from inside the control plane's namespace.
    r = await httpGetFrom(netnsPath(plan.controlPlane.netns), '127.0.0.1', HEALTH_PORT, path);
  }
  if (r.status !== 200) throw new AmbitError('AMBIT_DEBUG', `the control plane answered ${r.status} to ${path}: ${r.body.trim()}`);
  return JSON.parse(r.body) as T;
}

function print(args: Common, value: unknown, render: () => string): void {
  console.log(args.output === 'json' ? JSON.stringify(value, null, 2) : render());
}

const policies: CommandModule<object, Common & { namespace?: string }> = {
  command: 'policies',
  aliases: ['policy', 'p'],
  describe: 'Every AuthorizationPolicy: where it is enforced (ztunnel, which waypoint, nowhere), what ztunnel had to drop, and what it does now',
  builder: (y) => y.option('namespace', { alias: 'n', type: 'string', describe: 'only this namespace' }),
  handler: async (args) => {
    const list = await debug<PolicyStatus[]>(args, `/debug/policies${args.namespace ? `?namespace=${encodeURIComponent(args.namespace)}` : ''}`);
    print(args, list, () =>
      table(
        ['NAMESPACE', 'POLICY NAME', 'ENFORCED BY', 'DROPPED', 'ACCEPTED', 'WHAT IT DOES'],
        list.map((p) => [
          p.namespace,
          p.name,
          p.enforcedBy.join(', ') || 'nowhere',
          p.dropped.join(',') || '-',
          p.conditions.map((c) => `${c.type}=${c.status}${c.reason !== 'Accepted' ? ` (${c.reason})` : ''}`).join(' '),
          p.summary,
        ]),
      ),
    );
  },
};

interface ProblemLine {
  object: string;
  severity: string;
  message: string;
}

const problems: CommandModule<object, Common> = {
  command: 'problems',
  describe: 'Objects the control plane could not (fully) translate, and why',
  handler: async (args) => {
    const list = await debug<ProblemLine[]>(args, '/debug/problems');
    print(args, list, () => (list.length === 0 ? 'no problems' : table(['OBJECT', 'SEVERITY', 'PROBLEM'], list.map((p) => [p.object, p.severity, p.message]))));
  },
};

function syncState(t: TypeStatus | undefined): string {
  if (!t) return 'NOT SENT';
  if (t.nack) return 'NACK';
  if (t.lastNonce !== null && t.lastNonce === t.ackedNonce && t.pending !== 'all' && t.pending === 0) return 'SYNCED';
  return 'STALE';
}

const proxies: CommandModule<object, Common> = {
  command: 'proxies',
  aliases: ['proxy-status', 'ps'],
  describe: 'Every connected proxy and, per resource type, whether it has ACKed the latest push (SYNCED, STALE, NACK, NOT SENT)',
  handler: async (args) => {
    const list = await debug<ConnectionStatus[]>(args, '/debug/syncz');
    print(args, list, () =>
      table(
        ['NAME', 'CALLER', 'ADDRESSES', 'AUTHORIZATION', 'WAYPOINT', 'CONNECTED'],
        list.map((c) => [c.node || c.peer, c.caller, syncState(c.types[ADDRESS_TYPE]), syncState(c.types[AUTHORIZATION_TYPE]), syncState(c.types[WAYPOINT_TYPE]), c.connectedAt]),
      ),
    );
  },
};

const push: CommandModule<object, Common> = {
  command: 'push',
  describe: 'Pushes so far, the last push duration, and the resources served',
  handler: async (args) => {
    const s = await debug<PushStats & { connections: number }>(args, '/debug/push_status');
    print(args, s, () =>
      table(
        ['PUSHES', 'LAST PUSH', 'LAST PUSH MS', 'ADDRESSES', 'AUTHORIZATIONS', 'WAYPOINTS', 'CONNECTIONS'],
        [[s.pushes, s.lastPushAt ?? '-', s.lastPushMs, s.resources.addresses, s.resources.authorizations, s.resources.waypoints, s.connections]],
      ),
    );
  },
};

export const meshConfigCommand: CommandModule<object, Common> = {
  command: 'mesh-config',
  aliases: ['mc'],
  describe: "Show what the control plane serves: policy enforcement, problems, proxies' sync state",
  builder: (y: Argv<object>) =>
    y
      .option('lab', { type: 'string', describe: 'lab name (default: the only lab)' })
      .option('address', { type: 'string', describe: 'the control plane\'s debug port, host:port (e.g. through kubectl port-forward to 15014), instead of a lab' })
      .option('output', { alias: 'o', choices: ['json', 'short'], describe: 'output format' })
      .command(policies)
      .command(problems)
      .command(proxies)
      .command(push)
      .demandCommand(1, 'name what to show: policies, problems, proxies or push'),
  handler: () => {},
};
