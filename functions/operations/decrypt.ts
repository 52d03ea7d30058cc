// Decrypt (spec: API operations, Decrypt).
import type { HsmKey } from '../../layers/pkcs11/hsm.ts';
import { toXksError, XksError } from '../errors.ts';
import type { XksRequest } from '../middleware.ts';
import type { Keystore } from '../runtime.ts';
import type { DecryptRequest } from '../schemas.ts';
import {
  awsSampleHsmAad,
  decodeAad,
  decodeBase64,
  decodeSized,
  findKey,
  hsmAad,
  keyVersionOf,
  LIMITS,
  requireEnabled,
  requireUsage,
} from '../xks.ts';

export async function decrypt({ hsm, keystore, keyId, body }: XksRequest<DecryptRequest>) {
  const ciphertext = decodeSized('ciphertext', body.ciphertext, LIMITS.data);
  const iv = decodeBase64('initializationVector', body.initializationVector);
  const tag = decodeBase64('authenticationTag', body.authenticationTag);
  const aad = decodeAad(body.additionalAuthenticatedData);
  const ciphertextMetadata =
    body.ciphertextMetadata === undefined
      ? undefined
      : decodeBase64('ciphertextMetadata', body.ciphertextMetadata);
  if (ciphertextMetadata !== undefined && ciphertextMetadata.length > LIMITS.ciphertextMetadata) {
    throw new XksError('ValidationException', 'ciphertextMetadata is longer than 20 bytes');
  }

  // The key version the metadata names (undefined: not metadata this proxy makes).
  const version = keyVersionOf(ciphertextMetadata);
  const input = { iv, ciphertext, tag };
  if (!keystore.isAwsSampleCiphertext(ciphertextMetadata)) {
    if (version === undefined) {
      throw new XksError('InvalidCiphertextException', 'ciphertextMetadata is not one this proxy produced');
    }
    const key = usable(await findKey(hsm, keystore, keyId, version), keystore);
    // A tag that does not verify (wrong AAD, metadata, IV, ciphertext or tag): InvalidCiphertextException.
    return answer(await hsm.decrypt(key, input, hsmAad(aad, ciphertextMetadata)));
  }
  // The AWS sample proxy's static metadata: its ciphertexts were made by version 1 of the key.
  const original = usable(await findKey(hsm, keystore, keyId, 1), keystore);
  const own =
    version === undefined ? undefined : version === 1 ? original : await hsm.findKey(keyId, version);
  if (own !== undefined) {
    // The sample's value also reads as ours, and that version exists: try our encoding first.
    try {
      return answer(await hsm.decrypt(usable(own, keystore), input, hsmAad(aad, ciphertextMetadata)));
    } catch (err) {
      if (toXksError(err).errorName !== 'InvalidCiphertextException') throw err;
    }
  }
  return answer(await hsm.decrypt(original, input, awsSampleHsmAad(aad, ciphertextMetadata)));
}

function usable(key: HsmKey, keystore: Keystore): HsmKey {
  requireEnabled(key, keystore);
  requireUsage(key, 'DECRYPT');
  return key;
}

function answer(plaintext: Buffer): { plaintext: string } {
  return { plaintext: plaintext.toString('base64') };
}
