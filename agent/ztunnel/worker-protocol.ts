// Messages between the ztunnel's main thread and its proxy workers (structured-clone plain data).
import type { Identity } from '../../mesh/identity/spiffe.js';
import type { WorkloadCredential } from '../../mesh/hbone/tls.js';
import type { StateUpdate } from './state.js';
import type { ProxyPorts } from './proxy/proxy.js';

export interface WorkerInit {
  index: number;
  node: string;
  trustDomain: string;
  roots: string[];
  ports: Partial<ProxyPorts>;
}

export type MainMessage =
  | { type: 'apply'; updates: StateUpdate[] }
  | { type: 'credential'; cred: WorkloadCredential }
  | { type: 'fetched'; id: number; cred?: WorkloadCredential; error?: string }
  | { type: 'ask'; id: number; what: 'connections' | 'metrics' }
  | { type: 'close' };

export type WorkerMessage =
  | { type: 'listening' }
  | { type: 'answer'; id: number; value: unknown }
  | { type: 'fetch'; id: number; identity: Identity }
  | { type: 'get'; identity: Identity };
