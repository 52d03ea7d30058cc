// Decrypt (spec: API operations, Decrypt).
import { XksError } from './errors.ts';
import { xksHandler } from './middleware.ts';
import type { DecryptRequest } from './schemas.ts';
import {
  checkCiphertextMetadata,
  decodeBase64,
  decodeSized,
  findKey,
  hsmAad,
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

  const key = findKey(hsm, keystore, keyId);
  requireEnabled(key, keystore);
  requireUsage(key, 'DECRYPT');
  checkCiphertextMetadata(ciphertextMetadata);

  // A tag that does not verify (wrong AAD, metadata, IV, ciphertext or tag): InvalidCiphertextException.
  const plaintext = hsm.decrypt(key, { iv, ciphertext, tag }, hsmAad(aad, ciphertextMetadata));
  return { plaintext: plaintext.toString('base64') };
});
