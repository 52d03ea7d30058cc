// The HSM on pkcs11js's synchronous API, inside an HSM worker thread (hsm-worker.ts), or on the main
// thread for a cold start's first calls (worker-hsm.ts): its library, its session and the handles of
// its keys. Synchronous because in Lambda there is one request per environment and pkcs11js's sync
// calls cost less CPU than its async ones on libuv's thread pool; the worker thread is what lets a
// call that hangs be abandoned (worker-hsm.ts).
import type * as pkcs11 from 'pkcs11js';
import { type AesGcmCiphertext, HsmError, type HsmInfo, type HsmKey, type KeyUsage } from './hsm.ts';
import { VENDOR_PROFILES, type VendorProfile } from './profiles.ts';
import {
  aesGcmShortfall,
  ckrOf,
  closeSession,
  codeOf,
  codesNamed,
  errorText,
  finalize,
  findSecretKeys,
  findToken,
  initialize,
  keyFacts,
  loadLibrary,
  openSession,
  P,
  tokenCount,
  unpadded,
} from './session.ts';

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
   * Runs library-wide steps (C_Initialize, C_Finalize, the slot search) one thread at a time,
   * whatever the library: two libraries may share one underneath (a wrapper and what it wraps), and
   * SoftHSM initialised by two threads at once corrupts its heap. Directly, when absent.
   */
  exclusive?: <T>(step: () => T) => T;
  /** The clock of the reconnect interval; Date.now when absent. */
  now?: () => number;
}

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

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A key version, as encrypt and decrypt name it. */
export type KeyRef = Pick<HsmKey, 'label' | 'version'>;

interface FoundKey {
  key: HsmKey;
  handle: Buffer;
}

export class Pkcs11Hsm {
  readonly #config: Pkcs11Config;
  /** The library, once a connection attempt could load it. */
  #lib: pkcs11.PKCS11 | undefined;
  /**
   * The object handle of each key version this session was asked about: looked up again whenever
   * the key is (findKey; the key descriptions are cached by worker-hsm.ts), and dropped with the
   * session or when the HSM calls a handle stale.
   */
  readonly #handles = new Map<string, Map<number, Buffer>>();
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
  readonly #now: () => number;

  /** Loads the library and connects (Lambda init phase). A failed attempt is retried per call. */
  constructor(config: Pkcs11Config) {
    this.#config = config;
    this.#profile = config.profile ?? VENDOR_PROFILES.softhsm;
    this.#badCiphertext = codesNamed(this.#profile.invalidCiphertext);
    this.#now = config.now ?? Date.now;
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
    return this.#run(() => {
      const found = this.#findVersions(label);
      return version === undefined ? found?.current.key : found?.versions.get(version)?.key;
    });
  }

  encrypt(key: KeyRef, plaintext: Buffer, aad: Buffer): AesGcmCiphertext {
    return this.#run((session) => {
      const lib = this.#library();
      const handle = this.#handle(key);
      const mode = this.#profile.iv;
      // hsm-fills: pkcs11js hands the HSM this very buffer as pIv, and the HSM writes the IV into it.
      const iv =
        mode === 'proxy' ? lib.C_GenerateRandom(session, Buffer.alloc(IV_BYTES)) : Buffer.alloc(IV_BYTES);
      lib.C_EncryptInit(session, this.#gcm(iv, aad), handle);
      const extra = mode === 'hsm-appends' ? IV_BYTES : 0;
      const size = plaintext.length + TAG_BYTES + extra;
      const out = lib.C_Encrypt(session, plaintext, Buffer.alloc(size));
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

  decrypt(key: KeyRef, input: AesGcmCiphertext, aad: Buffer): Buffer {
    const data = Buffer.concat([input.ciphertext, input.tag]);
    return this.#run((session) => {
      const lib = this.#library();
      const handle = this.#handle(key);
      lib.C_DecryptInit(session, this.#gcm(input.iv, aad, input.tag.length * 8), handle);
      let out: Buffer;
      try {
        // The output buffer must hold ciphertext + tag: SoftHSM answers CKR_BUFFER_TOO_SMALL otherwise
        // and leaves the operation active, so every later call on the session fails.
        out = lib.C_Decrypt(session, data, Buffer.alloc(data.length));
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

  /** Whether the token refused the PIN: it is never tried again, and every call says so. */
  pinRefused(): boolean {
    return this.#pinRefused !== undefined;
  }

  /** Answers a call made by message (hsm-worker.ts) or on its own thread (worker-hsm.ts). */
  answer(request: HsmRequest): HsmResponse {
    let response: HsmResponse;
    try {
      response = serve(this, request);
    } catch (err) {
      response = errorResponse(err);
    }
    const events = this.takeEvents();
    if (events.length > 0) response.events = events;
    return response;
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
          this.#handles.clear();
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
    if (this.#lastFailure && this.#now() < this.#lastFailure.retryAt) throw this.#lastFailure.error;
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
      this.#lastFailure = { error, retryAt: this.#now() + RECONNECT_INTERVAL_MS };
      throw error;
    }
  }

  #open(): void {
    const lib = this.#library();
    const exclusive = this.#config.exclusive ?? ((step) => step());
    const slot = exclusive(() => {
      initialize(lib, this.#config.libraryParameters);
      return this.#findSlot(lib);
    });
    this.#checkMechanism(lib, slot);
    const session = openSession(lib, slot, { pin: this.#config.pin });
    const token = lib.C_GetTokenInfo(slot);
    const module = lib.C_GetInfo();
    const v = (x: pkcs11.Version) => `${x.major}.${x.minor}`;
    const serial = unpadded(token.serialNumber);
    this.#info = {
      // NSS softoken gives every token the serial 0000000000000000, which tells no HSM apart.
      ...(/^0*$/.test(serial) ? {} : { id: serial }),
      vendor: unpadded(token.manufacturerID),
      model:
        `${unpadded(token.model)} (hardware ${v(token.hardwareVersion)}, firmware ${v(token.firmwareVersion)}, ` +
        `${unpadded(module.libraryDescription)} ${v(module.libraryVersion)})`,
    };
    this.#session = session;
  }

  #disconnect(): void {
    const session = this.#session;
    this.#session = undefined;
    this.#handles.clear();
    const lib = this.#lib;
    if (lib === undefined) return;
    if (this.#config.canFinalize?.() ?? true) {
      const exclusive = this.#config.exclusive ?? ((step) => step());
      exclusive(() => finalize(lib));
      return;
    }
    // Others use the library: give back this session only (C_Initialize is then a no-op).
    if (session !== undefined) closeSession(lib, session);
  }

  /**
   * The library, loaded now if it was not: a library that failed to load (its C_GetFunctionList
   * failed, or the file was missing) is an unavailable HSM like any other, tried again later.
   */
  #library(): pkcs11.PKCS11 {
    if (this.#lib === undefined) {
      try {
        this.#lib = loadLibrary(this.#config.modulePath);
      } catch (err) {
        const ckr = ckrOf(err);
        throw new HsmError('unavailable', `PKCS#11 library not loaded: ${errorText(err)}`, ckr, {
          cause: err,
        });
      }
    }
    return this.#lib;
  }

  #findSlot(lib: pkcs11.PKCS11): Buffer {
    const found = findToken(lib, this.#config);
    if ('slot' in found) return found.slot;
    if (found.count === 0) {
      throw new HsmError('unavailable', `HSM unavailable: ${tokenCount(found)}`, 'CKR_TOKEN_NOT_PRESENT');
    }
    throw new HsmError(
      'unavailable',
      `HSM unavailable: ${tokenCount(found)}: name one by tokenLabel and tokenSerial`,
    );
  }

  /** The token's AES-GCM must do what the proxy asks of it, or the HSM is unavailable (not a key's fault). */
  #checkMechanism(lib: pkcs11.PKCS11, slot: Buffer): void {
    let shortfall: string | undefined;
    let ckr: string | undefined;
    try {
      shortfall = aesGcmShortfall(lib.C_GetMechanismInfo(slot, P.CKM_AES_GCM));
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

  #handle(key: KeyRef): Buffer {
    const handle =
      this.#handles.get(key.label)?.get(key.version) ??
      this.#findVersions(key.label)?.versions.get(key.version)?.handle;
    if (handle === undefined) throw new HsmError('failed', 'The key is no longer in the HSM');
    return handle;
  }

  /** Every version of the key `label`, its current (highest) one, and their handles kept. */
  #findVersions(label: string): { versions: Map<number, FoundKey>; current: FoundKey } | undefined {
    const session = this.#session as Buffer;
    const lib = this.#library();
    this.#handles.delete(label);
    const handles = findSecretKeys(lib, session, label);
    if (handles.length === 0) return undefined;
    const versions = new Map<number, FoundKey>();
    let current: FoundKey | undefined;
    for (const handle of handles) {
      const { version, keySpec, usage } = keyFacts(lib, session, handle);
      if (versions.has(version)) {
        throw new HsmError(
          'failed',
          `Two secret keys are version ${version} of this label; the key is ambiguous`,
        );
      }
      const entry = { key: { label, version, keySpec, usage: new Set(usage) }, handle };
      versions.set(version, entry);
      if (current === undefined || version > current.key.version) current = entry;
    }
    this.#handles.set(label, new Map([...versions].map(([version, entry]) => [version, entry.handle])));
    return { versions, current: current as FoundKey };
  }

  #gcm(iv: Buffer, aad: Buffer, tagBits = TAG_BYTES * 8): pkcs11.Mechanism {
    // CK_PARAMS_GCM sets every field of CK_GCM_PARAMS (CK_PARAMS_AES_GCM leaves ulIvBits unset).
    const ivBits = this.#profile.ivBits ? iv.length * 8 : 0;
    const parameter: pkcs11.GcmParams = { type: P.CK_PARAMS_GCM, iv, ivBits, aad, tagBits };
    return { mechanism: P.CKM_AES_GCM, parameter };
  }
}

/** A call to the HSM as worker-hsm.ts makes it: by message to a worker thread, or on its own thread. */
export interface HsmRequest {
  op: 'findKey' | 'encrypt' | 'decrypt';
  label: string;
  version?: number;
  /** encrypt: plaintext, AAD; decrypt: IV, ciphertext, tag, AAD. */
  data?: Uint8Array[];
}

export type HsmKeyWire = Omit<HsmKey, 'usage'> & { usage: KeyUsage[] };

/** The answer to an HsmRequest, errors as data: it crosses threads as a message. */
export interface HsmResponse {
  key?: HsmKeyWire;
  /** encrypt: IV, ciphertext, tag; decrypt: plaintext. */
  data?: Uint8Array[];
  error?: { kind: HsmError['kind']; message: string; ckr?: string };
  /** What the HSM says about itself, when it changed since the last message. */
  info?: HsmInfo;
  /** Re-initialisations and the like, for the main thread to log. */
  events?: string[];
}

function errorResponse(err: unknown): HsmResponse {
  const e = err instanceof HsmError ? err : new HsmError('failed', `HSM: ${(err as Error)?.message ?? err}`);
  return { error: { kind: e.kind, message: e.message, ...(e.ckr ? { ckr: e.ckr } : {}) } };
}

function serve(hsm: Pkcs11Hsm, request: HsmRequest): HsmResponse {
  if (request.op === 'findKey') {
    const key = hsm.findKey(request.label, request.version);
    return key === undefined ? {} : { key: { ...key, usage: [...key.usage] } };
  }
  const key = { label: request.label, version: request.version ?? 1 };
  const data = (request.data ?? []).map((bytes) =>
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  );
  if (request.op === 'encrypt') {
    const [plaintext, aad] = data as [Buffer, Buffer];
    const out = hsm.encrypt(key, plaintext, aad);
    return { data: [out.iv, out.ciphertext, out.tag] };
  }
  const [iv, ciphertext, tag, aad] = data as [Buffer, Buffer, Buffer, Buffer];
  return { data: [hsm.decrypt(key, { iv, ciphertext, tag }, aad)] };
}

/**
 * A Pkcs11Hsm on one of the threads of a process that share its library (worker-hsm.ts):
 * `users` [0] counts the threads using the library (C_Finalize only by the last one), and `lock`
 * [0] holds the id of the thread in a library-wide step (`holder`: a worker's threadId, -1 for the
 * main thread), or 0.
 */
export function sharedLibraryHsm(
  config: Omit<Pkcs11Config, 'canFinalize' | 'exclusive' | 'now'>,
  shared: { lock: SharedArrayBuffer; users: Int32Array; holder: number },
): Pkcs11Hsm {
  return new Pkcs11Hsm({
    ...config,
    canFinalize: () => Atomics.load(shared.users, 0) <= 1,
    exclusive: exclusiveBy(new Int32Array(shared.lock), shared.holder),
  });
}

/**
 * Pkcs11Config.exclusive for the threads of a process, by a lock they share. A worker terminated
 * inside a step (abandoned at its deadline) runs no `finally`: the main thread releases its lock
 * when it ends (worker-hsm.ts).
 */
function exclusiveBy(lock: Int32Array, holder: number): <T>(step: () => T) => T {
  return (step) => {
    for (;;) {
      const current = Atomics.compareExchange(lock, 0, 0, holder);
      if (current === 0) break;
      Atomics.wait(lock, 0, current, 50);
    }
    try {
      return step();
    } finally {
      Atomics.compareExchange(lock, 0, holder, 0);
      Atomics.notify(lock, 0);
    }
  };
}
