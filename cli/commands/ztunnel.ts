import { readFileSync } from 'node:fs';
import { ownAddresses } from '../addresses.js';
import type { CommandModule } from 'yargs';
import { Ztunnel } from '../../agent/ztunnel/ztunnel.js';
import { ZtunnelDiscovery } from '../../agent/ztunnel/discovery.js';
import { IdentityManager } from '../../agent/identity/manager.js';
import { nodeIdentities } from '../../agent/identity/node-identities.js';
import { FileSource } from '../../mesh/config/sources/file.js';
import type { ConfigSource } from '../../mesh/config/source.js';
import { CaClient, DEFAULT_CLUSTER_ID } from '../../mesh/identity/ca-client.js';
import { DEFAULT_TRUST_DOMAIN } from '../../mesh/identity/spiffe.js';
import { ConfigError } from '../../mesh/errors.js';
import { loadKubeConfig } from '../../mesh/k8s/kubeconfig.js';
import { createLogger, type Logger } from '../../mesh/log.js';
import { LogLevels } from '../../mesh/log-levels.js';
import type { Identity } from '../../mesh/identity/spiffe.js';
import { untilSignal } from '../signals.js';

interface ZtunnelArgs {
  node?: string;
  'ca-address'?: string;
  'xds-address'?: string;
  'ca-root'?: string;
  'token-file': string;
  'trust-domain': string;
  'cluster-id': string;
  config?: string[];
  'pod-status'?: string;
  kubeconfig?: string;
  workers: number;
}

async function nodeSource(args: ZtunnelArgs, node: string, log: Logger): Promise<ConfigSource> {
  if (args.config?.length) return new FileSource({ paths: args.config, node, podStatusFile: args['pod-status'], log });
  const kubeConfig = await loadKubeConfig(args.kubeconfig);
  const { KubernetesSource } = await import('../../mesh/config/sources/kubernetes.js');
  return new KubernetesSource({ kubeConfig, node, log });
}

export const ztunnelCommand: CommandModule<object, ZtunnelArgs> = {
  command: 'ztunnel',
  describe: 'Run the node tunnel proxy in the current network namespace',
  builder: (y) =>
    y
      .option('node', { type: 'string', default: process.env.NODE_NAME, describe: 'this node' })
      .option('ca-address', { type: 'string', describe: 'the CA (host:port); with it, ztunnel holds certificates for its node\'s enrolled identities' })
      .option('xds-address', { type: 'string', describe: 'the control plane\'s xDS (host:port); default: --ca-address (one control plane serves both, as istiod)' })
      .option('ca-root', { type: 'string', describe: 'PEM file of the mesh root(s), which sign the CA\'s serving certificate' })
      .option('token-file', { type: 'string', default: '/var/run/secrets/tokens/istio-token', describe: 'bearer token for the CA, read at every request' })
      .option('trust-domain', { type: 'string', default: DEFAULT_TRUST_DOMAIN })
      .option('cluster-id', { type: 'string', default: DEFAULT_CLUSTER_ID })
      .option('config', { type: 'string', array: true, describe: 'read the node\'s pods from these YAML files (watched) instead of the Kubernetes API' })
      .option('pod-status', { type: 'string', describe: 'with --config: JSON file giving pods their node and IP (written by the lab)' })
      .option('kubeconfig', { type: 'string' })
      .option('workers', { type: 'number', default: 1, describe: 'proxy worker threads, each with its own listeners (SO_REUSEPORT) and connection pool' }),
  handler: async (args) => {
    const log = createLogger({ component: 'ztunnel' }).child(args.node ? { node: args.node } : {});
    if (!Number.isInteger(args.workers) || args.workers < 1 || args.workers > 64) throw new ConfigError(`--workers must be a whole number from 1 to 64, got ${args.workers}`);
    const levels = new LogLevels();
    const accessLog = log.child({ target: 'access' });
    const proxyLog = log.child({ target: 'proxy' });
    levels.register('default', log);
    levels.register('access', accessLog);
    levels.register('proxy', proxyLog);
    let nodeIds: readonly Identity[] = [];

    let identities: IdentityManager | undefined;
    let source: ConfigSource | undefined;
    let ca: CaClient | undefined;
    if (args['ca-address']) {
      if (!args['ca-root']) throw new ConfigError('--ca-address needs --ca-root (the roots that sign the CA\'s certificate)');
      if (!args.node) throw new ConfigError('--ca-address needs --node (or NODE_NAME): the identities held are those of its pods');
      const tokenFile = args['token-file'];
      ca = new CaClient({ address: args['ca-address'], rootCert: readFileSync(args['ca-root'], 'utf8'), token: () => readFileSync(tokenFile, 'utf8'), clusterId: args['cluster-id'] });
      const identityLog = log.child({ target: 'identity' });
      levels.register('identity', identityLog);
      identities = new IdentityManager({ ca, log: identityLog });
      const manager = identities;
      source = await nodeSource(args, args.node, log);
      const setIds = (ids: readonly Identity[]) => {
        nodeIds = ids;
        manager.setNodeIdentities(ids);
      };
      source.onChange((view) => setIds(nodeIdentities(view, args['trust-domain'])));
      source.onError((err) => log.error({ err: err.message }, 'config rejected; keeping the last good view'));
      await source.start();
      setIds(nodeIdentities(source.current(), args['trust-domain']));
    }
    let discovery: ZtunnelDiscovery | undefined;
    const xdsAddress = args['xds-address'] ?? args['ca-address'];
    if (xdsAddress) {
      if (!args['ca-root']) throw new ConfigError('--xds-address needs --ca-root (the roots that sign the control plane\'s certificate)');
      if (!args.node) throw new ConfigError('--xds-address needs --node (or NODE_NAME)');
      const tokenFile = args['token-file'];
      const xdsLog = log.child({ target: 'xds' });
      levels.register('xds', xdsLog);
      discovery = new ZtunnelDiscovery({
        address: xdsAddress,
        rootCert: readFileSync(args['ca-root'], 'utf8'),
        token: () => readFileSync(tokenFile, 'utf8'),
        clusterId: args['cluster-id'],
        node: args.node,
        instanceIp: process.env.INSTANCE_IP ?? ownAddresses()[0] ?? '1.1.1.1',
        podName: process.env.POD_NAME ?? `ztunnel-${args.node}`,
        podNamespace: process.env.POD_NAMESPACE ?? 'ambit-system',
        log: xdsLog,
      });
    }
    const ztunnel = new Ztunnel({
      node: args.node ?? 'unknown',
      trustDomain: args['trust-domain'],
      discovery,
      identities,
      nodeIdentities: () => nodeIds,
      roots: args['ca-root'] ? [readFileSync(args['ca-root'], 'utf8')] : [],
      workers: args.workers,
      log: proxyLog,
      accessLog,
      logLevels: levels,
    });
    // Listening before xDS starts: updates then reach a proxy that exists.
    await ztunnel.start();
    discovery?.start();

    const signal = await untilSignal();
    log.info({ signal }, 'stopping');
    discovery?.close();
    await ztunnel.close();
    identities?.close();
    ca?.close();
    await source?.close();
  },
};
