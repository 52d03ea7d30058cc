// The floor every handler is compared with: the PKCS#11 calls a request needs and nothing else,
// with pkcs11js directly on the same SoftHSM token (no Hsm layer, no retries, no key cache logic).
import type * as pkcs11 from 'pkcs11js';
import { closeSession, findSecretKeys, P, TokenSession } from '../../layers/pkcs11/session.ts';

export interface BareHsmOptions {
  modulePath: string;
  tokenLabel: string;
  pin: string;
  keyLabel: string;
}

/** What a metadata request reads: key type, length and the seven usage flags, in one call. */
const METADATA_ATTRIBUTES = [
  P.CKA_KEY_TYPE,
  P.CKA_VALUE_LEN,
  P.CKA_ENCRYPT,
  P.CKA_DECRYPT,
  P.CKA_WRAP,
  P.CKA_UNWRAP,
  P.CKA_SIGN,
  P.CKA_VERIFY,
  P.CKA_DERIVE,
].map((type) => ({ type }));

export class BareHsm {
  readonly lib: pkcs11.PKCS11;
  readonly session: Buffer;
  readonly key: Buffer;

  /** C_Initialize (OS locking; tolerates an already initialised library), session, login, key. */
  constructor(options: BareHsmOptions) {
    const token = TokenSession.open(options);
    this.lib = token.lib;
    this.session = token.session;
    const [key] = findSecretKeys(this.lib, this.session, options.keyLabel, 1);
    if (key === undefined) throw new Error(`no key labelled ${options.keyLabel}`);
    this.key = key;
  }

  /** C_GenerateRandom (12-byte IV), C_EncryptInit (AES-GCM, 128-bit tag), C_Encrypt. */
  encrypt(plaintext: Buffer, aad: Buffer): { iv: Buffer; data: Buffer } {
    const iv = this.lib.C_GenerateRandom(this.session, Buffer.alloc(12));
    this.lib.C_EncryptInit(this.session, gcm(iv, aad), this.key);
    const data = this.lib.C_Encrypt(this.session, plaintext, Buffer.alloc(plaintext.length + 16));
    return { iv, data };
  }

  /** C_DecryptInit, C_Decrypt of ciphertext || tag. */
  decrypt(iv: Buffer, data: Buffer, aad: Buffer): Buffer {
    this.lib.C_DecryptInit(this.session, gcm(iv, aad), this.key);
    return this.lib.C_Decrypt(this.session, data, Buffer.alloc(data.length));
  }

  /** One C_GetAttributeValue of the attributes GetKeyMetadata reports. */
  attributes(): pkcs11.Attribute[] {
    return this.lib.C_GetAttributeValue(this.session, this.key, METADATA_ATTRIBUTES);
  }

  close(): void {
    // The session only: the library may be in use by another user in this process.
    closeSession(this.lib, this.session);
  }
}

function gcm(iv: Buffer, aad: Buffer): pkcs11.Mechanism {
  const parameter: pkcs11.GcmParams = {
    type: P.CK_PARAMS_AES_GCM,
    iv,
    ivBits: iv.length * 8,
    aad,
    tagBits: 128,
  };
  return { mechanism: P.CKM_AES_GCM, parameter };
}

/**
 * The AAD the proxy gives the HSM (spec, Encrypt): 2-byte big-endian length, the AAD, 1-byte length
 * of ciphertextMetadata, ciphertextMetadata (the proxy's is the single byte 0x01).
 */
export function specAad(aad: Buffer = Buffer.alloc(0), metadata: Buffer = Buffer.from([1])): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(aad.length);
  return Buffer.concat([length, aad, Buffer.from([metadata.length]), metadata]);
}
