// The CA's root kept in a Kubernetes Secret (istiod's `istio-ca-secret`), first writer wins. In a
// module of its own so that the lab and standalone control plane never load the Kubernetes client.
import { CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import { KubernetesApiError } from '../../mesh/k8s/errors.js';
import { ConfigError } from '../../mesh/errors.js';
import type { Logger } from '../../mesh/log.js';
import { apiStatusOf, callWithDeadline, describeApiError } from './kube-call.js';
import { CA_FILES, checkMaterial } from './root-store.js';
import type { RootStore, SigningMaterial } from './types.js';

/** Istio's type for the Secret holding its self-signed root. */
export const CA_SECRET_TYPE = 'istio.io/ca-root';
export const DEFAULT_CA_SECRET = 'istio-ca-secret';

export interface SecretRootStoreOptions {
  kubeConfig: KubeConfig;
  /** The control plane's namespace. */
  namespace: string;
  /** Default 'istio-ca-secret', istiod's name for it. */
  name?: string;
  log: Logger;
  /** Deadline of each API request. Default 10 s. */
  timeoutMs?: number;
}

/**
 * A Secret of type istio.io/ca-root with the four files as data keys. It also loads istiod's own
 * istio-ca-secret, where root-cert.pem and cert-chain.pem are empty (the root is ca-cert.pem).
 */
export class SecretRootStore implements RootStore {
  private readonly api: CoreV1Api;
  private readonly namespace: string;
  private readonly name: string;
  private readonly log: Logger;
  private readonly timeoutMs: number;

  constructor(opts: SecretRootStoreOptions) {
    this.api = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.namespace = opts.namespace;
    this.name = opts.name ?? DEFAULT_CA_SECRET;
    this.log = opts.log;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  private get ref(): string {
    return `Secret ${this.namespace}/${this.name}`;
  }

  /** Null when the Secret does not exist; KubernetesApiError when the API fails; ConfigError when it is malformed. */
  async load(): Promise<SigningMaterial | null> {
    let secret: V1Secret;
    try {
      secret = await callWithDeadline(`reading ${this.ref}`, this.timeoutMs, (options) => this.api.readNamespacedSecret({ name: this.name, namespace: this.namespace }, options));
    } catch (err) {
      if (apiStatusOf(err) === 404) return null;
      throw new KubernetesApiError(`cannot read ${this.ref}: ${describeApiError(err)}`, apiStatusOf(err), { cause: err });
    }
    return this.materialOf(secret);
  }

  /** Creates the Secret; when another replica created it first (409), returns what that one stored. */
  async saveIfAbsent(material: SigningMaterial): Promise<SigningMaterial> {
    checkMaterial(material, (part) => `the material to save (${CA_FILES[part]})`);
    const data: Record<string, string> = {};
    for (const part of Object.keys(CA_FILES) as (keyof SigningMaterial)[]) data[CA_FILES[part]] = Buffer.from(material[part], 'utf8').toString('base64');
    const body: V1Secret = { apiVersion: 'v1', kind: 'Secret', metadata: { name: this.name, namespace: this.namespace }, type: CA_SECRET_TYPE, data };
    // A Secret deleted between our 409 and our read: create again, a few times at most.
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await callWithDeadline(`creating ${this.ref}`, this.timeoutMs, (options) => this.api.createNamespacedSecret({ namespace: this.namespace, body }, options));
        this.log.info({ secret: `${this.namespace}/${this.name}` }, 'stored the CA root');
        return { ...material };
      } catch (err) {
        if (apiStatusOf(err) !== 409) throw new KubernetesApiError(`cannot create ${this.ref}: ${describeApiError(err)}`, apiStatusOf(err), { cause: err });
      }
      const winner = await this.load();
      if (winner !== null) {
        this.log.info({ secret: `${this.namespace}/${this.name}` }, 'another control plane stored the CA root first; using it');
        return winner;
      }
    }
    throw new KubernetesApiError(`cannot create ${this.ref}: it exists when created and is gone when read, again and again`, 409);
  }

  private materialOf(secret: V1Secret): SigningMaterial {
    const data = secret.data ?? {};
    const text = (part: keyof SigningMaterial): string | undefined => {
      const value = data[CA_FILES[part]];
      return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
    };
    const required = (part: 'caCert' | 'caKey'): string => {
      const value = text(part);
      if (value === undefined) throw new ConfigError(`${this.ref}: data key ${CA_FILES[part]} is missing`);
      return value;
    };
    const caCert = required('caCert');
    const material = { caCert, caKey: required('caKey'), certChain: text('certChain') ?? '', rootCert: text('rootCert') || caCert };
    return checkMaterial(material, (part) => `${this.ref}: data key ${CA_FILES[part]}`);
  }
}
