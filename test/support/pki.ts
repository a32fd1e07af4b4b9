// Certificates made by openssl, not by Ambit's CA: a root and SPIFFE leaves for TLS tests.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIdentity } from '../../mesh/identity/spiffe.js';
import type { WorkloadCredential } from '../../mesh/hbone/tls.js';

export interface TestPki {
  rootPem: string;
  /** A leaf for `uri` (any URI SAN, SPIFFE or not), chain leaf first and root last. */
  issue(uri: string, opts?: { keyType?: 'ec' | 'rsa' }): { keyPem: string; chain: string[] };
  /** The same as a WorkloadCredential (uri must be a SPIFFE identity). */
  credential(uri: string): WorkloadCredential;
  close(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makePki(name = 'test-root'): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-pki-'));
  openssl(
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'root.key', '-out', 'root.pem', '-days', '2', '-subj', `/O=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    dir,
  );
  const rootPem = readFileSync(join(dir, 'root.pem'), 'utf8');
  let n = 0;
  const issue = (uri: string, opts: { keyType?: 'ec' | 'rsa' } = {}): { keyPem: string; chain: string[] } => {
    const id = `leaf${++n}`;
    const keyArgs = opts.keyType === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
    openssl(['req', ...keyArgs, '-nodes', '-keyout', `${id}.key`, '-out', `${id}.csr`, '-subj', '/O=workload'], dir);
    writeFileSync(
      join(dir, `${id}.ext`),
      `subjectAltName=critical,URI:${uri}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n`,
    );
    openssl(['x509', '-req', '-in', `${id}.csr`, '-CA', 'root.pem', '-CAkey', 'root.key', '-CAcreateserial', '-days', '1', '-out', `${id}.pem`, '-extfile', `${id}.ext`], dir);
    return { keyPem: readFileSync(join(dir, `${id}.key`), 'utf8'), chain: [readFileSync(join(dir, `${id}.pem`), 'utf8'), rootPem] };
  };
  return {
    rootPem,
    issue,
    credential: (uri) => ({ identity: parseIdentity(uri), ...issue(uri) }),
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
