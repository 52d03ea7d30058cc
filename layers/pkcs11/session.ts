// The PKCS#11 steps every user of a token takes, written once: load the library, C_Initialize (with
// library parameters), find the token by label and serial number, open a session and log in, find
// a secret key by label, read what a key is (its version, key spec and usage), and name the codes
// the library answers with. The proxy's HSM (pkcs11-hsm.ts), the keys CLI, the token scripts and
// the benchmarks all go through here.
import { createRequire } from 'node:module';
import type * as pkcs11 from 'pkcs11js';
import type { KeyUsage } from './hsm.ts';

// pkcs11js is a native addon shipped in the Lambda layer (/opt/nodejs/node_modules), which only
// `require` finds (through NODE_PATH); esbuild keeps it external.
export const P: typeof import('pkcs11js') = createRequire(import.meta.url)('pkcs11js');

/** PKCS#11 pads strings with blanks; some libraries (and pkcs11js's C_InitToken) with NULs. */
const BLANKS = /[\s\0]+$/;

/** A PKCS#11 string field without its padding. */
export function unpadded(text: string): string {
  return text.replace(BLANKS, '');
}

/** The numeric return value of a pkcs11js error, or -1 for anything else. */
export function codeOf(err: unknown): number {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : -1;
}

/** The CKR_* name pkcs11js puts first in its messages, e.g. "CKR_PIN_INCORRECT:160". Never secret. */
export function ckrOf(err: unknown): string | undefined {
  return /\bCKR_[A-Z_]+/.exec(errorText(err))?.[0];
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The codes of these CKR_* names (names pkcs11js does not know are left out). */
export function codesNamed(names: readonly string[]): Set<number> {
  const codes = P as unknown as Record<string, number | undefined>;
  return new Set(names.map((name) => codes[name]).filter((code) => code !== undefined));
}

/** A PKCS#11 library, loaded (not yet initialised). Throws when the file cannot be loaded. */
export function loadLibrary(modulePath: string): pkcs11.PKCS11 {
  const lib = new P.PKCS11();
  lib.load(modulePath);
  return lib;
}

/**
 * C_Initialize's argument: CKF_OS_LOCKING_OK (without it SoftHSM turns its locking off), and the
 * library parameters when there are any.
 */
export function initializeArgs(libraryParameters?: string): pkcs11.InitializationOptions {
  const flags = P.CKF_OS_LOCKING_OK;
  if (libraryParameters === undefined) return { flags };
  // pkcs11js 2.1.7 copies the string into a buffer one byte too short, so that the library would
  // get it without its last character: a NUL added here is the character lost, and the library
  // gets the whole string (a pkcs11js that copies it whole passes the same C string).
  return { flags, libraryParameters: `${libraryParameters}\0` };
}

/** C_Initialize (initializeArgs); a library already initialised in this process is fine. */
export function initialize(lib: pkcs11.PKCS11, libraryParameters?: string): void {
  try {
    lib.C_Initialize(initializeArgs(libraryParameters));
  } catch (err) {
    if (codeOf(err) !== P.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw err;
  }
}

/** C_Finalize, when the library is initialised. */
export function finalize(lib: pkcs11.PKCS11): void {
  try {
    lib.C_Finalize();
  } catch {
    // Not initialized: nothing to release.
  }
}

/** What identifies a token: its label, its serial number, or both. */
export interface TokenWanted {
  tokenLabel?: string | undefined;
  tokenSerial?: string | undefined;
}

/**
 * The one initialised token with this label and serial number (either may be left out; trailing
 * blanks ignored), or how many there are (0, or several: say which with label and serial).
 */
export function findToken(
  lib: pkcs11.PKCS11,
  wanted: TokenWanted,
): { slot: Buffer; label: string } | { count: number; wanted: string } {
  const label = wanted.tokenLabel === undefined ? undefined : unpadded(wanted.tokenLabel);
  const serial = wanted.tokenSerial === undefined ? undefined : unpadded(wanted.tokenSerial);
  const matches: { slot: Buffer; label: string }[] = [];
  for (const slot of lib.C_GetSlotList(true)) {
    const token = lib.C_GetTokenInfo(slot);
    if ((token.flags & P.CKF_TOKEN_INITIALIZED) === 0) continue;
    if (label !== undefined && unpadded(token.label) !== label) continue;
    if (serial !== undefined && unpadded(token.serialNumber) !== serial) continue;
    matches.push({ slot, label: unpadded(token.label) });
  }
  // The first of several would be a guess: keys made in one token would be missing from the other.
  if (matches.length === 1) return matches[0] as { slot: Buffer; label: string };
  const description = [label && `labelled '${label}'`, serial && `with serial '${serial}'`]
    .filter(Boolean)
    .join(' ');
  return { count: matches.length, wanted: description };
}

/**
 * C_Login as `user` (the crypto user by default); a session of this process already logged in is
 * fine: PKCS#11 login state is per token and application.
 */
export function login(lib: pkcs11.PKCS11, session: Buffer, pin: string, user: number = P.CKU_USER): void {
  try {
    lib.C_Login(session, user, pin);
  } catch (err) {
    if (codeOf(err) !== P.CKR_USER_ALREADY_LOGGED_IN) throw err;
  }
}

/** C_OpenSession (read/write when asked), then login(); nothing left open when it fails. */
export function openSession(
  lib: pkcs11.PKCS11,
  slot: Buffer,
  options: { pin: string; readWrite?: boolean | undefined; user?: number },
): Buffer {
  const session = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION | (options.readWrite ? P.CKF_RW_SESSION : 0));
  try {
    login(lib, session, options.pin, options.user);
  } catch (err) {
    closeSession(lib, session);
    throw err;
  }
  return session;
}

export function closeSession(lib: pkcs11.PKCS11, session: Buffer): void {
  try {
    lib.C_CloseSession(session);
  } catch {
    // Already gone (with the library's state, or the error that brought us here).
  }
}

/** At most this many versions of one key are looked at (a C_FindObjects batch). */
export const MAX_VERSIONS = 64;

/** The secret keys labelled `label`: at most `max`, or all of them when `max` is 0. */
export function findSecretKeys(
  lib: pkcs11.PKCS11,
  session: Buffer,
  label: string,
  max = MAX_VERSIONS,
): Buffer[] {
  lib.C_FindObjectsInit(session, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_LABEL, value: label },
  ]);
  try {
    if (max > 0) return lib.C_FindObjects(session, max);
    const handles: Buffer[] = [];
    for (;;) {
      const batch = lib.C_FindObjects(session, MAX_VERSIONS);
      if (batch.length === 0) return handles;
      handles.push(...batch);
    }
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

/** One attribute of an object, or undefined where it has none or keeps it secret. */
export function attribute(
  lib: pkcs11.PKCS11,
  session: Buffer,
  handle: Buffer,
  type: number,
): Buffer | undefined {
  try {
    const [attr] = lib.C_GetAttributeValue(session, handle, [{ type }]);
    return bufferOf(attr?.value);
  } catch (err) {
    if (noSuchValue(err)) return undefined;
    throw err;
  }
}

/** The object has no such attribute, or keeps it secret. */
function noSuchValue(err: unknown): boolean {
  const code = codeOf(err);
  return code === P.CKR_ATTRIBUTE_TYPE_INVALID || code === P.CKR_ATTRIBUTE_SENSITIVE;
}

/** A CK_BBOOL attribute; null where the object has none. */
export function flag(lib: pkcs11.PKCS11, session: Buffer, handle: Buffer, type: number): boolean | null {
  return flagOf(attribute(lib, session, handle, type));
}

function flagOf(value: Buffer | undefined): boolean | null {
  return value === undefined || value.length === 0 ? null : value[0] !== 0;
}

/** A CK_ULONG attribute value (native byte order: little-endian on x86_64 and arm64). */
export function ulong(value: Buffer | undefined): number | undefined {
  if (value?.length === 8) return Number(value.readBigUInt64LE());
  if (value?.length === 4) return value.readUInt32LE();
  return undefined;
}

/** The attributes behind GetKeyMetadata's keyUsage. */
export const USAGE_ATTRIBUTES: ReadonlyArray<readonly [number, KeyUsage]> = [
  [P.CKA_ENCRYPT, 'ENCRYPT'],
  [P.CKA_DECRYPT, 'DECRYPT'],
  [P.CKA_WRAP, 'WRAP'],
  [P.CKA_UNWRAP, 'UNWRAP'],
  [P.CKA_SIGN, 'SIGN'],
  [P.CKA_VERIFY, 'VERIFY'],
  [P.CKA_DERIVE, 'DERIVE'],
];

const KEY_TYPE_NAMES = new Map<number, string>([
  [P.CKK_AES, 'AES'],
  [P.CKK_GENERIC_SECRET, 'GENERIC_SECRET'],
  [P.CKK_DES3, 'DES3'],
]);

/** `AES_256` for a 32-byte AES key; `<TYPE>_<bits>` for others, `CKK_0x<type>` for types without a name. */
export function keySpecOf(keyType: number | undefined, valueLen: number | undefined): string {
  const name =
    (keyType !== undefined && KEY_TYPE_NAMES.get(keyType)) || `CKK_0x${(keyType ?? 0).toString(16)}`;
  return valueLen === undefined ? name : `${name}_${valueLen * 8}`;
}

/**
 * CKA_ID of version N > 1 of the key `label`; version 1 is a key with any other id (or none). The
 * label is part of it because NSS softoken keeps one secret key per CKA_ID in a token: a second
 * key generated with the id of another overwrites it (measured: docs/hsm.md, vendor facts).
 */
export function versionId(version: number, label: string): string {
  return `xks-v${version}:${label}`;
}

/** The version a CKA_ID value stands for: `xks-v<N>`, alone or followed by `:<label>`. */
export function versionOf(id: Buffer | undefined): number {
  const match = id === undefined ? null : /^xks-v([1-9][0-9]{0,8})(?::|$)/.exec(id.toString('latin1'));
  return match ? Number(match[1]) : 1;
}

/** What a secret key is, as the proxy and the keys CLI report it: never key material. */
export interface KeyFacts {
  version: number;
  /** CKA_ID, when the key has one. */
  id: Buffer | undefined;
  keySpec: string;
  usage: KeyUsage[];
}

/** The attributes keyFacts reads. */
const FACT_ATTRIBUTES = [
  P.CKA_ID,
  P.CKA_KEY_TYPE,
  P.CKA_VALUE_LEN,
  ...USAGE_ATTRIBUTES.map(([type]) => type),
];

export function keyFacts(lib: pkcs11.PKCS11, session: Buffer, handle: Buffer): KeyFacts {
  const values = attributes(lib, session, handle, FACT_ATTRIBUTES);
  const id = values.get(P.CKA_ID);
  const usage: KeyUsage[] = [];
  for (const [type, name] of USAGE_ATTRIBUTES) if (flagOf(values.get(type))) usage.push(name);
  return {
    version: versionOf(id),
    id,
    keySpec: keySpecOf(ulong(values.get(P.CKA_KEY_TYPE)), ulong(values.get(P.CKA_VALUE_LEN))),
    usage,
  };
}

/**
 * Attributes of an object, undefined where it has none or keeps it secret, in one
 * C_GetAttributeValue: pkcs11js makes it two calls (sizes, then values), each a round trip to a
 * network HSM, where reading them one by one takes two per attribute. An object without one of
 * them, or keeping one secret, fails the whole call (PKCS#11 C_GetAttributeValue): then each is
 * read on its own.
 */
function attributes(
  lib: pkcs11.PKCS11,
  session: Buffer,
  handle: Buffer,
  types: readonly number[],
): Map<number, Buffer | undefined> {
  try {
    const template = lib.C_GetAttributeValue(
      session,
      handle,
      types.map((type) => ({ type })),
    );
    return new Map(types.map((type, i) => [type, bufferOf(template[i]?.value)]));
  } catch (err) {
    if (!noSuchValue(err)) throw err;
    return new Map(types.map((type) => [type, attribute(lib, session, handle, type)]));
  }
}

function bufferOf(value: unknown): Buffer | undefined {
  return Buffer.isBuffer(value) ? value : undefined;
}

/**
 * The template of a secret key this project creates (the key CLI, the demo and test tokens): a
 * token object, private and sensitive, never extractable, with only the usages asked for; the
 * CKA_ID of its version (none for version 1, like every key made before rotation existed).
 */
export function secretKeyTemplate(key: {
  label: string;
  keyType: number;
  encrypt: boolean;
  decrypt: boolean;
  /** SIGN and VERIFY (HMAC-style keys). */
  sign?: boolean;
  version?: number;
}): pkcs11.Template {
  const version = key.version ?? 1;
  return [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: key.keyType },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_LABEL, value: key.label },
    { type: P.CKA_ENCRYPT, value: key.encrypt },
    { type: P.CKA_DECRYPT, value: key.decrypt },
    { type: P.CKA_WRAP, value: false },
    { type: P.CKA_UNWRAP, value: false },
    { type: P.CKA_SIGN, value: key.sign ?? false },
    { type: P.CKA_VERIFY, value: key.sign ?? false },
    { type: P.CKA_DERIVE, value: false },
    ...(version === 1
      ? []
      : [{ type: P.CKA_ID, value: Buffer.from(versionId(version, key.label), 'latin1') }]),
  ];
}

/**
 * Why the token cannot do this proxy's AES-GCM (PKCS#11 C_GetMechanismInfo for CKM_AES_GCM): no
 * AES-256 keys (sizes in bytes, as PKCS#11 defines them for AES; some libraries give bits), or
 * no encrypt or decrypt. undefined when it can.
 */
export function aesGcmShortfall(info: pkcs11.MechanismInfo): string | undefined {
  const holds = (size: number) => info.minKeySize <= size && size <= info.maxKeySize;
  if (!holds(32) && !holds(256)) {
    return `its CKM_AES_GCM takes keys of ${info.minKeySize}-${info.maxKeySize}, not of 32 bytes (AES-256)`;
  }
  const missing = [
    (info.flags & P.CKF_ENCRYPT) === 0 ? 'encrypt' : undefined,
    (info.flags & P.CKF_DECRYPT) === 0 ? 'decrypt' : undefined,
  ].filter(Boolean);
  if (missing.length > 0) return `its CKM_AES_GCM does not ${missing.join(' or ')}`;
  return undefined;
}

/** "no token labelled 'x' is present", or "2 tokens labelled 'x' are present". */
export function tokenCount(found: { count: number; wanted: string }): string {
  return found.count === 0
    ? `no token ${found.wanted} is present`
    : `${found.count} tokens ${found.wanted} are present`;
}

/** A connection to a token, as the tools outside the proxy make one. */
export interface TokenConnection extends TokenWanted {
  modulePath: string;
  /** C_Initialize's library parameters (NSS softoken), when the library takes any. */
  libraryParameters?: string | undefined;
  pin: string;
}

/**
 * Where opening a session on a token stopped, and the library's answer; never holds the PIN. `step`
 * is the failed call (`load` for the library file itself, `token` when no single token matched).
 */
export class TokenError extends Error {
  readonly step: string;
  readonly ckr: string | undefined;
  /** With step `token`: how many tokens matched, and what was asked for. */
  readonly found: { count: number; wanted: string } | undefined;

  constructor(step: string, cause: unknown, found?: { count: number; wanted: string }) {
    const ckr = ckrOf(cause);
    super(found ? tokenCount(found) : `${step} failed: ${ckr ?? errorText(cause).split('\n')[0]}`, { cause });
    this.name = 'TokenError';
    this.step = step;
    this.ckr = ckr;
    this.found = found;
  }
}

/**
 * A logged-in session on one token, for tools that open it, do their work and close it: loads the
 * library, initialises it, finds the token, opens a session (read/write when asked) and logs in.
 * close() logs out and finalizes the library.
 */
export class TokenSession {
  readonly lib: pkcs11.PKCS11;
  readonly slot: Buffer;
  readonly session: Buffer;
  /** The token's label, without padding. */
  readonly label: string;

  private constructor(lib: pkcs11.PKCS11, slot: Buffer, session: Buffer, label: string) {
    this.lib = lib;
    this.slot = slot;
    this.session = session;
    this.label = label;
  }

  /** Throws TokenError, naming the step that failed. */
  static open(connection: TokenConnection, options: { readWrite?: boolean } = {}): TokenSession {
    let lib: pkcs11.PKCS11;
    try {
      lib = loadLibrary(connection.modulePath);
    } catch (error) {
      throw new TokenError('load', error);
    }
    try {
      initialize(lib, connection.libraryParameters);
    } catch (error) {
      throw new TokenError('C_Initialize', error);
    }
    try {
      const found = findToken(lib, connection);
      if (!('slot' in found)) throw new TokenError('token', undefined, found);
      const flags = P.CKF_SERIAL_SESSION | (options.readWrite ? P.CKF_RW_SESSION : 0);
      let session: Buffer;
      try {
        session = lib.C_OpenSession(found.slot, flags);
      } catch (error) {
        throw new TokenError('C_OpenSession', error);
      }
      try {
        login(lib, session, connection.pin);
      } catch (error) {
        closeSession(lib, session);
        throw new TokenError('C_Login', error);
      }
      return new TokenSession(lib, found.slot, session, found.label);
    } catch (error) {
      finalize(lib);
      throw error instanceof TokenError ? error : new TokenError('C_GetSlotList', error);
    }
  }

  /** The secret keys labelled `label`: at most `max`, or all when `max` is 0. */
  findKeys(label: string, max = MAX_VERSIONS): Buffer[] {
    return findSecretKeys(this.lib, this.session, label, max);
  }

  flag(handle: Buffer, type: number): boolean | null {
    return flag(this.lib, this.session, handle, type);
  }

  facts(handle: Buffer): KeyFacts {
    return keyFacts(this.lib, this.session, handle);
  }

  close(): void {
    try {
      this.lib.C_Logout(this.session);
    } catch {
      // Logged out already (another session of this process), or the session is gone.
    }
    finalize(this.lib);
  }
}
