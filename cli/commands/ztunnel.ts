import type { CommandModule } from 'yargs';
import { TransparentRelay } from '../../agent/ztunnel/relay.js';
import { createLogger } from '../../mesh/log.js';
import { untilSignal } from '../signals.js';

interface ZtunnelArgs {
  node?: string;
}

export const ztunnelCommand: CommandModule<object, ZtunnelArgs> = {
  command: 'ztunnel',
  describe: 'Run the node tunnel proxy in the current network namespace',
  builder: (y) => y.option('node', { type: 'string', default: process.env.NODE_NAME, describe: 'this node (for logs)' }),
  handler: async (args) => {
    const log = createLogger({ component: 'ztunnel' }).child(args.node ? { node: args.node } : {});
    const relay = new TransparentRelay({ log, accessLog: log.child({ target: 'access' }) });
    await relay.start();
    const signal = await untilSignal();
    log.info({ signal }, 'stopping');
    await relay.stop();
  },
};
