// The Hsm interface for the main thread: each call goes to an HSM worker thread (hsm-worker.ts)
// and is waited for synchronously, but only until the call's deadline. pkcs11js calls cannot be
// interrupted, so a call past its deadline is abandoned with its thread: the request gets HsmError 'timeout' (503 DependencyTimeoutException) at the
// deadline, and a fresh worker with a session of its own starts at once.
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import {
  type AesGcmCiphertext,
  type Hsm,
  HsmError,
  type HsmInfo,
  type HsmKey,
  type KeyUsage,
} from './hsm.ts';
import type { WorkerInit, WorkerRequest, WorkerResponse } from './hsm-worker.ts';
import type { Pkcs11Config } from './pkcs11-hsm.ts';
import {
  type Channel,
  createChannel,
  IDLE,
  REQUEST,
  readMessage,
  STARTING,
  STATE,
  signal,
  spinUntil,
  writeMessage,
} from './wire.ts';

export interface WorkerHsmOptions {
  pkcs11: Pkcs11Config;
  /** Deadline of each call, in ms; KMS allows 250 ms for the whole request. */
  callTimeoutMs: number;
  /** Deadline of the first connection (module load, C_Initialize, C_Login) of the first worker. */
  startTimeoutMs: number;
  /**
   * How long each side spins before sleeping, in us: this thread for an answer, the worker for the
   * next call after answering one (wire.ts spinUntil). 0: both sleep at once.
   */
  spinMicros?: number;
  /** Abandoned workers still stuck in a call; no new worker is started beyond this many. */
  maxAbandoned?: number;
  /** Told what the worker reports (re-initialisations), and when a worker is abandoned. */
  onEvent?: (message: string) => void;
  /** Told, as soon as a worker has tried, that it could not connect, and why (never a secret). */
  onConnectFailure?: (reason: string) => void;
}

/**
 * Per PKCS#11 library, how many workers of this process use it: a worker may C_Finalize only when
 * it is the only one (PKCS#11 state is per process; pkcs11-hsm.ts canFinalize).
 */
const libraryUsers = new Map<string, Int32Array>();

function usersOf(modulePath: string): Int32Array {
  const library = libraryOf(modulePath);
  let users = libraryUsers.get(library);
  if (users === undefined) {
    users = new Int32Array(new SharedArrayBuffer(8));
    libraryUsers.set(library, users);
  }
  return users;
}

/** The library a path names: two paths to one file (a symlink) load one library in a process. */
function libraryOf(modulePath: string): string {
  try {
    return realpathSync(modulePath);
  } catch {
    return modulePath; // not there: the worker reports it
  }
}

/**
 * PKCS#11 libraries held open by this thread for the life of the process, from the first
 * abandonment of a worker using them. A worker that ends closes its handle on its library
 * (pkcs11js dlclose), and a terminated worker runs no C_Finalize: an abandoned worker ending before
 * its replacement has loaded the library would unload it while it is still initialised, losing
 * its state, and a network HSM's client library with threads of its own would take the process
 * down (test/integration/worker-abandon.test.ts). The stuck worker still holds the library when
 * this runs, so this only adds a handle.
 */
const pinned = new Map<string, object | undefined>();

function pinLibrary(modulePath: string): void {
  const library = libraryOf(modulePath);
  if (pinned.has(library)) return;
  pinned.set(library, undefined);
  try {
    const { PKCS11 } = createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js');
    const handle = new PKCS11();
    handle.load(library);
    pinned.set(library, handle);
  } catch {
    // pkcs11js or the library does not load on this thread: the workers report that.
  }
}

/**
 * Where the worker's code is: XKS_HSM_WORKER (the Lambda layer's bundled copy), or this folder's
 * source when the proxy runs from source (npm start, tests).
 */
function workerScript(): string | URL {
  return process.env.XKS_HSM_WORKER || new URL('./hsm-worker.ts', import.meta.url);
}

/**
 * A worker started before the configuration is known (prestartWorker), for the first WorkerHsm
 * to take: a worker thread needs 60-80 ms before its first line runs, which then overlaps the
 * loading of the handler's modules instead of following it.
 */
let prestarted: Worker | undefined;

/** Starts a worker that waits for its configuration (hsm-worker.ts WorkerInit, posted by #start). */
export function prestartWorker(): void {
  if (prestarted !== undefined) return;
  const thread = newWorker({ deferred: true });
  thread.once('exit', () => {
    if (prestarted === thread) prestarted = undefined;
  });
  prestarted = thread;
}

function newWorker(workerData: WorkerInit | { deferred: true }): Worker {
  const thread = new Worker(workerScript(), {
    workerData,
    // None of the process's flags: some stop a worker from starting (--input-type of node -e,
    // the test runner's), and the worker needs none (NODE_OPTIONS still applies).
    execArgv: [],
  });
  // Never keeps the process alive; a worker that dies is replaced at the next call.
  thread.unref();
  thread.on('error', () => {});
  return thread;
}

export class WorkerHsm implements Hsm {
  readonly #options: WorkerHsmOptions;
  #worker: { thread: Worker; channel: Channel } | undefined;
  /** Whether any worker ever got ready: until then, calls may wait startTimeoutMs. */
  #everReady = false;
  #abandoned = 0;
  #info: HsmInfo | undefined;
  /** Key descriptions, so that an Encrypt or Decrypt is one call to the worker, not two. */
  readonly #keys = new Map<string, { key: HsmKey; expires: number }>();

  constructor(options: WorkerHsmOptions) {
    this.#options = options;
    this.#start(); // the worker connects while the rest of the init phase goes on
  }

  info(): HsmInfo | undefined {
    return this.#info;
  }

  findKey(label: string, version?: number): HsmKey | undefined {
    const id = version === undefined ? label : `${label}\0${version}`;
    const now = performance.now();
    const cached = this.#keys.get(id);
    if (cached !== undefined && cached.expires > now) return cached.key;
    this.#keys.delete(id);
    const { header } = this.#call({ op: 'findKey', label, ...(version === undefined ? {} : { version }) });
    if (header.key === undefined) return undefined;
    const key = { ...header.key, usage: new Set(header.key.usage as KeyUsage[]) };
    const ttl = this.#options.pkcs11.keyCacheTtlMs ?? 60_000;
    if (ttl > 0) this.#keys.set(id, { key, expires: now + ttl });
    return key;
  }

  encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): AesGcmCiphertext {
    const { buffers } = this.#call({ op: 'encrypt', label: key.label, version: key.version }, [
      plaintext,
      aad,
    ]);
    const [iv, ciphertext, tag] = buffers as [Buffer, Buffer, Buffer];
    return { iv, ciphertext, tag };
  }

  decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Buffer {
    const { buffers } = this.#call({ op: 'decrypt', label: key.label, version: key.version }, [
      input.iv,
      input.ciphertext,
      input.tag,
      aad,
    ]);
    return buffers[0] as Buffer;
  }

  close(): void {
    void this.#worker?.thread.terminate();
    this.#worker = undefined;
  }

  #start(): { thread: Worker; channel: Channel } {
    const max = this.#options.maxAbandoned ?? 4;
    if (this.#abandoned >= max) {
      throw new HsmError('unavailable', `HSM unavailable: ${this.#abandoned} calls are still stuck in it`);
    }
    const channel = createChannel();
    const users = usersOf(this.#options.pkcs11.modulePath);
    Atomics.add(users, 0, 1);
    const init: WorkerInit = {
      shared: channel.shared,
      config: this.#options.pkcs11,
      libraryUsers: users.buffer as SharedArrayBuffer,
      spinMicros: this.#options.spinMicros ?? 0,
    };
    let thread = prestarted;
    prestarted = undefined;
    // A prestarted worker that died meanwhile still reports 'exit' below: the next call replaces it.
    if (thread !== undefined) thread.postMessage(init);
    else thread = newWorker(init);
    const id = thread.threadId; // -1 once the thread has ended
    thread.on('message', (message: { connectFailure?: unknown }) => {
      if (typeof message?.connectFailure === 'string')
        this.#options.onConnectFailure?.(message.connectFailure);
    });
    // A 'message' listener refs the thread's port: it must still never keep the process alive.
    thread.unref();
    thread.on('exit', () => {
      Atomics.sub(users, 0, 1);
      // Terminated inside a library-wide step, it never released its lock (hsm-worker.ts exclusive).
      if (Atomics.compareExchange(users, 1, id, 0) === id) Atomics.notify(users, 1);
      if (this.#worker?.thread === thread) this.#worker = undefined;
    });
    this.#worker = { thread, channel };
    return this.#worker;
  }

  #call(request: WorkerRequest, input: Buffer[] = []): { header: WorkerResponse; buffers: Buffer[] } {
    const worker = this.#worker ?? this.#start();
    const { channel } = worker;
    const { callTimeoutMs } = this.#options;
    const startMs = this.#everReady ? callTimeoutMs : this.#options.startTimeoutMs;
    const startDeadline = performance.now() + startMs;
    if (!waitWhile(channel, STARTING, startDeadline, 0)) {
      // Still connecting: not stuck in a call, so it is kept (a worker per call would pile up).
      throw new HsmError('timeout', `The HSM took more than ${startMs} ms to connect`);
    }
    this.#everReady = true;
    writeMessage(channel, request, input);
    signal(channel, REQUEST);
    // The call's own deadline runs from here. Counted from before the wait for a starting worker
    // (one replacing an abandoned worker), it would leave a call that found its worker late a
    // sliver of time, and the healthy new worker would be abandoned with it: on a busy machine,
    // where a worker takes longer to start than the deadline, every replacement in turn. The first
    // call after a cold start keeps the rest of startTimeoutMs when that is longer.
    const posted = performance.now();
    const deadline = Math.max(posted + callTimeoutMs, startDeadline);
    if (!waitWhile(channel, REQUEST, deadline, this.#options.spinMicros ?? 0)) {
      this.#abandon(worker, Math.round(deadline - posted), 'to answer');
    }
    const response = readMessage<WorkerResponse>(channel);
    Atomics.store(channel.control, STATE, IDLE);
    for (const event of response.header.events ?? []) this.#options.onEvent?.(event);
    if (response.header.info !== undefined) this.#info = response.header.info;
    const error = response.header.error;
    if (error !== undefined) throw new HsmError(error.kind, error.message, error.ckr);
    return response;
  }

  #abandon(worker: { thread: Worker }, timeoutMs: number, what: string): never {
    this.#worker = undefined;
    this.#abandoned++;
    worker.thread.once('exit', () => this.#abandoned--);
    pinLibrary(this.#options.pkcs11.modulePath);
    // Ends the thread once its PKCS#11 call returns; its session stays open in the library until a
    // later re-initialisation (docs/hsm.md, section 6).
    void worker.thread.terminate();
    this.#options.onEvent?.(`abandoned a worker stuck in an HSM call for ${timeoutMs} ms`);
    // The replacement connects now, not inside the next request's deadline.
    try {
      this.#start();
    } catch {
      // Too many stuck: the next call says so.
    }
    throw new HsmError('timeout', `The HSM took more than ${timeoutMs} ms ${what}`);
  }
}

/**
 * Waits while the channel is in `state`, spinning `spinMicros` first, until the deadline; false
 * when the deadline passed.
 */
function waitWhile(channel: Channel, state: number, deadline: number, spinMicros: number): boolean {
  const spin = Math.min(spinMicros, (deadline - performance.now()) * 1000);
  if (spinUntil(spin, () => Atomics.load(channel.control, STATE) !== state)) return true;
  for (;;) {
    if (Atomics.load(channel.control, STATE) !== state) return true;
    const remaining = deadline - performance.now();
    if (remaining <= 0) return false;
    Atomics.wait(channel.control, STATE, state, remaining);
  }
}
