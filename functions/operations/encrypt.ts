// Encrypt (spec: API operations, Encrypt; Appendix C for the CDIV).
import { XksError } from '../errors.ts';
import type { XksRequest } from '../middleware.ts';
import type { EncryptRequest } from '../schemas.ts';
import {
  cdiv,
  ciphertextMetadataFor,
  decodeAad,
  decodeSized,
  findKey,
  hsmAad,
  LIMITS,
  requireEnabled,
  requireUsage,
} from '../xks.ts';

export async function encrypt({ hsm, keystore, keyId, body }: XksRequest<EncryptRequest>) {
  const plaintext = decodeSized('plaintext', body.plaintext, LIMITS.data);
  const aad = decodeAad(body.additionalAuthenticatedData);
  const wantsCdiv = body.ciphertextDataIntegrityValueAlgorithm !== undefined;

  const key = await findKey(hsm, keystore, keyId);
  requireEnabled(key, keystore);
  requireUsage(key, 'ENCRYPT');
  // The CDIV is only returned after a verification decrypt, which needs DECRYPT (Appendix C).
  if (wantsCdiv) requireUsage(key, 'DECRYPT');

  // ciphertextMetadata names the key version and is covered by the tag through the AAD the HSM sees.
  const ciphertextMetadata = ciphertextMetadataFor(key.version);
  const aadForHsm = hsmAad(aad, ciphertextMetadata);
  const out = await hsm.encrypt(key, plaintext, aadForHsm);

  const response: Record<string, string> = {
    ciphertext: out.ciphertext.toString('base64'),
    ciphertextMetadata: ciphertextMetadata.toString('base64'),
    initializationVector: out.iv.toString('base64'),
    authenticationTag: out.tag.toString('base64'),
  };
  if (wantsCdiv) {
    // Appendix C: hash the encrypt output first, then prove it decrypts; only then answer.
    response.ciphertextDataIntegrityValue = cdiv(aad, ciphertextMetadata, out.iv, out.ciphertext, out.tag);
    let roundTrip: Buffer | undefined;
    try {
      roundTrip = await hsm.decrypt(key, out, aadForHsm);
    } catch (err) {
      throw new XksError('InternalException', 'The verification decrypt failed', { cause: err });
    }
    if (!roundTrip.equals(plaintext)) {
      throw new XksError('InternalException', 'The verification decrypt did not return the plaintext');
    }
  }
  return response;
}
