// The small interface the XKS handlers use to reach an HSM. The handlers depend on this file only;
// `worker-hsm.ts` implements it with pkcs11js against any vendor's PKCS#11 library, each call
// answered by a worker thread within a deadline, and `fleet.ts` over several HSMs.

/** Key usages as GetKeyMetadata reports them (spec: GetKeyMetadata, keyUsage). */
export type KeyUsage = 'ENCRYPT' | 'DECRYPT' | 'WRAP' | 'UNWRAP' | 'SIGN' | 'VERIFY' | 'DERIVE';

export interface HsmKey {
  /** The PKCS#11 CKA_LABEL, which is the XKS externalKeyId. */
  readonly label: string;
  /**
   * The key version: every version of a key has the same label; version N > 1 has CKA_ID
   * `xks-v<N>`, and a key without such an id is version 1 (so keys made before any rotation are).
   */
  readonly version: number;
  /** `AES_256` for 256-bit AES keys; other sizes and types get other names. */
  readonly keySpec: string;
  readonly usage: ReadonlySet<KeyUsage>;
}

export interface AesGcmCiphertext {
  readonly iv: Buffer;
  readonly ciphertext: Buffer;
  readonly tag: Buffer;
}

export interface HsmInfo {
  /**
   * The token's serial number, for ekmFleetDetails.id; none when it tells no HSM apart (blank, or
   * all zeros as NSS softoken reports): the configured name stands for the HSM then.
   */
  readonly id?: string;
  /** Manufacturer, for ekmVendor. */
  readonly vendor: string;
  /** Model, hardware and firmware versions, library version: for ekmFleetDetails.model. */
  readonly model: string;
}

export interface Hsm {
  /** What the HSM says about itself; undefined until a first successful connection. */
  info(): HsmInfo | undefined;
  /**
   * The secret key whose label is `label`: its current (highest) version, or the given version;
   * undefined when there is none.
   */
  findKey(label: string, version?: number): Promise<HsmKey | undefined>;
  /** AES-GCM encrypt with a fresh 12-byte IV and a 16-byte tag (the IV's source: profiles.ts). */
  encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): Promise<AesGcmCiphertext>;
  /** AES-GCM decrypt; a failed authentication rejects with HsmError kind 'invalidCiphertext'. */
  decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Promise<Buffer>;
  close(): void;
}

/**
 * What went wrong, in terms the XKS layer can map to the spec's errors:
 * - invalidCiphertext: the HSM rejected a decrypt's ciphertext, IV, tag or AAD
 * - keyUsage: the key may not be used for this operation (CKR_KEY_FUNCTION_NOT_PERMITTED, ...)
 * - unavailable: no usable session even after one re-initialisation, the HSM is shut off, or its
 *   token cannot do AES-256-GCM (checked at each connection)
 * - timeout: the HSM did not answer within the call's deadline
 * - failed: anything else the HSM reported, e.g. that it refused the mechanism or its parameters
 *   (CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID)
 */
export type HsmErrorKind = 'invalidCiphertext' | 'keyUsage' | 'unavailable' | 'timeout' | 'failed';

/** ekmFleetDetails.healthStatus (spec: GetHealthStatus). */
export type HsmHealth = 'ACTIVE' | 'DEGRADED' | 'UNAVAILABLE';

export class HsmError extends Error {
  readonly kind: HsmErrorKind;
  /** The PKCS#11 return value name (CKR_...), when there was one. Never secret. */
  readonly ckr: string | undefined;

  constructor(kind: HsmErrorKind, message: string, ckr?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'HsmError';
    this.kind = kind;
    this.ckr = ckr;
  }
}
