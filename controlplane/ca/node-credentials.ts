// The lab's (and any standalone install's) way to authenticate node agents without Kubernetes:
// one random bearer token per node, written 0600 into the control plane's state directory, where
// `ambit lab status` names it for the node's ztunnel.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { isTrustDomain, type Identity } from '../../mesh/identity/spiffe.js';
import { ConfigError } from '../../mesh/errors.js';
import { isDns1123Label } from '../../mesh/k8s/manifest.js';
import { AuthenticationError, type Authenticator, type Caller } from './types.js';

/** The service account node agents present as, in Istio's trusted-node-account convention. */
export const NODE_AGENT_NAMESPACE = 'ambit-system';
export const NODE_AGENT_SERVICE_ACCOUNT = 'ztunnel';

const digest = (token: string) => createHash('sha256').update(token).digest();

export class NodeCredentials implements Authenticator {
  private readonly byDigest: { digest: Buffer; node: string }[];
  private readonly identity: Identity;
  readonly dir: string;

  private constructor(dir: string, tokens: Map<string, string>, trustDomain: string) {
    this.dir = dir;
    this.byDigest = [...tokens].map(([node, token]) => ({ node, digest: digest(token) }));
    this.identity = { trustDomain, namespace: NODE_AGENT_NAMESPACE, serviceAccount: NODE_AGENT_SERVICE_ACCOUNT };
  }

  static tokenPath(dir: string, node: string): string {
    return join(dir, `${node}.token`);
  }

  /** Reads each node's token, creating those that do not exist yet. */
  static create(dir: string, nodes: string[], trustDomain: string): NodeCredentials {
    if (!isTrustDomain(trustDomain)) throw new ConfigError(`trust domain '${trustDomain}' is not a DNS name`);
    for (const node of nodes) {
      // Node names become file names: nothing but a DNS label may reach the path.
      if (!isDns1123Label(node)) throw new ConfigError(`node name '${node}' is not a DNS-1123 label`);
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const tokens = new Map<string, string>();
    for (const node of nodes) {
      const path = NodeCredentials.tokenPath(dir, node);
      if (!existsSync(path)) writeToken(path);
      chmodSync(path, 0o600);
      const token = readFileSync(path, 'utf8').trim();
      if (token.length < 32) throw new ConfigError(`${path} holds no usable credential (${token.length} characters): remove it and restart to issue a new one`);
      tokens.set(node, token);
    }
    return new NodeCredentials(dir, tokens, trustDomain);
  }

  async authenticate(token: string): Promise<Caller> {
    const d = digest(token);
    // Compare every entry in constant time: nothing about a wrong token leaks through timing.
    let node: string | undefined;
    for (const e of this.byDigest) if (timingSafeEqual(e.digest, d)) node = e.node;
    if (!node) throw new AuthenticationError('the bearer token is not a node credential of this control plane');
    return { kind: 'node', identity: this.identity, node };
  }
}

/** Writes a new token durably and exclusively: a crash never leaves an empty file behind, and of
 * two processes creating it at once exactly one wins (link fails on an existing name). */
function writeToken(path: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${randomBytes(32).toString('base64url')}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    unlinkSync(tmp);
  }
}
