// Decrypt (spec: API operations, Decrypt).
import { HsmError } from '../layers/pkcs11/hsm.ts';
import { XksError } from './errors.ts';
import { xksHandler } from './middleware.ts';
import type { DecryptRequest } from './schemas.ts';
import {
  awsSampleHsmAad,
  decodeBase64,
  decodeSized,
  findKey,
  hsmAad,
  keyVersionOf,
  LIMITS,
  requireEnabled,
  requireUsage,
} from './xks.ts';

export const handler = xksHandler<DecryptRequest>('Decrypt', ({ hsm, keystore, keyId, body }) => {
  const ciphertext = decodeSized('ciphertext', body.ciphertext, LIMITS.data);
  const iv = decodeBase64('initializationVector', body.initializationVector);
  const tag = decodeBase64('authenticationTag', body.authenticationTag);
  const aad =
    body.additionalAuthenticatedData === undefined
      ? undefined
      : decodeSized('additionalAuthenticatedData', body.additionalAuthenticatedData, LIMITS.aad);
  const ciphertextMetadata =
    body.ciphertextMetadata === undefined
      ? undefined
      : decodeBase64('ciphertextMetadata', body.ciphertextMetadata);
  if (ciphertextMetadata !== undefined && ciphertextMetadata.length > LIMITS.ciphertextMetadata) {
    throw new XksError('ValidationException', 'ciphertextMetadata is longer than 20 bytes');
  }

  // The key version the metadata names; a ciphertext of the AWS sample proxy was made by version 1.
  const version = keyVersionOf(ciphertextMetadata);
  const fromSample = keystore.isAwsSampleCiphertext(ciphertextMetadata);
  if (version === undefined && !fromSample) {
    throw new XksError('InvalidCiphertextException', 'ciphertextMetadata is not one this proxy produced');
  }
  const key = findKey(hsm, keystore, keyId, version ?? 1);
  requireEnabled(key, keystore);
  requireUsage(key, 'DECRYPT');

  // A tag that does not verify (wrong AAD, metadata, IV, ciphertext or tag): InvalidCiphertextException.
  const input = { iv, ciphertext, tag };
  if (version === undefined) return answer(hsm.decrypt(key, input, awsSampleHsmAad(aad, ciphertextMetadata)));
  try {
    return answer(hsm.decrypt(key, input, hsmAad(aad, ciphertextMetadata)));
  } catch (err) {
    // Metadata that reads as ours may still be the sample proxy's static value: try its way too.
    if (!fromSample || !(err instanceof HsmError) || err.kind !== 'invalidCiphertext') throw err;
    return answer(hsm.decrypt(key, input, awsSampleHsmAad(aad, ciphertextMetadata)));
  }
});

function answer(plaintext: Buffer): { plaintext: string } {
  return { plaintext: plaintext.toString('base64') };
}
