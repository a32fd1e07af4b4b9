// Addresses as the workload API carries them (4 or 16 bytes) back to text, for people and aliases.
import { isIP } from 'node:net';

/** 4 or 16 bytes as dotted or colon text; anything else stays base64 with its length, so a bad value is visible. */
export function ipText(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    return compressIpv6(groups.join(':'));
  }
  return `<${bytes.length} bytes: ${Buffer.from(bytes).toString('base64')}>`;
}

function compressIpv6(full: string): string {
  // The longest run of two or more zero groups becomes "::" (RFC 5952).
  const groups = full.split(':');
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return full;
  const text = `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
  return isIP(text) ? text : full;
}

