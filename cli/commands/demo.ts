import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import { PROJECT_ROOT } from '../../native/index.js';
import { labUp } from '../../lab/up.js';
import { labStatus } from '../../lab/status.js';
import { NotRootError } from '../../mesh/errors.js';
import { printSummary } from './lab.js';
import { demoWalkthrough } from '../../lab/demo.js';

export const DEMO_FILE = join(PROJECT_ROOT, 'examples/demo.yaml');

export const demoCommand: CommandModule<object, { file: string }> = {
  command: 'demo',
  describe: 'Bring up the demo lab (examples/demo.yaml), show capture working, print what to try',
  builder: (y) => y.option('file', { type: 'string', default: DEMO_FILE, describe: 'the demo lab file' }),
  handler: async (args) => {
    if (process.getuid?.() !== 0) throw new NotRootError('the demo');
    const started = Date.now();
    const plan = await labUp({ file: args.file, replace: true, progress: (l) => console.error(`· ${l}`) });
    printSummary(await labStatus(plan.name), (Date.now() - started) / 1000);
    console.log('');
    console.log(await demoWalkthrough(plan));
  },
};
