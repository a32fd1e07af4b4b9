// The workload certificates the proxy presents, as the data path wants them: a synchronous lookup
// for the HBONE server (which picks a certificate per accepted socket), a fetch that waits for a
// missing one (outbound, once per pooled connection), and TLS contexts built once per certificate.
import tls from 'node:tls';
import { parseIdentity, type Identity } from '../../mesh/identity/spiffe.js';
import { splitPem } from '../../mesh/identity/x509.js';
import { workloadContext, type WorkloadCredential } from '../../mesh/hbone/tls.js';

/** Where certificates come from: the identity manager in the main thread, messages in a worker. */
export interface CredentialSource {
  get(id: Identity): WorkloadCredential | undefined;
  fetch(id: Identity): Promise<WorkloadCredential>;
}

export class CredentialStore {
  private readonly contexts = new Map<string, { leaf: string; context: tls.SecureContext }>();
  private readonly extraRoots: readonly string[];

  constructor(
    private readonly source: CredentialSource,
    /** Roots trusted besides those the CA returns with each chain (e.g. the --ca-root file). */
    roots: readonly string[] = [],
  ) {
    this.extraRoots = roots.flatMap(splitPem);
  }

  get(id: Identity): WorkloadCredential | undefined {
    return this.source.get(id);
  }

  /** The trusted roots: the configured ones and the root at the end of every held chain. */
  roots(cred?: WorkloadCredential): string[] {
    const out = new Set(this.extraRoots);
    const last = cred?.chain.at(-1);
    if (last && cred && cred.chain.length > 1) for (const r of splitPem(last)) out.add(r);
    return [...out];
  }

  /** The client TLS context of an identity (SPIFFE URI), fetching its certificate if needed. */
  async context(uri: string): Promise<tls.SecureContext> {
    const id = parseIdentity(uri);
    const cred = this.source.get(id) ?? (await this.source.fetch(id));
    const leaf = cred.chain[0] ?? '';
    const cached = this.contexts.get(uri);
    if (cached?.leaf === leaf) return cached.context;
    const context = workloadContext(cred, this.roots(cred));
    this.contexts.set(uri, { leaf, context });
    return context;
  }
}
