import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { AmbitError } from '../mesh/errors.js';
import { agentCommand } from './commands/agent.js';
import { ztunnelCommand } from './commands/ztunnel.js';
import { labCommand } from './commands/lab.js';
import { checkCommand } from './commands/check.js';
import { demoCommand } from './commands/demo.js';
import { controlplaneCommand } from './commands/controlplane.js';
import { ztunnelConfigCommand } from './commands/ztunnel-config.js';
import { meshConfigCommand } from './commands/mesh-config.js';

function report(err: unknown): never {
  if (err instanceof AmbitError) {
    console.error(`ambit: ${err.message} [${err.code}]`);
  } else {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  }
  process.exit(1);
}

process.on('unhandledRejection', report);

await yargs(hideBin(process.argv))
  .scriptName('ambit')
  .usage('$0 <command>\n\nAmbit: a sidecar-less service mesh (eBPF redirection, HBONE mTLS, waypoints).')
  .command(labCommand)
  .command(checkCommand)
  .command(demoCommand)
  .command(ztunnelConfigCommand)
  .command(meshConfigCommand)
  .command(controlplaneCommand)
  .command(agentCommand)
  .command(ztunnelCommand)
  .demandCommand(1, 'name a command; see --help')
  .strict()
  .recommendCommands()
  .wrap(Math.min(110, process.stdout.columns || 110))
  .fail((msg, err, y) => {
    if (err) report(err);
    console.error(`${y.help()}\n\nambit: ${msg}`);
    process.exit(2);
  })
  .parseAsync()
  .catch(report);
