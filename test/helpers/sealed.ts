// An Encrypt of fresh random data (32-byte plaintext, 24-byte AAD) through a running proxy and the
// Decrypt of its answer, each timed as the client saw it: what the HSM fault and fleet tests send
// while an HSM fails, keeping what a later Decrypt needs and what must never reach a log.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { metadata, type Response, type RunningProxy } from './proxy.ts';

export interface Sealed {
  plaintext: Buffer;
  aad: Buffer;
  /** The Encrypt response's fields. */
  fields: Record<string, string>;
}

export interface Answer {
  res: Response;
  /** As the client saw it. */
  ms: number;
  kmsRequestId: string;
}

const b64 = (bytes: Buffer) => bytes.toString('base64');

/** Encrypts fresh data with key foo; its plaintext and AAD go to `sensitive` (for the log scan). */
export async function encryptFresh(
  proxy: RunningProxy,
  sensitive: Buffer[],
): Promise<Answer & { sealed?: Sealed }> {
  const plaintext = randomBytes(32);
  const aad = randomBytes(24);
  sensitive.push(plaintext, aad);
  const requestMetadata = metadata('Encrypt');
  const started = performance.now();
  const res = await proxy.xks('keys/foo/encrypt', {
    requestMetadata,
    plaintext: b64(plaintext),
    additionalAuthenticatedData: b64(aad),
    encryptionAlgorithm: 'AES_GCM',
  });
  const answer = { res, ms: performance.now() - started, kmsRequestId: requestMetadata.kmsRequestId };
  if (res.status !== 200) return answer;
  return { ...answer, sealed: { plaintext, aad, fields: res.json as Record<string, string> } };
}

/** Decrypts what encryptFresh sealed, with `fields` of the request replaced. */
export async function decryptSealed(
  proxy: RunningProxy,
  s: Sealed,
  fields: Partial<Record<string, string>> = {},
): Promise<Answer> {
  const requestMetadata = metadata('Decrypt');
  const started = performance.now();
  const res = await proxy.xks('keys/foo/decrypt', {
    requestMetadata,
    ciphertext: s.fields.ciphertext,
    ciphertextMetadata: s.fields.ciphertextMetadata,
    initializationVector: s.fields.initializationVector,
    authenticationTag: s.fields.authenticationTag,
    additionalAuthenticatedData: b64(s.aad),
    encryptionAlgorithm: 'AES_GCM',
    ...fields,
  });
  return { res, ms: performance.now() - started, kmsRequestId: requestMetadata.kmsRequestId };
}
