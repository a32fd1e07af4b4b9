import type { CommandModule } from 'yargs';
import { Agent } from '../../agent/agent.js';
import { FileSource } from '../../mesh/config/sources/file.js';
import type { ConfigSource } from '../../mesh/config/source.js';
import { loadKubeConfig } from '../../mesh/k8s/kubeconfig.js';
import { createLogger } from '../../mesh/log.js';
import { ConfigError, NotRootError } from '../../mesh/errors.js';
import { untilSignal } from '../signals.js';

interface AgentArgs {
  node?: string;
  config?: string[];
  'pod-status'?: string;
  'status-file'?: string;
  kubeconfig?: string;
  'bpf-root': string;
  'ztunnel-netns': string;
  'fail-open': boolean;
}

export const agentCommand: CommandModule<object, AgentArgs> = {
  command: 'agent',
  describe: 'Run the node agent: eBPF redirection of enrolled pods into the node ztunnel',
  builder: (y) =>
    y
      .option('node', { type: 'string', default: process.env.NODE_NAME, describe: 'this node (Kubernetes: spec.nodeName; env NODE_NAME)' })
      .option('config', { type: 'string', array: true, describe: 'read pods and namespaces from these YAML files or directories (watched) instead of the Kubernetes API' })
      .option('pod-status', { type: 'string', describe: 'with --config: JSON file giving pods their node and IP (written by the lab)' })
      .option('status-file', { type: 'string', describe: 'with --config: where to write each pod\'s redirection state' })
      .option('kubeconfig', { type: 'string', describe: 'kubeconfig file (default: in-cluster, then ~/.kube/config)' })
      .option('bpf-root', { type: 'string', default: '/sys/fs/bpf/ambit', describe: 'bpffs directory for this node\'s pinned programs, maps and links' })
      .option('ztunnel-netns', { type: 'string', demandOption: true, describe: 'network namespace of the node\'s ztunnel (path)' })
      .option('fail-open', { type: 'boolean', default: false, describe: 'when ztunnel is down, let enrolled pods\' new connections go direct (default: fail closed)' }),
  handler: async (args) => {
    if (process.getuid?.() !== 0) throw new NotRootError('ambit agent');
    const node = args.node;
    if (!node) throw new ConfigError('ambit agent: --node (or NODE_NAME) is required');
    const log = createLogger({ component: 'agent' }).child({ node });
    let source: ConfigSource;
    if (args.config?.length) {
      source = new FileSource({ paths: args.config, node, podStatusFile: args['pod-status'], redirectionStatusFile: args['status-file'], log });
    } else {
      const kubeConfig = await loadKubeConfig(args.kubeconfig);
      const { KubernetesSource } = await import('../../mesh/config/sources/kubernetes.js');
      source = new KubernetesSource({ kubeConfig, node, log });
    }
    const agent = new Agent({ node, source, bpfRoot: args['bpf-root'], ztunnelNetns: args['ztunnel-netns'], failOpen: args['fail-open'], log });
    await agent.start();
    log.info({ pods: agent.pods.length }, 'agent ready');
    const signal = await untilSignal();
    log.info({ signal }, 'stopping; pinned redirection stays in place');
    await agent.stop();
  },
};
