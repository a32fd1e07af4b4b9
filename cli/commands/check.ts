import type { CommandModule } from 'yargs';
import { runPreflight, type CheckResult } from '../../agent/preflight.js';
import { nodeChecks } from '../../lab/check.js';

function print(results: CheckResult[]): boolean {
  for (const r of results) {
    console.log(`${r.ok ? '✔' : '✘'} ${r.message}${r.ok || !r.hint ? '' : `\n    hint: ${r.hint}`}`);
  }
  return results.every((r) => r.ok);
}

export const checkCommand: CommandModule<object, { node?: string; lab?: string }> = {
  command: 'check',
  describe: 'Preflight: can this machine (or a lab node) run Ambit? One line per check, with a fix',
  builder: (y) =>
    y
      .option('node', { type: 'string', describe: 'also check a lab node: its namespace, agent, ztunnel and redirection' })
      .option('lab', { type: 'string', describe: 'the lab of --node (default: the only lab)' }),
  handler: async (args) => {
    console.log('This machine:');
    let ok = print(runPreflight());
    if (args.node) {
      console.log(`\nLab node ${args.node}:`);
      ok = print(await nodeChecks(args.node, args.lab)) && ok;
    }
    console.log(ok ? '\nStatus check results are ✔' : '\nSome checks failed (✘): see the hints above');
    process.exitCode = ok ? 0 : 1;
  },
};
