import { networkInterfaces } from 'node:os';

/** This network namespace's non-loopback IPv4 addresses. */
export function ownAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((a) => a ?? [])
    .filter((a) => a.family === 'IPv4' && !a.internal)
    .map((a) => a.address);
}
