import { ownAddresses } from '../addresses.js';
import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import type { ConfigSource } from '../../mesh/config/source.js';
import { KINDS } from '../../mesh/config/kinds.js';
import { CONTROL_PLANE_STATUS_FILE, FileSource } from '../../mesh/config/sources/file.js';
import { ControlPlane, GRPC_PORT, HEALTH_PORT } from '../../controlplane/controlplane.js';
import { DEFAULT_MODEL_OPTIONS } from '../../controlplane/model/types.js';
import { DirectoryRootStore } from '../../controlplane/ca/root-store.js';
import { NodeCredentials } from '../../controlplane/ca/node-credentials.js';
import { DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS } from '../../controlplane/ca/authority.js';
import type { Authenticator, RootStore } from '../../controlplane/ca/types.js';
import { ConfigError } from '../../mesh/errors.js';
import { DEFAULT_TRUST_DOMAIN } from '../../mesh/identity/spiffe.js';
import { DEFAULT_CLUSTER_ID } from '../../mesh/identity/ca-client.js';
import { loadKubeConfig } from '../../mesh/k8s/kubeconfig.js';
import { createLogger } from '../../mesh/log.js';
import { untilSignal } from '../signals.js';

interface ControlPlaneArgs {
  config?: string[];
  'pod-status'?: string;
  'redirection-status'?: string[];
  kubeconfig?: string;
  'state-dir': string;
  'trust-domain': string;
  'cluster-id': string;
  listen: string;
  port: number;
  'health-port': number;
  'serving-dns': string[];
  'serving-ip'?: string[];
  'node-credentials'?: string[];
  cacerts?: string;
  namespace: string;
  'trusted-node-accounts': string[];
  'default-ttl': number;
  'max-ttl': number;
  'root-namespace': string;
  'domain-suffix': string;
  network: string;
  'debug-remote': boolean;
}

export const controlplaneCommand: CommandModule<object, ControlPlaneArgs> = {
  command: 'controlplane',
  describe: 'Run the control plane: the CA and delta xDS on 15012 (gRPC, TLS), health and debug on 15014',
  builder: (y) =>
    y
      .option('config', { type: 'string', array: true, describe: 'read the cluster from these YAML files or directories (watched) instead of the Kubernetes API' })
      .option('pod-status', { type: 'string', describe: 'with --config: JSON file giving pods their node and IP, and services their cluster IP (written by the lab)' })
      .option('redirection-status', { type: 'string', array: true, describe: "with --config: the agents' redirection records (JSON, one per node), read as pods' ambient.istio.io/redirection annotation" })
      .option('kubeconfig', { type: 'string', describe: 'kubeconfig file (default: in-cluster, then ~/.kube/config)' })
      .option('state-dir', { type: 'string', default: '/var/lib/ambit/controlplane', describe: 'where the root (standalone), node credentials and the trust bundle are kept' })
      .option('trust-domain', { type: 'string', default: DEFAULT_TRUST_DOMAIN })
      .option('root-namespace', { type: 'string', default: DEFAULT_MODEL_OPTIONS.rootNamespace, describe: 'policies here without a selector apply mesh-wide (istiod: meshConfig.rootNamespace)' })
      .option('domain-suffix', { type: 'string', default: DEFAULT_MODEL_OPTIONS.domainSuffix, describe: 'the cluster DNS suffix of service hostnames' })
      .option('debug-remote', { type: 'boolean', default: false, describe: 'answer the /debug endpoints of the health port to any client, not only loopback ones' })
      .option('network', { type: 'string', default: DEFAULT_MODEL_OPTIONS.network, describe: 'the network of every workload (Istio multi-network)' })
      .option('cluster-id', { type: 'string', default: DEFAULT_CLUSTER_ID })
      .option('listen', { type: 'string', default: '0.0.0.0', describe: 'address to listen on' })
      .option('port', { type: 'number', default: GRPC_PORT })
      .option('health-port', { type: 'number', default: HEALTH_PORT })
      .option('serving-dns', { type: 'string', array: true, default: ['ambit-controlplane.ambit-system.svc'], describe: 'DNS names of the serving certificate, beside istiod.istio-system.svc' })
      .option('serving-ip', { type: 'string', array: true, describe: 'addresses of the serving certificate (default: this namespace\'s)' })
      .option('node-credentials', { type: 'string', array: true, describe: 'standalone/lab: issue a bearer token per node, in STATE_DIR/credentials/NODE.token' })
      .option('cacerts', { type: 'string', describe: "a directory in Istio's cacerts layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem): sign with it" })
      .option('namespace', { type: 'string', default: process.env.POD_NAMESPACE ?? 'ambit-system', describe: 'Kubernetes: the namespace of the root Secret' })
      .option('trusted-node-accounts', { type: 'string', array: true, default: ['ambit-system/ztunnel'], describe: "Kubernetes: service accounts that may ask for the identities of pods on their node (add istio-system/ztunnel to serve Istio's ztunnel)" })
      .option('default-ttl', { type: 'number', default: DEFAULT_TTL_SECONDS, describe: 'certificate lifetime when a request names none (seconds)' })
      .option('max-ttl', { type: 'number', default: MAX_TTL_SECONDS, describe: 'the longest certificate lifetime granted (seconds)' }),
  handler: async (args) => {
    const log = createLogger({ component: 'controlplane' });
    const trustDomain = args['trust-domain'];
    let source: ConfigSource;
    let authenticator: Authenticator;
    let rootStore: RootStore;
    if (args.config?.length) {
      // Policy status goes where the CLI finds it: STATE_DIR/status.json.
      source = new FileSource({
        paths: args.config,
        kinds: KINDS,
        podStatusFile: args['pod-status'],
        redirectionFiles: args['redirection-status'] ?? [],
        statusFile: join(args['state-dir'], CONTROL_PLANE_STATUS_FILE),
        log,
      });
      if (!args['node-credentials']?.length) throw new ConfigError('with --config, name the nodes to issue credentials for with --node-credentials');
      authenticator = NodeCredentials.create(join(args['state-dir'], 'credentials'), args['node-credentials'], trustDomain);
      rootStore = new DirectoryRootStore(join(args['state-dir'], 'ca'));
    } else {
      const kubeConfig = await loadKubeConfig(args.kubeconfig);
      const { KubernetesSource } = await import('../../mesh/config/sources/kubernetes.js');
      const { TokenReviewAuthenticator } = await import('../../controlplane/ca/kubernetes-auth.js');
      const { SecretRootStore } = await import('../../controlplane/ca/secret-root-store.js');
      const cluster = new KubernetesSource({ kubeConfig, kinds: KINDS, log });
      source = cluster;
      authenticator = new TokenReviewAuthenticator({ kubeConfig, pods: () => cluster.current().pods, trustDomain, trustedNodeAccounts: args['trusted-node-accounts'], log });
      rootStore = new SecretRootStore({ kubeConfig, namespace: args.namespace, log });
    }
    const cp = await ControlPlane.start({
      stateDir: args['state-dir'],
      trustDomain,
      clusterId: args['cluster-id'],
      host: args.listen,
      port: args.port,
      healthPort: args['health-port'],
      servingNames: args['serving-dns'],
      servingIPs: args['serving-ip']?.length ? args['serving-ip'] : ownAddresses(),
      source,
      model: { rootNamespace: args['root-namespace'], domainSuffix: args['domain-suffix'], network: args.network },
      debugRemote: args['debug-remote'],
      authenticator,
      rootStore,
      ...(args.cacerts ? { cacerts: new DirectoryRootStore(args.cacerts) } : {}),
      authority: { defaultTtlSeconds: args['default-ttl'], maxTtlSeconds: args['max-ttl'] },
      log,
    });
    const signal = await untilSignal();
    log.info({ signal }, 'stopping');
    await cp.stop();
  },
};
