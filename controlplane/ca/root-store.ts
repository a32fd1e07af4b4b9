// Where the CA's self-signed root is kept between restarts, in Istio's `cacerts` layout
// (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem): a directory (standalone and lab), or a
// Kubernetes Secret (istiod's `istio-ca-secret`). Both make the first writer win, so control planes
// starting at the same time end up signing with one root, never two.

import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import { KubernetesApiError } from '../../agent/sources/kubernetes.js';
import { ConfigError, errorMessage } from '../../mesh/errors.js';
import type { Logger } from '../../mesh/log.js';
import { apiStatusOf, callWithDeadline, describeApiError } from './kube-call.js';
import type { RootStore, SigningMaterial } from './types.js';

/** File (and Secret data key) of each part, as Istio names them. */
export const CA_FILES: Readonly<Record<keyof SigningMaterial, string>> = {
  caCert: 'ca-cert.pem',
  caKey: 'ca-key.pem',
  certChain: 'cert-chain.pem',
  rootCert: 'root-cert.pem',
};

/** Istio's type for the Secret holding its self-signed root. */
export const CA_SECRET_TYPE = 'istio.io/ca-root';
export const DEFAULT_CA_SECRET = 'istio-ca-secret';

// The key goes first: whoever links it has claimed the directory, and the others wait for the rest.
const LINK_ORDER: readonly (keyof SigningMaterial)[] = ['caKey', 'caCert', 'certChain', 'rootCert'];
const CERTIFICATE = /-----BEGIN CERTIFICATE-----/;
const PRIVATE_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;

/**
 * Checks that each part looks like what it must be; `where(part)` names the file or key. The
 * chain may be empty: a self-signed root has nothing between itself and the root.
 */
function checkMaterial(material: SigningMaterial, where: (part: keyof SigningMaterial) => string): SigningMaterial {
  const expect = (part: keyof SigningMaterial, pattern: RegExp, what: string, emptyOk = false): void => {
    const text = material[part];
    if (emptyOk && text.trim() === '') return;
    if (!pattern.test(text)) throw new ConfigError(`${where(part)}: ${text.trim() === '' ? 'is empty' : 'is not PEM'}; expected ${what}`);
  };
  expect('caCert', CERTIFICATE, 'the signing certificate');
  expect('caKey', PRIVATE_KEY, "the signing certificate's private key");
  expect('certChain', CERTIFICATE, 'the chain from the signing certificate up to the root', true);
  expect('rootCert', CERTIFICATE, 'the root certificate(s)');
  return material;
}

export interface DirectoryRootStoreOptions {
  /** How long load() waits for a directory another writer is completing before calling it partial. Default 2 s. */
  settleMs?: number;
}

/**
 * The four files in one directory (created 0700 when missing). ca-key.pem is 0600. A directory
 * with Istio's plugged-in cacerts (an intermediate) loads the same way.
 */
export class DirectoryRootStore implements RootStore {
  private readonly settleMs: number;

  constructor(
    readonly dir: string,
    opts: DirectoryRootStoreOptions = {},
  ) {
    this.settleMs = opts.settleMs ?? 2000;
  }

  /** Null when none of the files exist; a ConfigError naming the file when one is missing or unreadable. */
  async load(): Promise<SigningMaterial | null> {
    const deadline = Date.now() + this.settleMs;
    for (;;) {
      const read = await this.readOnce();
      if (!('missing' in read)) return read.material;
      // Files appear one link at a time while another control plane saves: give it a moment.
      if (Date.now() >= deadline) {
        throw new ConfigError(`${this.dir}: the CA directory is partial: ${read.missing.map((f) => join(this.dir, f)).join(', ')} missing (it needs ${Object.values(CA_FILES).join(', ')})`);
      }
      await sleep(20);
    }
  }

  /**
   * Writes the files under temporary names, then hard-links them to their names, the key first:
   * link() never replaces, so of concurrent writers (processes too) only the one that links the key
   * goes on, and the others return what it stored.
   */
  async saveIfAbsent(material: SigningMaterial): Promise<SigningMaterial> {
    checkMaterial(material, (part) => `the material to save (${CA_FILES[part]})`);
    const existing = await this.load();
    if (existing !== null) return existing;
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tag = `${process.pid}.${randomBytes(6).toString('hex')}`;
    const temps = new Map<keyof SigningMaterial, string>();
    try {
      for (const part of LINK_ORDER) {
        const temp = join(this.dir, `.${CA_FILES[part]}.${tag}.tmp`);
        temps.set(part, temp);
        await writeDurably(temp, material[part], part === 'caKey' ? 0o600 : 0o644);
      }
      for (const [i, part] of LINK_ORDER.entries()) {
        const target = join(this.dir, CA_FILES[part]);
        try {
          await link(temps.get(part)!, target);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ConfigError(`${target}: cannot create: ${errorMessage(err)}`, { cause: err });
          if (i > 0) throw new ConfigError(`${target}: appeared while this control plane was saving the CA: something else writes ${this.dir}`);
          const winner = await this.load();
          if (winner === null) throw new ConfigError(`${this.dir}: the CA files of a concurrent writer vanished`);
          return winner;
        }
      }
      await syncDirectory(this.dir);
      return { ...material };
    } finally {
      await Promise.all([...temps.values()].map((temp) => unlink(temp).catch(() => undefined)));
    }
  }

  private async readOnce(): Promise<{ material: SigningMaterial | null } | { missing: string[] }> {
    const texts: Partial<Record<keyof SigningMaterial, string>> = {};
    const missing: string[] = [];
    for (const part of LINK_ORDER) {
      const file = join(this.dir, CA_FILES[part]);
      try {
        texts[part] = await readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(`${file}: cannot read: ${errorMessage(err)}`, { cause: err });
        missing.push(CA_FILES[part]);
      }
    }
    if (missing.length === LINK_ORDER.length) return { material: null };
    if (missing.length > 0) return { missing };
    const material = { caCert: texts.caCert!, caKey: texts.caKey!, certChain: texts.certChain!, rootCert: texts.rootCert! };
    return { material: checkMaterial(material, (part) => join(this.dir, CA_FILES[part])) };
  }
}

/** Written and flushed: a root key that a crash turned into an empty file would be a new root. */
async function writeDurably(file: string, text: string, mode: number): Promise<void> {
  const handle = await open(file, 'wx', mode);
  try {
    // The mode given to open() passes through the umask; the key must be exactly 0600.
    await handle.chmod(mode);
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes the new links themselves durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

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
    for (const part of LINK_ORDER) data[CA_FILES[part]] = Buffer.from(material[part], 'utf8').toString('base64');
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
