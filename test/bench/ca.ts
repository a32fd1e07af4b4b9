// `npm run bench -- ca`: how fast the CA signs, and how long a node's agent takes to hold
// certificates for 100 new identities.
//
// 1. Issuance through the real gRPC service (TLS, node credential, impersonation), P-256 and
//    RSA 2048 CSRs made by openssl, 16 calls in flight, for ROUND_SECONDS, medians over ROUNDS.
// 2. The signing step alone, for the library decision (docs/decisions/0005): @peculiar/x509 with
//    the mesh's P-256 root for both CSR kinds, against node-forge (RSA only: it cannot read a P-256
//    CSR) with an RSA 2048 root.
// 3. The agent: an IdentityManager given 100 new identities of pods on its node, time until every
//    certificate is held (key generation, CSR, CA round trip), medians over ROUNDS.
import forge from 'node-forge';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { CertificateAuthority } from '../../controlplane/ca/authority.js';
import { CaClient } from '../../mesh/identity/ca-client.js';
import { IdentityManager } from '../../agent/identity/manager.js';
import type { Identity } from '../../mesh/identity/spiffe.js';
import { callCa, dynamicCaClient, opensslCsr, pod, startTestCa, structOf } from '../support/ca.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const ROUND_SECONDS = Number(process.env.ROUND_SECONDS ?? 4);
const IN_FLIGHT = 16;
const IDENTITIES = 100;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function rate(seconds: number, inFlight: number, one: () => Promise<void>): Promise<number> {
  const end = Date.now() + seconds * 1000;
  let n = 0;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (Date.now() < end) {
        await one();
        n++;
      }
    }),
  );
  return n / ((Date.now() - started) / 1000);
}

function forgeIssuer(): (csrPem: string) => void {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const ca = forge.pki.createCertificate();
  ca.publicKey = keys.publicKey;
  ca.serialNumber = '01';
  ca.validity.notBefore = new Date();
  ca.validity.notAfter = new Date(Date.now() + 365 * 86400_000);
  ca.setSubject([{ name: 'organizationName', value: 'cluster.local' }]);
  ca.setIssuer(ca.subject.attributes);
  ca.sign(keys.privateKey, forge.md.sha256.create());
  return (csrPem) => {
    const req = forge.pki.certificationRequestFromPem(csrPem);
    if (!req.verify()) throw new Error('CSR does not verify');
    const cert = forge.pki.createCertificate();
    cert.publicKey = req.publicKey as forge.pki.rsa.PublicKey;
    cert.serialNumber = Date.now().toString(16);
    cert.validity.notBefore = new Date(Date.now() - 120_000);
    cert.validity.notAfter = new Date(Date.now() + 86400_000);
    cert.setIssuer(ca.subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: 'spiffe://cluster.local/ns/shop/sa/web' }] },
    ]);
    cert.sign(keys.privateKey, forge.md.sha256.create());
    forge.pki.certificateToPem(cert);
  };
}

export async function main(): Promise<void> {
  const identities: Identity[] = Array.from({ length: IDENTITIES }, (_, i) => ({ trustDomain: 'cluster.local', namespace: 'bench', serviceAccount: `sa-${i}` }));
  const pods = [pod('shop', 'web-1', 'node-1', 'web'), ...identities.map((id, i) => pod('bench', `p-${i}`, 'node-1', id.serviceAccount))];
  const ca = await startTestCa({ nodes: ['node-1'], pods: () => pods });
  const client = dynamicCaClient(ca.address, ca.root);
  try {
    const csrs = { p256: Array.from({ length: 8 }, () => opensslCsr('ec').csr), rsa: Array.from({ length: 8 }, () => opensslCsr('rsa').csr) };
    const meta = structOf({ ImpersonatedIdentity: 'spiffe://cluster.local/ns/shop/sa/web' });
    const grpcRate = (kind: 'p256' | 'rsa') => {
      let i = 0;
      return rate(ROUND_SECONDS, IN_FLIGHT, async () => {
        const r = await callCa(client, { csr: csrs[kind][i++ % csrs[kind].length]!, metadata: meta }, ca.tokens['node-1']);
        if (r.code !== status.OK) throw new Error(`CA refused: ${r.details}`);
      });
    };
    const x509Authority = await CertificateAuthority.load(await CertificateAuthority.generateRoot('cluster.local'));
    const signOnly = (kind: 'p256' | 'rsa') => {
      let i = 0;
      return rate(ROUND_SECONDS, 1, async () => {
        const key = await CertificateAuthority.parseCsr(csrs[kind][i++ % csrs[kind].length]!);
        await x509Authority.issue(key, { uris: ['spiffe://cluster.local/ns/shop/sa/web'] }, 3600);
      });
    };
    const forgeSign = forgeIssuer();
    const forgeRate = () => {
      let i = 0;
      return rate(ROUND_SECONDS, 1, async () => forgeSign(csrs.rsa[i++ % csrs.rsa.length]!));
    };

    const results: Record<string, number[]> = {};
    const record = (k: string, v: number) => (results[k] ??= []).push(v);
    const heldIn: number[] = [];
    console.log(`ca benchmark: ${ROUNDS} rounds of ${ROUND_SECONDS} s; ${IN_FLIGHT} gRPC calls in flight; ${IDENTITIES} identities for the agent`);
    for (let round = 1; round <= ROUNDS; round++) {
      record('grpc P-256 CSR', await grpcRate('p256'));
      record('grpc RSA 2048 CSR', await grpcRate('rsa'));
      record('sign only, @peculiar/x509, P-256 CSR', await signOnly('p256'));
      record('sign only, @peculiar/x509, RSA 2048 CSR', await signOnly('rsa'));
      record('sign only, node-forge (RSA root), RSA 2048 CSR', await forgeRate());

      const caClient = new CaClient({ address: ca.address, rootCert: ca.root, token: () => ca.tokens['node-1']! });
      const manager = new IdentityManager({ ca: caClient, log: pino({ level: 'silent' }) });
      const started = Date.now();
      manager.setNodeIdentities(identities);
      await Promise.all(identities.map((id) => manager.fetch(id)));
      heldIn.push(Date.now() - started);
      manager.close();
      caClient.close();
      console.log(`  round ${round}: ${Object.entries(results).map(([k, v]) => `${k} ${v.at(-1)!.toFixed(0)}/s`).join(' | ')} | agent holds ${IDENTITIES} in ${heldIn.at(-1)} ms`);
    }
    console.log('');
    for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(48)} ${median(v).toFixed(0).padStart(6)} certificates/s`);
    console.log(`${`agent: certificates held for ${IDENTITIES} new identities`.padEnd(48)} ${median(heldIn).toFixed(0).padStart(6)} ms`);
    console.log('(medians over the rounds; gRPC figures include TLS, authentication, authorization and the CSR check)');
  } finally {
    client.close();
    await ca.close();
  }
}
