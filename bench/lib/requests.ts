// The requests every suite sends: the same routes, bodies and sizes, on a fresh SoftHSM token.
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildFaultModule, FaultControl } from '../../test/helpers/fault-hsm.ts';
import { createTestSetup, metadata, PREFIX, type TestSetup } from '../../test/helpers/proxy.ts';
import type { Credential } from '../../test/helpers/sign.ts';
import { certificate } from './util.ts';

export { PREFIX };

export interface BenchSetup extends TestSetup {
  /** The key store's first credential: what every signed request here uses. */
  credential: Credential;
  tls: { key: Buffer; cert: Buffer };
}

/** A fresh token and config (createTestSetup: random PIN and credentials) and a TLS certificate. */
export function benchSetup(): BenchSetup {
  const setup = createTestSetup();
  return { ...setup, credential: setup.credentials[0] as Credential, tls: certificate(setup.dir) };
}

/**
 * benchSetup whose HSM is the fault-injecting module over the token (its rules: `control`, a folder
 * under `dir`), with `callTimeoutMs` as the HSM call deadline when given. Its processes need
 * control.env().
 */
export function faultBenchSetup(
  dir: string,
  callTimeoutMs?: number,
): { setup: BenchSetup; control: FaultControl } {
  const setup = benchSetup();
  const control = new FaultControl(join(dir, `fault-${Date.now()}`));
  setup.config.hsm.modulePath = buildFaultModule();
  if (callTimeoutMs !== undefined) setup.config.hsm.callTimeoutMs = callTimeoutMs;
  writeFileSync(setup.configFile, JSON.stringify(setup.config), { mode: 0o600 });
  return { setup, control };
}

export function removeSetup(setup: TestSetup): void {
  rmSync(setup.dir, { recursive: true, force: true });
}

/** The largest sizes the spec requires to work: 4300-byte plaintext, 8192-byte AAD. */
export const MAX_DATA = 4300;
export const MAX_AAD = 8192;

export function healthBody() {
  return {
    requestMetadata: {
      kmsRequestId: `bench-${randomBytes(4).toString('hex')}`,
      kmsOperation: 'KmsHealthCheck',
    },
  };
}

export function metadataBody() {
  return { requestMetadata: metadata('CreateKey') };
}

export function encryptBody(bytes: number, aadBytes = 0) {
  return {
    requestMetadata: metadata('Encrypt'),
    plaintext: randomBytes(bytes).toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
    ...(aadBytes > 0 ? { additionalAuthenticatedData: randomBytes(aadBytes).toString('base64') } : {}),
  };
}

export interface EncryptResponse {
  ciphertext: string;
  ciphertextMetadata: string;
  initializationVector: string;
  authenticationTag: string;
}

/** A Decrypt body for what an Encrypt (with `aad`, Base64 or undefined) returned. */
export function decryptBody(encrypted: EncryptResponse, aad: string | undefined) {
  return {
    requestMetadata: metadata('Decrypt'),
    encryptionAlgorithm: 'AES_GCM',
    ciphertext: encrypted.ciphertext,
    ciphertextMetadata: encrypted.ciphertextMetadata,
    initializationVector: encrypted.initializationVector,
    authenticationTag: encrypted.authenticationTag,
    ...(aad === undefined ? {} : { additionalAuthenticatedData: aad }),
  };
}

/** The path of a route ('health', 'keys/foo/encrypt', ...) under the test key store. */
export function xksPath(route: string): string {
  return `${PREFIX}/kms/xks/v1/${route}`;
}
