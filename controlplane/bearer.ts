// The bearer authentication every gRPC service of the control plane shares (the CA and xDS), as
// istiod does it: `authorization: Bearer <token>` and an optional `clusterid` naming this cluster.
import type { Metadata } from '@grpc/grpc-js';
import { AuthenticationError } from './ca/types.js';

export function bearerToken(metadata: Metadata): string {
  const values = metadata.get('authorization');
  if (values.length === 0) throw new AuthenticationError('no authorization header: send "authorization: Bearer <token>"');
  const value = values[0];
  if (values.length > 1 || typeof value !== 'string') throw new AuthenticationError('one text authorization header is expected');
  const m = /^Bearer\s+(\S{1,8192})$/i.exec(value);
  if (!m) throw new AuthenticationError('the authorization header is not "Bearer <token>"');
  return m[1]!;
}

/** As istiod: an absent or empty clusterid means this cluster; any other must name it. */
export function checkClusterId(metadata: Metadata, clusterId: string): void {
  for (const value of metadata.get('clusterid')) {
    if (value !== '' && value !== clusterId) throw new AuthenticationError(`clusterid ${String(value)} is not this cluster (${clusterId})`);
  }
}
