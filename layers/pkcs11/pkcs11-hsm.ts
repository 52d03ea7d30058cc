// The Hsm interface on pkcs11js (synchronous API: in Lambda there is one request per environment,
// and pkcs11js's sync calls cost less CPU than its async ones on libuv's thread pool). It runs
// inside an HSM worker thread (hsm-worker.ts), so that a call that hangs can be abandoned.
import { createRequire } from 'node:module';
import type * as pkcs11 from 'pkcs11js';
import {
  type AesGcmCiphertext,
  type Hsm,
  HsmError,
  type HsmInfo,
  type HsmKey,
  type KeyUsage,
} from './hsm.ts';
import { VENDOR_PROFILES, type VendorProfile } from './profiles.ts';

// pkcs11js is a native addon shipped in the Lambda layer (/opt/nodejs/node_modules), which only
// `require` finds (through NODE_PATH); esbuild keeps it external.
type Pkcs11js = typeof import('pkcs11js');
const pkcs11js: Pkcs11js = createRequire(import.meta.url)('pkcs11js');
const P = pkcs11js;

export interface Pkcs11Config {
  /** Absolute path of the vendor's PKCS#11 library. */
  modulePath: string;
  /**
   * C_Initialize's library parameters, for the libraries that take them (NSS softoken: its database
   * folder and token label); none when absent.
   */
  libraryParameters?: string;
  /** CKA_LABEL of the token (trailing blanks ignored). */
  tokenLabel?: string;
  /** Serial number of the token: with several tokens of one label, or instead of the label. */
  tokenSerial?: string;
  /** The crypto user's PIN. Never logged. */
  pin: string;
  /** How long a key's handle and attributes are reused before the HSM is asked again. */
  keyCacheTtlMs?: number;
  /** How this vendor does AES-GCM; SoftHSM's way when absent. */
  profile?: VendorProfile;
  /**
   * Whether C_Finalize may be called now: not while another user of the same library in this
   * process (another HSM of the fleet, or a worker stuck in a call) has sessions, because
   * C_Finalize ends every session of the process and can crash a library in use (SoftHSM does).
   * Without it, a re-initialisation only replaces this session. Always, when absent.
   */
  canFinalize?: () => boolean;
  /**
   * Runs library-wide steps (C_Initialize, C_Finalize, the slot search) one worker at a time:
   * SoftHSM answers concurrent initialisations with CKR_SLOT_ID_INVALID now and then.
   */
  exclusive?: <T>(step: () => T) => T;
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

/** At most this many versions of one key are looked at (a C_FindObjects batch). */
export const MAX_VERSIONS = 64;

/**
 * Codes after which the session (or the whole library state) is not trusted any more. With them
 * CKR_ARGUMENTS_BAD: the proxy's arguments are well formed, and NSS softoken answers C_GenerateRandom
 * with it once its library was finalized, without looking at the session (measured).
 */
const SESSION_ERRORS = new Set([
  P.CKR_ARGUMENTS_BAD,
  P.CKR_SESSION_HANDLE_INVALID,
  P.CKR_SESSION_CLOSED,
  P.CKR_DEVICE_ERROR,
  P.CKR_DEVICE_REMOVED,
  P.CKR_DEVICE_MEMORY,
  P.CKR_TOKEN_NOT_PRESENT,
  P.CKR_TOKEN_NOT_RECOGNIZED,
  P.CKR_OPERATION_ACTIVE,
  P.CKR_USER_NOT_LOGGED_IN,
  P.CKR_CRYPTOKI_NOT_INITIALIZED,
]);
/** A PIN the token refused is never tried again: repeated attempts can lock the HSM user. */
const PIN_ERRORS = new Set([
  P.CKR_PIN_INCORRECT,
  P.CKR_PIN_LOCKED,
  P.CKR_PIN_EXPIRED,
  P.CKR_PIN_INVALID,
  P.CKR_PIN_LEN_RANGE,
]);
/** After a failed connection, the next attempt waits this long (requests fail fast meanwhile). */
const RECONNECT_INTERVAL_MS = 1000;
const STALE_HANDLE_ERRORS = new Set([P.CKR_OBJECT_HANDLE_INVALID, P.CKR_KEY_HANDLE_INVALID]);
/**
 * The key may not do this: its usage forbids it (CKR_KEY_FUNCTION_NOT_PERMITTED; NSS says
 * CKR_KEY_TYPE_INCONSISTENT for a key without CKA_ENCRYPT or CKA_DECRYPT), or it is no AES key.
 * Not CKR_MECHANISM_INVALID or CKR_MECHANISM_PARAM_INVALID: those say the HSM cannot do this
 * AES-GCM at all, whatever the key (an HSM failure, 500), and telling KMS the key is wrong would
 * send its user looking in the wrong place.
 */
const KEY_USAGE_ERRORS = new Set([P.CKR_KEY_FUNCTION_NOT_PERMITTED, P.CKR_KEY_TYPE_INCONSISTENT]);

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

/** PKCS#11 pads strings with blanks; some libraries (and pkcs11js's C_InitToken) with NULs. */
const BLANKS = /[\s\0]+$/;
const IV_BYTES = 12;
const TAG_BYTES = 16;

interface CachedKey {
  key: HsmKey;
  handle: Buffer;
}

/** Every version of a key, as found at one time. */
interface CachedVersions {
  versions: Map<number, CachedKey>;
  current: CachedKey;
  expires: number;
}

export class Pkcs11Hsm implements Hsm {
  readonly #config: Pkcs11Config;
  readonly #lib: pkcs11.PKCS11;
  readonly #keys = new Map<string, CachedVersions>();
  readonly #keyTtlMs: number;
  readonly #profile: VendorProfile;
  /** The numeric codes that mean a decrypt's input did not authenticate, for this vendor. */
  readonly #badCiphertext: ReadonlySet<number>;
  #session: Buffer | undefined;
  #info: HsmInfo | undefined;
  /** Why the last connection failed, and when the next attempt may be made. */
  #lastFailure: { error: HsmError; retryAt: number } | undefined;
  #pinRefused: HsmError | undefined;
  /** What happened that the operator should know (re-initialisations), for the next answer to carry. */
  #events: string[] = [];

  /** Loads the library and connects (Lambda init phase). A failed connection is retried per call. */
  constructor(config: Pkcs11Config) {
    this.#config = config;
    this.#keyTtlMs = config.keyCacheTtlMs ?? 60_000;
    this.#profile = config.profile ?? VENDOR_PROFILES.softhsm;
    const codes = P as unknown as Record<string, number | undefined>;
    this.#badCiphertext = new Set(
      this.#profile.invalidCiphertext.map((name) => codes[name]).filter((c) => c !== undefined),
    );
    this.#lib = new P.PKCS11();
    this.#lib.load(config.modulePath);
    try {
      this.#connect();
    } catch {
      // Not fatal: the first request (and the health check) try again and report it.
    }
  }

  info(): HsmInfo | undefined {
    return this.#info;
  }

  /** Why the last connection attempt failed; undefined while connected. */
  connectionError(): HsmError | undefined {
    return this.#pinRefused ?? this.#lastFailure?.error;
  }

  findKey(label: string, version?: number): HsmKey | undefined {
    return this.#run(() => this.#lookup(label, version)?.key);
  }

  encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): AesGcmCiphertext {
    return this.#run((session) => {
      const handle = this.#handle(key);
      const mode = this.#profile.iv;
      // hsm-fills: pkcs11js hands the HSM this very buffer as pIv, and the HSM writes the IV into it.
      const iv =
        mode === 'proxy'
          ? this.#lib.C_GenerateRandom(session, Buffer.alloc(IV_BYTES))
          : Buffer.alloc(IV_BYTES);
      this.#lib.C_EncryptInit(session, this.#gcm(iv, aad), handle);
      const extra = mode === 'hsm-appends' ? IV_BYTES : 0;
      const size = plaintext.length + TAG_BYTES + extra;
      const out = this.#lib.C_Encrypt(session, plaintext, Buffer.alloc(size));
      if (out.length !== size) {
        throw new HsmError(
          'failed',
          `HSM returned ${out.length} bytes for a ${plaintext.length}-byte GCM encrypt`,
        );
      }
      const finalIv = mode === 'hsm-appends' ? Buffer.from(out.subarray(size - IV_BYTES)) : iv;
      // An IV the HSM was to generate but left all zeros would repeat: never answer with it.
      if (mode !== 'proxy' && finalIv.every((byte) => byte === 0)) {
        throw new HsmError('failed', `The HSM did not generate an IV (profile ${this.#profile.name})`);
      }
      return {
        iv: finalIv,
        ciphertext: out.subarray(0, plaintext.length),
        tag: out.subarray(plaintext.length, plaintext.length + TAG_BYTES),
      };
    });
  }

  decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Buffer {
    const data = Buffer.concat([input.ciphertext, input.tag]);
    return this.#run((session) => {
      const handle = this.#handle(key);
      this.#lib.C_DecryptInit(session, this.#gcm(input.iv, aad, input.tag.length * 8), handle);
      let out: Buffer;
      try {
        // The output buffer must hold ciphertext + tag: SoftHSM answers CKR_BUFFER_TOO_SMALL otherwise
        // and leaves the operation active, so every later call on the session fails.
        out = this.#lib.C_Decrypt(session, data, Buffer.alloc(data.length));
      } catch (err) {
        if (this.#badCiphertext.has(codeOf(err))) {
          throw new HsmError(
            'invalidCiphertext',
            'The HSM could not authenticate the ciphertext',
            ckrOf(err),
          );
        }
        throw err;
      }
      if (out.length !== input.ciphertext.length) {
        throw new HsmError('failed', 'HSM returned a plaintext of the wrong length');
      }
      return out;
    });
  }

  close(): void {
    this.#disconnect();
  }

  /** The events since the last call, and forgets them. */
  takeEvents(): string[] {
    const events = this.#events;
    this.#events = [];
    return events;
  }

  /** Runs `op` on a live session; after a session or device error, re-initialises once and retries. */
  #run<T>(op: (session: Buffer) => T): T {
    for (let attempt = 0; ; attempt++) {
      if (this.#session === undefined) this.#connect(); // throws HsmError 'unavailable'
      try {
        return op(this.#session as Buffer);
      } catch (err) {
        if (err instanceof HsmError) throw err;
        const code = codeOf(err);
        const ckr = ckrOf(err);
        if (attempt === 0 && STALE_HANDLE_ERRORS.has(code)) {
          this.#keys.clear();
          continue;
        }
        if (SESSION_ERRORS.has(code)) {
          // The session, or the library's whole state, is gone: re-initialise once and retry.
          this.#disconnect();
          this.#events.push(`re-initialised after ${ckr ?? code}`);
          if (attempt === 0) continue;
          throw new HsmError('unavailable', `HSM unavailable (${ckr})`, ckr, { cause: err });
        }
        if (KEY_USAGE_ERRORS.has(code)) {
          throw new HsmError(
            'keyUsage',
            `The HSM does not permit this operation with this key (${ckr})`,
            ckr,
          );
        }
        throw new HsmError('failed', `HSM operation failed (${ckr ?? errorText(err)})`, ckr, { cause: err });
      }
    }
  }

  /** Initialises, finds the token, opens a session and logs in; all or nothing. */
  #connect(): void {
    if (this.#pinRefused) throw this.#pinRefused;
    if (this.#lastFailure && Date.now() < this.#lastFailure.retryAt) throw this.#lastFailure.error;
    try {
      this.#open();
      this.#lastFailure = undefined;
    } catch (err) {
      // Finalized, so that the next attempt starts over (SoftHSM rescans its tokens then).
      this.#disconnect();
      const ckr = ckrOf(err);
      const error =
        err instanceof HsmError
          ? err
          : new HsmError('unavailable', `HSM unavailable (${ckr ?? errorText(err)})`, ckr, { cause: err });
      if (PIN_ERRORS.has(codeOf(err))) {
        this.#pinRefused = new HsmError(
          'unavailable',
          `HSM refused the PIN (${ckr}); not trying it again`,
          ckr,
        );
        throw this.#pinRefused;
      }
      this.#lastFailure = { error, retryAt: Date.now() + RECONNECT_INTERVAL_MS };
      throw error;
    }
  }

  #open(): void {
    const lib = this.#lib;
    const exclusive = this.#config.exclusive ?? ((step) => step());
    const slot = exclusive(() => {
      initialize(lib, this.#config.libraryParameters);
      return this.#findSlot();
    });
    this.#checkMechanism(slot);
    const session = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION);
    try {
      lib.C_Login(session, P.CKU_USER, this.#config.pin);
    } catch (err) {
      if (codeOf(err) !== P.CKR_USER_ALREADY_LOGGED_IN) throw err;
    }
    const token = lib.C_GetTokenInfo(slot);
    const module = lib.C_GetInfo();
    const v = (x: pkcs11.Version) => `${x.major}.${x.minor}`;
    const serial = token.serialNumber.replace(BLANKS, '');
    this.#info = {
      // NSS softoken gives every token the serial 0000000000000000, which tells no HSM apart.
      ...(/^0*$/.test(serial) ? {} : { id: serial }),
      vendor: token.manufacturerID.replace(BLANKS, ''),
      model:
        `${token.model.replace(BLANKS, '')} (hardware ${v(token.hardwareVersion)}, firmware ${v(token.firmwareVersion)}, ` +
        `${module.libraryDescription.replace(BLANKS, '')} ${v(module.libraryVersion)})`,
    };
    this.#session = session;
  }

  #disconnect(): void {
    const session = this.#session;
    this.#session = undefined;
    this.#keys.clear();
    if (this.#config.canFinalize?.() ?? true) {
      const exclusive = this.#config.exclusive ?? ((step) => step());
      exclusive(() => {
        try {
          this.#lib.C_Finalize();
        } catch {
          // Already finalized or never initialized: nothing to release.
        }
      });
      return;
    }
    // Others use the library: give back this session only (C_Initialize is then a no-op).
    if (session !== undefined) {
      try {
        this.#lib.C_CloseSession(session);
      } catch {
        // Already gone with the error that brought us here.
      }
    }
  }

  #findSlot(): Buffer {
    const found = findToken(this.#lib, this.#config);
    if ('slot' in found) return found.slot;
    if (found.count === 0) {
      throw new HsmError(
        'unavailable',
        `HSM unavailable: no token ${found.wanted} is present`,
        'CKR_TOKEN_NOT_PRESENT',
      );
    }
    throw new HsmError(
      'unavailable',
      `HSM unavailable: ${found.count} tokens ${found.wanted} are present: name one by tokenLabel and tokenSerial`,
    );
  }

  /** The token's AES-GCM must do what the proxy asks of it, or the HSM is unavailable (not a key's fault). */
  #checkMechanism(slot: Buffer): void {
    let shortfall: string | undefined;
    let ckr: string | undefined;
    try {
      shortfall = aesGcmShortfall(this.#lib.C_GetMechanismInfo(slot, P.CKM_AES_GCM));
    } catch (err) {
      if (codeOf(err) !== P.CKR_MECHANISM_INVALID) throw err;
      shortfall = 'it has no CKM_AES_GCM';
      ckr = 'CKR_MECHANISM_INVALID';
    }
    if (shortfall !== undefined) {
      throw new HsmError(
        'unavailable',
        `HSM unavailable: the token cannot do AES-256-GCM: ${shortfall}`,
        ckr,
      );
    }
  }

  #handle(key: HsmKey): Buffer {
    const cached = this.#lookup(key.label, key.version);
    if (cached === undefined) throw new HsmError('failed', 'The key is no longer in the HSM');
    return cached.handle;
  }

  #lookup(label: string, version: number | undefined): CachedKey | undefined {
    const now = Date.now();
    let cached = this.#keys.get(label);
    // A version newer than the newest known may have been created since (a rotation): look
    // again. (Only KMS, authenticated, can name versions; an older one missing stays missing.)
    const unknownVersion =
      cached !== undefined && version !== undefined && version > cached.current.key.version;
    if (cached === undefined || cached.expires <= now || unknownVersion) {
      this.#keys.delete(label);
      cached = this.#findVersions(label, now);
      if (cached === undefined) return undefined;
      if (this.#keyTtlMs > 0) this.#keys.set(label, cached);
    }
    return version === undefined ? cached.current : cached.versions.get(version);
  }

  #findVersions(label: string, now: number): CachedVersions | undefined {
    const session = this.#session as Buffer;
    const lib = this.#lib;
    lib.C_FindObjectsInit(session, [
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_LABEL, value: label },
    ]);
    let handles: Buffer[];
    try {
      handles = lib.C_FindObjects(session, MAX_VERSIONS);
    } finally {
      lib.C_FindObjectsFinal(session);
    }
    if (handles.length === 0) return undefined;
    const versions = new Map<number, CachedKey>();
    let current: CachedKey | undefined;
    for (const handle of handles) {
      const version = versionOf(this.#attribute(session, handle, P.CKA_ID));
      if (versions.has(version)) {
        throw new HsmError(
          'failed',
          `Two secret keys are version ${version} of this label; the key is ambiguous`,
        );
      }
      const entry = { key: this.#describe(session, label, version, handle), handle };
      versions.set(version, entry);
      if (current === undefined || version > current.key.version) current = entry;
    }
    return { versions, current: current as CachedKey, expires: now + this.#keyTtlMs };
  }

  #gcm(iv: Buffer, aad: Buffer, tagBits = TAG_BYTES * 8): pkcs11.Mechanism {
    // CK_PARAMS_GCM sets every field of CK_GCM_PARAMS (CK_PARAMS_AES_GCM leaves ulIvBits unset).
    const ivBits = this.#profile.ivBits ? iv.length * 8 : 0;
    const parameter: pkcs11.GcmParams = { type: P.CK_PARAMS_GCM, iv, ivBits, aad, tagBits };
    return { mechanism: P.CKM_AES_GCM, parameter };
  }

  #describe(session: Buffer, label: string, version: number, handle: Buffer): HsmKey {
    const keyType = this.#attribute(session, handle, P.CKA_KEY_TYPE);
    const valueLen = this.#attribute(session, handle, P.CKA_VALUE_LEN);
    const usage = new Set<KeyUsage>();
    for (const [type, name] of USAGE_ATTRIBUTES) {
      const value = this.#attribute(session, handle, type);
      if (value !== undefined && value.length > 0 && value[0] !== 0) usage.add(name);
    }
    return { label, version, keySpec: keySpecOf(ulong(keyType), ulong(valueLen)), usage };
  }

  /** One attribute, or undefined where the key type does not have it. */
  #attribute(session: Buffer, handle: Buffer, type: number): Buffer | undefined {
    try {
      const [attr] = this.#lib.C_GetAttributeValue(session, handle, [{ type }]);
      return Buffer.isBuffer(attr?.value) ? attr.value : undefined;
    } catch (err) {
      if (codeOf(err) === P.CKR_ATTRIBUTE_TYPE_INVALID || codeOf(err) === P.CKR_ATTRIBUTE_SENSITIVE) {
        return undefined;
      }
      throw err;
    }
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
  const label = wanted.tokenLabel?.replace(BLANKS, '');
  const serial = wanted.tokenSerial?.replace(BLANKS, '');
  const matches: { slot: Buffer; label: string }[] = [];
  for (const slot of lib.C_GetSlotList(true)) {
    const token = lib.C_GetTokenInfo(slot);
    if ((token.flags & P.CKF_TOKEN_INITIALIZED) === 0) continue;
    if (label !== undefined && token.label.replace(BLANKS, '') !== label) continue;
    if (serial !== undefined && token.serialNumber.replace(BLANKS, '') !== serial) continue;
    matches.push({ slot, label: token.label.replace(BLANKS, '') });
  }
  // The first of several would be a guess: keys made in one token would be missing from the other.
  if (matches.length === 1) return matches[0] as { slot: Buffer; label: string };
  const description = [label && `labelled '${label}'`, serial && `with serial '${serial}'`]
    .filter(Boolean)
    .join(' ');
  return { count: matches.length, wanted: description };
}

const KEY_TYPE_NAMES = new Map<number, string>([
  [P.CKK_GENERIC_SECRET, 'GENERIC_SECRET'],
  [P.CKK_DES3, 'DES3'],
]);

function keySpecOf(keyType: number | undefined, valueLen: number | undefined): string {
  if (keyType === P.CKK_AES && valueLen !== undefined) return `AES_${valueLen * 8}`;
  const name =
    (keyType !== undefined && KEY_TYPE_NAMES.get(keyType)) || `CKK_0x${(keyType ?? 0).toString(16)}`;
  return valueLen === undefined ? name : `${name}_${valueLen * 8}`;
}

/** A CK_ULONG attribute value (native byte order: little-endian on x86_64 and arm64). */
function ulong(value: Buffer | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (value.length === 8) return Number(value.readBigUInt64LE());
  if (value.length === 4) return value.readUInt32LE();
  return undefined;
}

function codeOf(err: unknown): number {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number'
    ? (err as { code: number }).code
    : -1;
}

/** The CKR_* name pkcs11js puts first in its messages, e.g. "CKR_PIN_INCORRECT:160". */
function ckrOf(err: unknown): string | undefined {
  const match = /\bCKR_[A-Z_]+/.exec(errorText(err));
  return match?.[0];
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
