// XKS domain rules that are pure computation: Base64 fields, the AAD handed to the HSM,
// the proxy's ciphertextMetadata, the CDIV, and the health check's round trip.
import { createHash, randomBytes } from 'node:crypto';
import type { Hsm, HsmKey, KeyUsage } from '../layers/pkcs11/hsm.ts';
import { XksError } from './errors.ts';

/** Sizes this proxy supports (the spec's minimums are 4300-byte plaintext and 8192-byte AAD). */
export const LIMITS = {
  /** Plaintext and ciphertext bytes; larger: 501 UnsupportedOperationException. */
  data: 65_536,
  /** AAD bytes: the AAD encoding carries its length in 2 bytes. */
  aad: 65_535,
  /** ciphertextMetadata bytes (spec: MUST NOT exceed 20). */
  ciphertextMetadata: 20,
} as const;

/**
 * This proxy's ciphertextMetadata (at most 20 bytes, covered by the AAD: spec, Encrypt) names the
 * key version that encrypted: 0x01 alone for version 1 (the only format before key rotation), or
 * 0x02 followed by the version as a 4-byte big-endian number.
 */
export const METADATA_V1 = Buffer.from([0x01]);
const METADATA_VERSIONED = 0x02;

export function ciphertextMetadataFor(version: number): Buffer {
  if (version === 1) return METADATA_V1;
  const out = Buffer.alloc(5);
  out.writeUInt8(METADATA_VERSIONED, 0);
  out.writeUInt32BE(version, 1);
  return out;
}

/**
 * The key version a Decrypt's ciphertextMetadata names; none at all (or empty) is a ciphertext
 * made without metadata (the spec's plain encoding with length 0), of version 1. undefined: not
 * metadata this proxy makes (tampered with, or another proxy's).
 */
export function keyVersionOf(metadata: Buffer | undefined): number | undefined {
  if (metadata === undefined || metadata.length === 0 || metadata.equals(METADATA_V1)) return 1;
  if (metadata.length === 5 && metadata[0] === METADATA_VERSIONED) {
    const version = metadata.readUInt32BE(1);
    if (version > 1) return version;
  }
  return undefined;
}

/**
 * Decodes a standard Base64 (RFC 4648 section 4) field that the schema already matched against
 * the Base64 alphabet; rejects non-canonical encodings (non-zero padding bits), which would
 * otherwise let two different strings stand for the same bytes.
 */
export function decodeBase64(field: string, value: string): Buffer {
  const bytes = Buffer.from(value, 'base64');
  if (bytes.toString('base64') !== value) {
    throw new XksError('ValidationException', `${field} ${base64Problem(value)}`);
  }
  return bytes;
}

/** What is wrong with a string that is not canonical standard Base64 (never the value itself). */
function base64Problem(value: string): string {
  if (/[-_]/.test(value)) return 'is URL-safe Base64, not standard Base64 (RFC 4648 section 4)';
  if (/[^A-Za-z0-9+/=]/.test(value)) return 'has characters outside the standard Base64 alphabet';
  if (!/^[^=]*={0,2}$/.test(value)) return 'is not standard Base64: "=" only as padding at the end';
  if (value.length % 4 !== 0) {
    return 'is not standard Base64: its length is not a multiple of 4 (padding missing?)';
  }
  return 'is not canonical Base64: the bits after the last byte are not zero';
}

/** Like decodeBase64, and at most `max` bytes: 501 beyond what this proxy supports. */
export function decodeSized(field: string, value: string, max: number): Buffer {
  // 4 Base64 characters per 3 bytes: check before decoding, so a huge field costs nothing.
  if (value.length > Math.ceil(max / 3) * 4) tooLarge(field, max);
  const bytes = decodeBase64(field, value);
  if (bytes.length > max) tooLarge(field, max);
  return bytes;
}

/** additionalAuthenticatedData, when the request has one: at most LIMITS.aad bytes. */
export function decodeAad(value: string | undefined): Buffer | undefined {
  return value === undefined ? undefined : decodeSized('additionalAuthenticatedData', value, LIMITS.aad);
}

function tooLarge(field: string, max: number): never {
  throw new XksError(
    'UnsupportedOperationException',
    `${field} is larger than the ${max} bytes this proxy supports`,
  );
}

/**
 * The AAD given to the HSM (spec: Encrypt, ciphertextMetadata NOTE):
 * 2-byte big-endian len(AAD) || AAD || 1-byte len(ciphertextMetadata) || ciphertextMetadata.
 * Explicit lengths stop an AAD and a ciphertextMetadata from being swapped.
 */
export function hsmAad(aad: Buffer | undefined, ciphertextMetadata: Buffer | undefined): Buffer {
  const a = aad ?? Buffer.alloc(0);
  const m = ciphertextMetadata ?? Buffer.alloc(0);
  const out = Buffer.allocUnsafe(2 + a.length + 1 + m.length);
  out.writeUInt16BE(a.length, 0);
  a.copy(out, 2);
  out.writeUInt8(m.length, 2 + a.length);
  m.copy(out, 3 + a.length);
  return out;
}

/** CDIV (spec: Appendix C): Base64 SHA-256 over AAD || ciphertextMetadata || IV || ciphertext || tag. */
export function cdiv(
  aad: Buffer | undefined,
  ciphertextMetadata: Buffer | undefined,
  iv: Buffer,
  ciphertext: Buffer,
  tag: Buffer,
): string {
  const hash = createHash('sha256');
  if (aad !== undefined) hash.update(aad);
  if (ciphertextMetadata !== undefined) hash.update(ciphertextMetadata);
  return hash.update(iv).update(ciphertext).update(tag).digest('base64');
}

/**
 * The AAD the AWS sample proxy (aws-samples/aws-kms-xks-proxy) gives the HSM: 2-byte big-endian
 * len(AAD) || SHA-256(AAD) when there is an AAD || 1-byte len(ciphertextMetadata) ||
 * ciphertextMetadata. Used only to decrypt its ciphertexts after a switch of proxies.
 */
export function awsSampleHsmAad(aad: Buffer | undefined, ciphertextMetadata: Buffer | undefined): Buffer {
  const digest = aad === undefined ? Buffer.alloc(0) : createHash('sha256').update(aad).digest();
  const m = ciphertextMetadata ?? Buffer.alloc(0);
  const out = Buffer.allocUnsafe(2 + digest.length + 1 + m.length);
  out.writeUInt16BE(aad?.length ?? 0, 0);
  digest.copy(out, 2);
  out.writeUInt8(m.length, 2 + digest.length);
  m.copy(out, 3 + digest.length);
  return out;
}

/**
 * The external key for a request: only ids the key store lists, and only keys the HSM has
 * (404 KeyNotFoundException otherwise, without saying which of the two). Its current version,
 * or the version a Decrypt's ciphertextMetadata names.
 */
export async function findKey(
  hsm: Hsm,
  keystore: { allows(keyId: string): boolean },
  keyId: string,
  version?: number,
): Promise<HsmKey> {
  const key = keystore.allows(keyId) ? await hsm.findKey(keyId) : undefined;
  if (key === undefined) throw new XksError('KeyNotFoundException', 'The external key was not found');
  if (version === undefined || version === key.version) return key;
  const older = await hsm.findKey(keyId, version);
  // The key exists but not the version this ciphertext names: it cannot be decrypted here.
  if (older === undefined) {
    throw new XksError(
      'InvalidCiphertextException',
      'ciphertextMetadata names a key version the HSM does not have',
    );
  }
  return older;
}

/**
 * ENABLED, or DISABLED when the customer disabled the key in the key store's configuration, or
 * revoked it or its key store (spec: GetKeyMetadata, keyStatus).
 */
export function keyStatus(
  key: HsmKey,
  keystore: { disabled(keyId: string): string | undefined },
): 'ENABLED' | 'DISABLED' {
  return keystore.disabled(key.label) === undefined ? 'ENABLED' : 'DISABLED';
}

/**
 * 400 InvalidStateException for a disabled or revoked key, or a key of a revoked key store (spec:
 * Error codes: "the specified external key or key store is disabled, deactivated or blocked").
 */
export function requireEnabled(key: HsmKey, keystore: { disabled(keyId: string): string | undefined }): void {
  const reason = keystore.disabled(key.label);
  if (reason !== undefined) throw new XksError('InvalidStateException', reason);
}

/** 400 InvalidKeyUsageException unless the key is AES-256 and allows `usage` (spec: Error codes). */
export function requireUsage(key: HsmKey, usage: KeyUsage): void {
  if (key.keySpec !== 'AES_256') {
    throw new XksError('InvalidKeyUsageException', `The external key is ${key.keySpec}, not AES_256`);
  }
  if (!key.usage.has(usage)) {
    throw new XksError('InvalidKeyUsageException', `The external key does not allow ${usage}`);
  }
}

/**
 * GetHealthStatus's deep check: a real AES-GCM encrypt and decrypt with the health-check key
 * (never a customer key), which must give back the bytes it was given.
 */
export async function healthRoundTrip(hsm: Hsm, healthCheckKeyLabel: string): Promise<void> {
  const key = await hsm.findKey(healthCheckKeyLabel);
  if (key === undefined) throw new Error(`health-check key '${healthCheckKeyLabel}' not found`);
  const probe = randomBytes(32);
  const aad = hsmAad(undefined, METADATA_V1);
  const decrypted = await hsm.decrypt(key, await hsm.encrypt(key, probe, aad), aad);
  if (!decrypted.equals(probe)) throw new Error('health-check round trip returned other bytes');
}
