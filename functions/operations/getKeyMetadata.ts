// GetKeyMetadata (spec: API operations, GetKeyMetadata): what KMS CreateKey checks before it uses
// an external key: AES_256, ENCRYPT and DECRYPT, ENABLED.
import type { XksRequest } from '../middleware.ts';
import type { KeyMetadataRequest } from '../schemas.ts';
import { findKey, keyStatus } from '../xks.ts';

export async function getKeyMetadata({ hsm, keystore, keyId }: XksRequest<KeyMetadataRequest>) {
  const key = await findKey(hsm, keystore, keyId);
  return {
    keySpec: key.keySpec,
    // From CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_VERIFY and CKA_DERIVE:
    // at most 7 (< 10).
    keyUsage: [...key.usage],
    // DISABLED when the customer disabled it in the key store's configuration, or revoked it or its
    // key store (functions/revocation.ts).
    keyStatus: keyStatus(key, keystore),
  };
}
