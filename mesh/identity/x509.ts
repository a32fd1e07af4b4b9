// The one place that sets @peculiar/x509 up: it needs the reflect-metadata polyfill (its DI
// container does) and a WebCrypto provider (Node's). Import x509 from here, never directly.
import 'reflect-metadata';
import { webcrypto, createPrivateKey, randomBytes } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { x509 };
export const subtle = webcrypto.subtle;

export type SigningAlgorithm = EcdsaParams & { name: 'ECDSA'; namedCurve: string } | (RsaHashedImportParams & { name: 'RSASSA-PKCS1-v1_5' });

/** The WebCrypto algorithm for a PEM private key (EC P-256/P-384, or RSA), and the key imported with it. */
export async function importSigningKey(pem: string): Promise<{ key: CryptoKey; algorithm: SigningAlgorithm }> {
  const keyObject = createPrivateKey(pem);
  const der = keyObject.export({ format: 'der', type: 'pkcs8' });
  const details = keyObject.asymmetricKeyDetails ?? {};
  let algorithm: SigningAlgorithm;
  if (keyObject.asymmetricKeyType === 'ec') {
    const curve = details.namedCurve === 'prime256v1' ? 'P-256' : details.namedCurve === 'secp384r1' ? 'P-384' : null;
    if (!curve) throw new TypeError(`EC keys on curve ${details.namedCurve} are not supported (P-256 and P-384 are)`);
    algorithm = { name: 'ECDSA', namedCurve: curve, hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
  } else if (keyObject.asymmetricKeyType === 'rsa') {
    algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  } else {
    throw new TypeError(`${keyObject.asymmetricKeyType ?? 'unknown'} keys are not supported (EC and RSA are)`);
  }
  const key = await subtle.importKey('pkcs8', der, algorithm, false, ['sign']);
  return { key, algorithm };
}

/** A positive 128-bit serial number in hex, as RFC 5280 allows (at most 20 octets). */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** Splits a PEM bundle into one PEM per certificate, each ending with a newline. */
export function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)?.map((p) => `${p}\n`) ?? [];
}
