// Creates a SoftHSMv2 token and its keys, idempotently: the embedded HSM of the quick start, the
// tests and the benchmarks. Talks PKCS#11 (pkcs11js) so that no PIN ever appears on a command line.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type * as pkcs11 from 'pkcs11js';
import {
  closeSession,
  finalize,
  findSecretKeys,
  findToken,
  initialize,
  loadLibrary,
  openSession,
  P,
  secretKeyTemplate,
  tokenCount,
  unpadded,
} from '../layers/pkcs11/session.ts';

export interface KeySpec {
  label: string;
  encrypt: boolean;
  decrypt: boolean;
  /** AES (default) or a generic secret (an HMAC-style key that is not AES). */
  type?: 'AES' | 'GENERIC_SECRET';
  /** Key length in bytes; 32 by default. */
  bytes?: number;
  /** Import this key value instead of generating one inside the token (tests only). */
  value?: Buffer;
}

/** The health-check key: used by GetHealthStatus only, never by a customer request. */
export const HEALTH_CHECK_KEY = 'xks-health-check';

/** The demo keys, matching the defaults of AWS's public XKS test client. */
export const DEMO_KEYS: KeySpec[] = [
  { label: 'foo', encrypt: true, decrypt: true },
  { label: 'encrypt_only_key', encrypt: true, decrypt: false },
  { label: 'decrypt_only_key', encrypt: false, decrypt: true },
  { label: 'impotent_key', encrypt: false, decrypt: false },
  { label: HEALTH_CHECK_KEY, encrypt: true, decrypt: true },
];

const MODULE_CANDIDATES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
];

export function findSoftHsmModule(): string {
  return findLibrary(MODULE_CANDIDATES, 'softhsm2');
}

/** The first of `candidates` that exists; else an error naming the Debian package to install. */
export function findLibrary(candidates: readonly string[], debianPackage: string): string {
  const found = candidates.find((path) => existsSync(path));
  if (found === undefined) {
    const name = basename(candidates[0] as string);
    throw new Error(
      `${name} not found (looked in ${candidates.join(', ')}): apt-get install ${debianPackage}`,
    );
  }
  return found;
}

export interface TokenOptions {
  /** Folder for the token files and softhsm2.conf; created when missing. */
  dir: string;
  label: string;
  pin: string;
  soPin: string;
  keys: KeySpec[];
}

export interface Token {
  /** The SOFTHSM2_CONF file the proxy's process must have in its environment. */
  conf: string;
  modulePath: string;
  /** Labels of the keys this call created (the others were there already). */
  created: string[];
}

/**
 * Makes sure the token exists and holds every key in `keys`. Sets process.env.SOFTHSM2_CONF,
 * because SoftHSM reads it when the library initialises.
 */
export function ensureSoftHsmToken(options: TokenOptions): Token {
  const dir = resolve(options.dir);
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  if (!existsSync(conf)) {
    writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  }
  process.env.SOFTHSM2_CONF = conf;
  const modulePath = findSoftHsmModule();

  const lib = loadLibrary(modulePath);
  initialize(lib);
  try {
    const created = ensureKeys(lib, findOrInitToken(lib, options), options.pin, options.keys);
    return { conf, modulePath, created };
  } finally {
    finalize(lib);
  }
}

/** The serial number of the token labelled `label`, in the SoftHSM that SOFTHSM2_CONF names. */
export function tokenSerial(label: string): string {
  const lib = loadLibrary(findSoftHsmModule());
  initialize(lib);
  try {
    const found = findToken(lib, { tokenLabel: label });
    if ('slot' in found) return unpadded(lib.C_GetTokenInfo(found.slot).serialNumber);
  } finally {
    finalize(lib);
  }
  throw new Error(`no token ${label}`);
}

function findOrInitToken(lib: pkcs11.PKCS11, options: TokenOptions): Buffer {
  const found = findToken(lib, { tokenLabel: options.label });
  if ('slot' in found) return found.slot;
  if (found.count > 0) throw new Error(`SoftHSM: ${tokenCount(found)}`);
  const free = lib
    .C_GetSlotList(true)
    .find((slot) => (lib.C_GetTokenInfo(slot).flags & P.CKF_TOKEN_INITIALIZED) === 0);
  if (free === undefined) throw new Error('SoftHSM has no free slot for a new token');
  // Blank-padded to 32 bytes as PKCS#11 wants: pkcs11js pads a short label with NULs instead.
  lib.C_InitToken(free, options.soPin, options.label.padEnd(32, ' '));
  // SoftHSM gives the token a new slot id at the next C_Initialize; within this one the slot stays.
  const slot = free;
  const session = openSession(lib, slot, { pin: options.soPin, readWrite: true, user: P.CKU_SO });
  lib.C_InitPIN(session, options.pin);
  lib.C_Logout(session);
  closeSession(lib, session);
  return slot;
}

/** Logged in to the token in `slot`, creates each key of `keys` that is missing; returns their labels. */
export function ensureKeys(lib: pkcs11.PKCS11, slot: Buffer, pin: string, keys: KeySpec[]): string[] {
  const session = openSession(lib, slot, { pin, readWrite: true });
  const created: string[] = [];
  for (const key of keys) {
    if (findSecretKeys(lib, session, key.label, 1).length > 0) continue;
    createKey(lib, session, key);
    created.push(key.label);
  }
  lib.C_Logout(session);
  closeSession(lib, session);
  return created;
}

function createKey(lib: pkcs11.PKCS11, session: Buffer, key: KeySpec): void {
  const aes = (key.type ?? 'AES') === 'AES';
  const bytes = key.bytes ?? 32;
  const template = secretKeyTemplate({
    label: key.label,
    keyType: aes ? P.CKK_AES : P.CKK_GENERIC_SECRET,
    encrypt: key.encrypt,
    decrypt: key.decrypt,
    sign: !aes,
  });
  if (key.value !== undefined) {
    lib.C_CreateObject(session, [...template, { type: P.CKA_VALUE, value: key.value }]);
    return;
  }
  const mechanism = aes ? P.CKM_AES_KEY_GEN : P.CKM_GENERIC_SECRET_KEY_GEN;
  lib.C_GenerateKey(session, { mechanism }, [...template, { type: P.CKA_VALUE_LEN, value: bytes }]);
}
