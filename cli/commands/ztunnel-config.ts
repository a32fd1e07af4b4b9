import type { Argv, CommandModule } from 'yargs';
import { httpGetFrom } from '../../lab/connect.js';
import { loadPlan, resolveLabName } from '../../lab/status.js';
import { netnsPath } from '../../lab/topology.js';
import { ADMIN_PORT, type ConfigDump, type DumpedCertificate, type DumpedConnection, type DumpedConnections } from '../../agent/ztunnel/admin.js';
import { AmbitError, LabNotFoundError, NotRootError } from '../../mesh/errors.js';
import { table } from '../table.js';

interface Common {
  node?: string;
  lab?: string;
  output?: string;
}

/** The config dump of a lab node's ztunnel, read from inside its namespace (admin is localhost only). */
async function configDump(args: Common): Promise<ConfigDump> {
  if (process.getuid?.() !== 0) throw new NotRootError('ambit ztunnel-config');
  const plan = loadPlan(resolveLabName(args.lab));
  const node = args.node ? plan.nodes.find((n) => n.name === args.node) : plan.nodes[0];
  if (!node) throw new LabNotFoundError(`no node '${args.node}' in lab ${plan.name} (nodes: ${plan.nodes.map((n) => n.name).join(', ')})`);
  const r = await httpGetFrom(netnsPath(node.ztunnelNetns), '127.0.0.1', ADMIN_PORT, '/config_dump');
  if (r.status !== 200) throw new AmbitError('AMBIT_ADMIN', `ztunnel on ${node.name} answered ${r.status} to /config_dump`);
  return JSON.parse(r.body) as ConfigDump;
}

const valid = (c: DumpedCertificate) => Date.parse(c.validFrom) <= Date.now() && Date.now() < Date.parse(c.expirationTime);

const certificates: CommandModule<object, Common> = {
  command: 'certificates',
  aliases: ['certificate', 'certs', 'cert'],
  describe: "The node ztunnel's certificates: identity, type, state, serial, validity",
  handler: async (args) => {
    const dump = await configDump(args);
    if (args.output === 'json') {
      console.log(JSON.stringify(dump.certificates, null, 2));
      return;
    }
    const rows: string[][] = [];
    for (const c of dump.certificates) {
      const certs: [string, DumpedCertificate][] = [...c.certChain.map((x, i): [string, DumpedCertificate] => [i === 0 ? 'Leaf' : 'Intermediate', x]), ...c.rootCerts.map((x): [string, DumpedCertificate] => ['Root', x])];
      if (certs.length === 0) rows.push([c.identity, 'Leaf', c.state, 'false', 'NA', 'NA', 'NA']);
      for (const [type, x] of certs) rows.push([c.identity, type, c.state, String(valid(x)), x.serialNumber, x.expirationTime, x.validFrom]);
    }
    console.log(table(['CERTIFICATE NAME', 'TYPE', 'STATUS', 'VALID CERT', 'SERIAL NUMBER', 'NOT AFTER', 'NOT BEFORE'], rows));
  },
};

/** The xDS sections of a dump; a ztunnel without a control plane has none. */
function xdsSections(dump: ConfigDump, node: string | undefined): Required<Pick<ConfigDump, 'workloads' | 'services' | 'policies'>> {
  if (!dump.workloads || !dump.services || !dump.policies) {
    throw new AmbitError('AMBIT_ADMIN', `the ztunnel${node ? ` on ${node}` : ''} has no xDS state (it runs without a control plane)`);
  }
  return { workloads: dump.workloads, services: dump.services, policies: dump.policies };
}

/** `waypoint.ns.svc.cluster.local:15008` shown as istioctl does: the waypoint's name, or None. */
function waypointName(text: string | undefined): string {
  if (!text) return 'None';
  const host = text.slice(text.indexOf('/') + 1).replace(/:\d+$/, '');
  return host.split('.')[0] ?? host;
}

const workloads: CommandModule<object, Common & { namespace?: string }> = {
  command: 'workloads',
  aliases: ['workload', 'w'],
  describe: 'The workloads the node ztunnel knows (from xDS): namespace, pod, address, node, waypoint, protocol',
  builder: (y) => y.option('namespace', { alias: 'n', type: 'string', describe: 'only this namespace' }),
  handler: async (args) => {
    const list = xdsSections(await configDump(args), args.node).workloads.filter((w) => !args.namespace || w.namespace === args.namespace);
    if (args.output === 'json') {
      console.log(JSON.stringify(list, null, 2));
      return;
    }
    console.log(table(['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL'], list.map((w) => [w.namespace, w.name, w.workloadIps.join(',') || 'None', w.node || 'None', waypointName(w.waypoint), w.protocol])));
  },
};

const services: CommandModule<object, Common & { namespace?: string }> = {
  command: 'services',
  aliases: ['service', 's'],
  describe: 'The services the node ztunnel knows (from xDS): namespace, name, VIPs, waypoint, healthy/total endpoints',
  builder: (y) => y.option('namespace', { alias: 'n', type: 'string', describe: 'only this namespace' }),
  handler: async (args) => {
    const list = xdsSections(await configDump(args), args.node).services.filter((s) => !args.namespace || s.namespace === args.namespace);
    if (args.output === 'json') {
      console.log(JSON.stringify(list, null, 2));
      return;
    }
    console.log(table(['NAMESPACE', 'SERVICE NAME', 'SERVICE VIP', 'WAYPOINT', 'ENDPOINTS'], list.map((s) => [s.namespace, s.name, s.vips.map((v) => v.replace(/^[^/]*\//, '')).join(',') || 'None', waypointName(s.waypoint), `${s.endpoints.healthy}/${s.endpoints.total}`])));
  },
};

const policies: CommandModule<object, Common & { namespace?: string }> = {
  command: 'policies',
  aliases: ['policy', 'authorization', 'p'],
  describe: 'The L4 authorization policies the node ztunnel enforces (from xDS): namespace, name, action, scope',
  builder: (y) => y.option('namespace', { alias: 'n', type: 'string', describe: 'only this namespace' }),
  handler: async (args) => {
    const list = xdsSections(await configDump(args), args.node).policies.filter((p) => !args.namespace || p.namespace === args.namespace);
    if (args.output === 'json') {
      console.log(JSON.stringify(list, null, 2));
      return;
    }
    console.log(table(['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE'], list.map((p) => [p.namespace, p.name, p.dryRun ? `${p.action} (dry run)` : p.action, p.scope])));
  },
};

/** `ip:port` shown as istioctl does without --raw: the service hostname of a VIP, else `pod.namespace` of a workload IP. */
function addressNames(dump: ConfigDump): (addr: string) => string {
  const names = new Map<string, string>();
  for (const w of dump.workloads ?? []) for (const ip of w.workloadIps) names.set(ip, `${w.name}.${w.namespace}`);
  for (const s of dump.services ?? []) for (const v of s.vips) names.set(v.replace(/^[^/]*\//, ''), s.hostname);
  return (addr) => {
    const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr);
    const name = m ? names.get(m[1]!) : undefined;
    return name ? `${name}:${m![2]}` : addr;
  };
}

export interface ConnectionsFilter {
  namespace?: string;
  direction?: string;
  raw?: boolean;
}

/** The dump's connections section narrowed to a namespace (of the node's workload) and a direction. */
function selectConnections(all: DumpedConnections, f: ConnectionsFilter): DumpedConnections {
  const keep = (c: DumpedConnection) => !f.namespace || c.workload?.namespace === f.namespace;
  return {
    inbound: f.direction === 'outbound' ? [] : all.inbound.filter(keep),
    outbound: f.direction === 'inbound' ? [] : all.outbound.filter(keep),
  };
}

/** istioctl's `ztunnel-config connections` table. */
export function connectionsTable(dump: ConfigDump, f: ConnectionsFilter = {}): string {
  const sel = selectConnections(dump.connections ?? { inbound: [], outbound: [] }, f);
  const name = f.raw ? (a: string) => a : addressNames(dump);
  const who = (c: DumpedConnection) => ({ workload: c.workload?.name ?? 'unknown', namespace: c.workload?.namespace ?? 'unknown' });
  const rows = [...sel.inbound.map((c) => ({ ...who(c), inbound: true, c })), ...sel.outbound.map((c) => ({ ...who(c), inbound: false, c }))];
  // istioctl's order: by namespace, then workload; within a workload inbound before outbound.
  rows.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.workload.localeCompare(b.workload) || Number(b.inbound) - Number(a.inbound));
  return table(
    ['WORKLOAD', 'DIRECTION', 'LOCAL', 'REMOTE', 'REMOTE TARGET', 'PROTOCOL'],
    rows.map(({ workload, namespace, inbound, c }) =>
      inbound
        ? [`${workload}.${namespace}`, 'Inbound', name(c.actualDst), name(c.src), c.originalDst ?? '', c.protocol]
        : [`${workload}.${namespace}`, 'Outbound', name(c.src), name(c.actualDst), c.originalDst ? name(c.originalDst) : '', c.protocol],
    ),
  );
}

const connections: CommandModule<object, Common & ConnectionsFilter> = {
  command: 'connections',
  aliases: ['cons'],
  describe: "The node ztunnel's open connections: workload, direction, local and remote address, what the client addressed, protocol",
  builder: (y) =>
    y
      .option('namespace', { alias: 'n', type: 'string', describe: 'only workloads of this namespace' })
      .option('direction', { choices: ['inbound', 'outbound'], describe: 'only this direction' })
      .option('raw', { type: 'boolean', default: false, describe: 'show IP addresses instead of names' }),
  handler: async (args) => {
    const dump = await configDump(args);
    if (!dump.connections) throw new AmbitError('AMBIT_ADMIN', `the ztunnel${args.node ? ` on ${args.node}` : ''} reports no connections (it runs no proxy)`);
    if (args.output === 'json') {
      console.log(JSON.stringify(selectConnections(dump.connections, args), null, 2));
      return;
    }
    console.log(connectionsTable(dump, args));
  },
};

export const ztunnelConfigCommand: CommandModule<object, Common> = {
  command: 'ztunnel-config',
  aliases: ['zc'],
  describe: "Show a lab node's ztunnel configuration, as istioctl ztunnel-config does",
  builder: (y: Argv<object>) =>
    y
      .option('node', { type: 'string', describe: 'the node whose ztunnel to ask (default: the first)' })
      .option('lab', { type: 'string', describe: 'lab name (default: the only lab)' })
      .option('output', { alias: 'o', choices: ['json', 'short'], describe: 'output format' })
      .command(certificates)
      .command(workloads)
      .command(services)
      .command(policies)
      .command(connections)
      .demandCommand(1, 'name what to show: workloads, services, policies, certificates or connections'),
  handler: () => {},
};
