import type { KubeConfig } from '@kubernetes/client-node';

/**
 * The Kubernetes client configuration: the file given, else in-cluster, else ~/.kube/config.
 * The client library is imported here, on demand: it is large, and the lab never needs it.
 */
export async function loadKubeConfig(file?: string): Promise<KubeConfig> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kubeConfig = new KubeConfig();
  if (file) kubeConfig.loadFromFile(file);
  else kubeConfig.loadFromDefault();
  return kubeConfig;
}
