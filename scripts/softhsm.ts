// Creates a SoftHSMv2 token and its keys, idempotently: the embedded HSM of the quick start, the
// tests and the benchmarks. Talks PKCS#11 (pkcs11js) so that no PIN ever appears on a command line.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join, resolve } from 'node:path';
import type * as pkcs11 from 'pkcs11js';
import { secretKeyTemplate } from '../layers/pkcs11/pkcs11-hsm.ts';

const P: typeof import('pkcs11js') = createRequire(import.meta.url)('pkcs11js');

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

  const lib = new P.PKCS11();
  lib.load(modulePath);
  lib.C_Initialize({ flags: P.CKF_OS_LOCKING_OK });
  try {
    const created = ensureKeys(lib, findOrInitToken(lib, options), options.pin, options.keys);
    return { conf, modulePath, created };
  } finally {
    lib.C_Finalize();
  }
}

/** The serial number of the token labelled `label`, in the SoftHSM that SOFTHSM2_CONF names. */
export function tokenSerial(label: string): string {
  const lib = new P.PKCS11();
  lib.load(findSoftHsmModule());
  lib.C_Initialize();
  try {
    for (const slot of lib.C_GetSlotList(true)) {
      const info = lib.C_GetTokenInfo(slot);
      if (info.label.replace(/[\s\0]+$/, '') === label) return info.serialNumber.replace(/[\s\0]+$/, '');
    }
  } finally {
    lib.C_Finalize();
  }
  throw new Error(`no token ${label}`);
}

function findOrInitToken(lib: pkcs11.PKCS11, options: TokenOptions): Buffer {
  for (const slot of lib.C_GetSlotList(true)) {
    const info = lib.C_GetTokenInfo(slot);
    if (info.label.replace(/[\s\0]+$/, '') === options.label && info.flags & P.CKF_TOKEN_INITIALIZED)
      return slot;
  }
  const free = lib
    .C_GetSlotList(true)
    .find((slot) => (lib.C_GetTokenInfo(slot).flags & P.CKF_TOKEN_INITIALIZED) === 0);
  if (free === undefined) throw new Error('SoftHSM has no free slot for a new token');
  // Blank-padded to 32 bytes as PKCS#11 wants: pkcs11js pads a short label with NULs instead.
  lib.C_InitToken(free, options.soPin, options.label.padEnd(32, ' '));
  // SoftHSM gives the token a new slot id at the next C_Initialize; within this one the slot stays.
  const slot = free;
  const session = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  lib.C_Login(session, P.CKU_SO, options.soPin);
  lib.C_InitPIN(session, options.pin);
  lib.C_Logout(session);
  lib.C_CloseSession(session);
  return slot;
}

/** Logged in to the token in `slot`, creates each key of `keys` that is missing; returns their labels. */
export function ensureKeys(lib: pkcs11.PKCS11, slot: Buffer, pin: string, keys: KeySpec[]): string[] {
  const session = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
  lib.C_Login(session, P.CKU_USER, pin);
  const created: string[] = [];
  for (const key of keys) {
    if (findKey(lib, session, key.label)) continue;
    createKey(lib, session, key);
    created.push(key.label);
  }
  lib.C_Logout(session);
  lib.C_CloseSession(session);
  return created;
}

function findKey(lib: pkcs11.PKCS11, session: Buffer, label: string): boolean {
  lib.C_FindObjectsInit(session, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_LABEL, value: label },
  ]);
  const found = lib.C_FindObjects(session, 1);
  lib.C_FindObjectsFinal(session);
  return found.length > 0;
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
