// Where the CA's self-signed root is kept between restarts, in Istio's `cacerts` layout
// (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem): a directory (standalone and lab), or a
// Kubernetes Secret (secret-root-store.ts). Both make the first writer win, so control planes
// starting at the same time end up signing with one root, never two.

import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ConfigError, errorMessage } from '../../mesh/errors.js';
import type { RootStore, SigningMaterial } from './types.js';

/** File (and Secret data key) of each part, as Istio names them. */
export const CA_FILES: Readonly<Record<keyof SigningMaterial, string>> = {
  caCert: 'ca-cert.pem',
  caKey: 'ca-key.pem',
  certChain: 'cert-chain.pem',
  rootCert: 'root-cert.pem',
};


const PARTS: readonly (keyof SigningMaterial)[] = ['caKey', 'caCert', 'certChain', 'rootCert'];
const CERTIFICATE = /-----BEGIN CERTIFICATE-----/;
const PRIVATE_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;

/**
 * Checks that each part looks like what it must be; `where(part)` names the file or key. The
 * chain may be empty: a self-signed root has nothing between itself and the root.
 */
export function checkMaterial(material: SigningMaterial, where: (part: keyof SigningMaterial) => string): SigningMaterial {
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

/**
 * The four files in one directory (0700). ca-key.pem is 0600. A directory with Istio's plugged-in
 * cacerts (an intermediate) loads the same way.
 */
export class DirectoryRootStore implements RootStore {
  constructor(readonly dir: string) {}

  /** Null when the directory holds none of the files; a ConfigError naming the file when one is missing or unreadable. */
  async load(): Promise<SigningMaterial | null> {
    const texts: Partial<Record<keyof SigningMaterial, string>> = {};
    const missing: string[] = [];
    for (const part of PARTS) {
      const file = join(this.dir, CA_FILES[part]);
      try {
        texts[part] = await readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(`${file}: cannot read: ${errorMessage(err)}`, { cause: err });
        missing.push(CA_FILES[part]);
      }
    }
    if (missing.length === PARTS.length) return null;
    if (missing.length > 0) {
      throw new ConfigError(`${this.dir}: the CA directory is partial: ${missing.map((f) => join(this.dir, f)).join(', ')} missing (it needs ${Object.values(CA_FILES).join(', ')})`);
    }
    const material = { caCert: texts.caCert!, caKey: texts.caKey!, certChain: texts.certChain!, rootCert: texts.rootCert! };
    return checkMaterial(material, (part) => join(this.dir, CA_FILES[part]));
  }

  /**
   * Writes the four files into a staging directory beside the target, then renames it into place.
   * rename() is atomic and refuses a target that already has files, so a crash leaves at most an
   * ignored staging directory (never a partial CA), and of concurrent writers (processes too) one
   * wins and the others return what it stored.
   */
  async saveIfAbsent(material: SigningMaterial): Promise<SigningMaterial> {
    checkMaterial(material, (part) => `the material to save (${CA_FILES[part]})`);
    const existing = await this.load().catch((err: unknown) => {
      if (err instanceof ConfigError) throw err;
      return null;
    });
    if (existing !== null) return existing;
    const parent = dirname(this.dir);
    await mkdir(parent, { recursive: true, mode: 0o700 });
    const staging = join(parent, `.${basename(this.dir)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    await mkdir(staging, { mode: 0o700 });
    try {
      for (const part of PARTS) await writeDurably(join(staging, CA_FILES[part]), material[part], part === 'caKey' ? 0o600 : 0o644);
      await syncDirectory(staging);
      try {
        await rename(staging, this.dir);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw new ConfigError(`${this.dir}: cannot create: ${errorMessage(err)}`, { cause: err });
        const winner = await this.load();
        if (winner === null) throw new ConfigError(`${this.dir}: holds files that are not a CA`);
        return winner;
      }
      await syncDirectory(parent);
      return { ...material };
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
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

