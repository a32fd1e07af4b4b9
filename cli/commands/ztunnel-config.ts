import type { Argv, CommandModule } from 'yargs';
import { httpGetFrom } from '../../lab/connect.js';
import { loadPlan, resolveLabName } from '../../lab/status.js';
import { netnsPath } from '../../lab/topology.js';
import { ADMIN_PORT, type ConfigDump, type DumpedCertificate } from '../../agent/ztunnel/admin.js';
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
      .demandCommand(1, 'name what to show: certificates'),
  handler: () => {},
};
