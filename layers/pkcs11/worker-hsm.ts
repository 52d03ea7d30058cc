// The Hsm interface for the main thread: each call is a message to an HSM worker thread
// (hsm-worker.ts), answered by message, with a deadline kept by a timer here. pkcs11js calls cannot be
// interrupted, so a call past its deadline is abandoned with its thread: the request gets HsmError
// 'timeout' (503 DependencyTimeoutException) at the deadline, and a fresh worker with a session of
// its own starts at once. While a call waits for the HSM, this thread serves other requests; when
// they need the HSM too and every worker is busy, another worker starts (up to maxWorkers).
// With firstCallsHere, the calls made before the first worker is ready run on this thread.
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import { type AesGcmCiphertext, type Hsm, HsmError, type HsmInfo, type HsmKey } from './hsm.ts';
import type { WorkerInit, WorkerReady } from './hsm-worker.ts';
import type { HsmRequest, HsmResponse, Pkcs11Hsm } from './pkcs11-hsm.ts';

export interface WorkerHsmOptions {
  pkcs11: WorkerInit['config'];
  /** Deadline of each call, in ms; KMS allows 250 ms for the whole request. */
  callTimeoutMs: number;
  /** Deadline of the first connection (module load, C_Initialize, C_Login) of the first worker. */
  startTimeoutMs: number;
  /**
   * Until a worker is ready, calls run on this thread, without a deadline (a pkcs11js call cannot
   * be interrupted here): for a Lambda environment made for a request that is waiting (on-demand),
   * whose login and first calls would otherwise wait for a worker thread's own Node start, about
   * a Node process's start-up (docs/performance.md, "Cold start"). The first worker starts at
   * startWorker(), once that request has been answered: a worker starting beside the cold start
   * would share its CPU, a fraction of a core in Lambda. A connection here that fails is left to the
   * workers, which have deadlines; a refused PIN is not tried again by them either.
   */
  firstCallsHere?: boolean;
  /**
   * How long a key's description (its current version, key spec and usage) is reused before the
   * HSM is asked again: a new key version is used after this long. 60 s when absent.
   */
  keyCacheTtlMs?: number;
  /**
   * Worker threads (each with its own session) this HSM may have at once: another starts when a call
   * finds every one busy. A Lambda environment serves one request at a time and never needs a second.
   */
  maxWorkers?: number;
  /** Abandoned workers still stuck in a call; no new worker is started beyond this many. */
  maxAbandoned?: number;
  /** Told what a worker reports (re-initialisations), and when a worker is abandoned. */
  onEvent?: (message: string) => void;
  /** Told, as soon as a worker has tried, that it could not connect, and why (never a secret). */
  onConnectFailure?: (reason: string) => void;
}

/**
 * The lock of library-wide steps (hsm-worker.ts exclusive), one for the whole process and every
 * library: two configured libraries may share one underneath (a wrapper and what it wraps), and
 * SoftHSM initialised by two threads at once corrupts its heap.
 */
const LOCK = new SharedArrayBuffer(4);

/**
 * Per PKCS#11 library, how many workers of this process use it: a worker may C_Finalize only when
 * it is the only one (PKCS#11 state is per process; pkcs11-hsm.ts canFinalize).
 */
const libraryUsers = new Map<string, Int32Array>();

function usersOf(modulePath: string): Int32Array {
  const library = libraryOf(modulePath);
  let users = libraryUsers.get(library);
  if (users === undefined) {
    users = new Int32Array(new SharedArrayBuffer(4));
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
 * abandonment of a worker using them (or the end of this thread's own connection). A worker that
 * ends closes its handle on its library (pkcs11js dlclose), and a terminated worker runs no
 * C_Finalize: an abandoned worker ending before its replacement has loaded the library would
 * unload it while it is still initialised, losing its state, and a network HSM's client library
 * with threads of its own would take the process down (test/integration/worker-abandon.test.ts).
 * The stuck worker still holds the library when this runs, so this only adds a handle.
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

function newWorker(workerData: WorkerInit): Worker {
  // Loaded when first used: a cold start on demand starts its first worker after its response.
  const { Worker } = process.getBuiltinModule('node:worker_threads');
  const thread = new Worker(workerScript(), {
    workerData,
    // None of the process's flags: some stop a worker from starting (--input-type of node -e,
    // the test runner's), and the worker needs none (NODE_OPTIONS still applies).
    execArgv: [],
    // A worker's live heap is a few MB (each call's buffers), but with V8's default limits each
    // worker lets its old generation grow by tens of MB under steady load before collecting it
    // (docs/performance.md, the HSM worker threads' memory). Past these a worker ends, and is
    // replaced like any worker that ends.
    resourceLimits: { maxYoungGenerationSizeMb: 8, maxOldGenerationSizeMb: 48 },
  });
  // Never keeps the process alive: a pending call's timer does, while it waits.
  thread.unref();
  thread.on('error', () => {});
  return thread;
}

/** The HsmError an answer carries (pkcs11-hsm.ts errorResponse's inverse), or undefined. */
function errorOf(response: HsmResponse): HsmError | undefined {
  const error = response.error;
  return error === undefined ? undefined : new HsmError(error.kind, error.message, error.ckr);
}

/** A call waiting for a worker, then for its answer. */
interface Call {
  request: HsmRequest;
  resolve: (response: HsmResponse) => void;
  reject: (error: HsmError) => void;
  timer: NodeJS.Timeout | undefined;
  /** While no worker was ever ready: the first connection's deadline, which the call may use. */
  startDeadline: number;
}

interface HsmThread {
  thread: Worker;
  /** Its threadId, kept: -1 once the thread has ended. */
  id: number;
  state: 'starting' | 'idle' | 'busy';
  call: Call | undefined;
}

export class WorkerHsm implements Hsm {
  readonly #options: WorkerHsmOptions;
  readonly #threads = new Set<HsmThread>();
  readonly #queue: Call[] = [];
  /** Whether any worker ever got ready: until then, calls may wait startTimeoutMs. */
  #everReady = false;
  /** Whether the last word from the HSM was an answer: only then do more workers help. */
  #answering = false;
  #abandoned = 0;
  #closed = false;
  #info: HsmInfo | undefined;
  /**
   * The key descriptions, by label (and version, when one was asked for): so that an Encrypt or
   * Decrypt is one call to a worker, and a GetKeyMetadata none, even while a worker is stuck.
   */
  readonly #keys = new Map<string, { key: HsmKey; expires: number }>();

  /** firstCallsHere: this thread's connection, until a worker is ready (#here while it loads). */
  #here: Promise<Pkcs11Hsm | undefined> | undefined;
  #hereHsm: Pkcs11Hsm | undefined;

  constructor(options: WorkerHsmOptions) {
    this.#options = options;
    // Either connects while the rest of the init phase goes on.
    if (options.firstCallsHere) this.#here = this.#connectHere();
    else this.#start();
  }

  info(): HsmInfo | undefined {
    return this.#info;
  }

  async findKey(label: string, version?: number): Promise<HsmKey | undefined> {
    const id = version === undefined ? label : `${label}\0${version}`;
    const cached = this.#keys.get(id);
    if (cached !== undefined && cached.expires > performance.now()) return cached.key;
    this.#keys.delete(id);
    const found = await this.#call({ op: 'findKey', label, ...(version === undefined ? {} : { version }) });
    if (found.key === undefined) return undefined;
    const key = { ...found.key, usage: new Set(found.key.usage) };
    const ttl = this.#options.keyCacheTtlMs ?? 60_000;
    if (ttl > 0) this.#keys.set(id, { key, expires: performance.now() + ttl });
    return key;
  }

  async encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): Promise<AesGcmCiphertext> {
    const { data } = await this.#call({
      op: 'encrypt',
      label: key.label,
      version: key.version,
      data: [plaintext, aad],
    });
    const [iv, ciphertext, tag] = buffers(data, 3);
    return { iv, ciphertext, tag } as AesGcmCiphertext;
  }

  async decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Promise<Buffer> {
    const { data } = await this.#call({
      op: 'decrypt',
      label: key.label,
      version: key.version,
      data: [input.iv, input.ciphertext, input.tag, aad],
    });
    return buffers(data, 1)[0] as Buffer;
  }

  close(): void {
    this.#closed = true;
    if (this.#hereHsm !== undefined) this.#leaveHere(this.#hereHsm);
    this.#here = undefined;
    for (const call of this.#queue.splice(0)) this.#settle(call, new HsmError('unavailable', 'HSM closed'));
    for (const t of this.#threads) void t.thread.terminate();
  }

  #call(request: HsmRequest): Promise<HsmResponse> {
    if (this.#here !== undefined) return this.#callHere(this.#here, request);
    return this.#callWorker(request);
  }

  /** Loads pkcs11js and the library on this thread, and logs in (firstCallsHere). */
  async #connectHere(): Promise<Pkcs11Hsm | undefined> {
    let pkcs11: typeof import('./pkcs11-hsm.ts');
    try {
      // Imported when used: a pkcs11js that cannot load is then the workers' to report.
      pkcs11 = await import('./pkcs11-hsm.ts');
    } catch {
      this.#here = undefined;
      this.#startIfNone();
      return undefined;
    }
    const users = usersOf(this.#options.pkcs11.modulePath);
    Atomics.add(users, 0, 1);
    const hsm = pkcs11.sharedLibraryHsm(this.#options.pkcs11, { lock: LOCK, users, holder: -1 });
    this.#hereHsm = hsm;
    const failure = hsm.connectionError();
    if (failure !== undefined && hsm.pinRefused()) {
      // Kept: it answers every call with the refusal, without asking the token again.
      this.#options.onConnectFailure?.(failure.message);
      return hsm;
    }
    this.#info = hsm.info();
    if (failure !== undefined) this.#leaveHere(hsm);
    return hsm;
  }

  /**
   * Starts a worker if none is running (firstCallsHere: the calls go to it once it is ready); not
   * after this thread's connection found the PIN refused, which no one may try again.
   */
  startWorker(): void {
    if (this.#hereHsm?.pinRefused()) return;
    this.#startIfNone();
  }

  async #callHere(here: Promise<Pkcs11Hsm | undefined>, request: HsmRequest): Promise<HsmResponse> {
    const hsm = await here;
    if (hsm === undefined || hsm !== this.#hereHsm) return this.#callWorker(request);
    const response = hsm.answer(request);
    this.#info = hsm.info() ?? this.#info;
    for (const event of response.events ?? []) this.#options.onEvent?.(event);
    const error = errorOf(response);
    if (error === undefined) return response;
    // The workers, with their deadlines, reconnect from here on.
    if (error.kind === 'unavailable' && !hsm.pinRefused()) this.#leaveHere(hsm);
    throw error;
  }

  /**
   * Gives up this thread's connection: only its session while a worker uses the library. The
   * library stays loaded (pinned), so that the worker does not load it afresh: its handle here
   * would otherwise close when this Pkcs11Hsm is collected, unloading a library no worker holds yet.
   */
  #leaveHere(hsm: Pkcs11Hsm): void {
    this.#here = undefined;
    this.#hereHsm = undefined;
    pinLibrary(this.#options.pkcs11.modulePath);
    hsm.close();
    Atomics.sub(usersOf(this.#options.pkcs11.modulePath), 0, 1);
    this.#startIfNone();
  }

  #startIfNone(): void {
    if (this.#threads.size > 0 || this.#closed) return;
    try {
      this.#start();
    } catch {
      // Too many stuck: the next call says so.
    }
  }

  #callWorker(request: HsmRequest): Promise<HsmResponse> {
    return new Promise((resolve, reject) => {
      const now = performance.now();
      const waitMs = this.#everReady ? this.#options.callTimeoutMs : this.#options.startTimeoutMs;
      const call: Call = { request, resolve, reject, timer: undefined, startDeadline: now + waitMs };
      if (this.#queue.length === 0) {
        for (const t of this.#threads) {
          if (t.state === 'idle') return this.#run(t, call);
        }
      }
      // Waiting for a worker: one still connecting is not stuck in a call, so it is kept (a worker per
      // call would pile up); the call fails at the end of the wait.
      call.timer = setTimeout(() => {
        const index = this.#queue.indexOf(call);
        if (index < 0) return;
        this.#queue.splice(index, 1);
        const starting = [...this.#threads].every((t) => t.state === 'starting');
        const what = starting ? 'to connect' : 'to take the call';
        this.#settle(call, new HsmError('timeout', `The HSM took more than ${waitMs} ms ${what}`));
      }, waitMs);
      this.#queue.push(call);
      this.#dispatch();
    });
  }

  /** Gives waiting calls to idle workers; starts a worker when every one is busy (or none is left). */
  #dispatch(): void {
    for (const t of this.#threads) {
      if (this.#queue.length === 0) return;
      if (t.state === 'idle') this.#run(t, this.#queue.shift() as Call);
    }
    if (this.#queue.length === 0 || this.#closed) return;
    const threads = [...this.#threads];
    if (threads.some((t) => t.state === 'starting')) return;
    const grow =
      threads.length === 0 || (this.#answering && threads.length < (this.#options.maxWorkers ?? 4));
    if (!grow) return;
    try {
      this.#start();
    } catch (error) {
      for (const call of this.#queue.splice(0)) this.#settle(call, error as HsmError);
    }
  }

  #run(t: HsmThread, call: Call): void {
    t.state = 'busy';
    t.call = call;
    clearTimeout(call.timer);
    // The call's own deadline runs from here. Counted from before the wait for a starting worker
    // (one replacing an abandoned worker), it would leave a call that found its worker late a
    // sliver of time, and the healthy new worker would be abandoned with it: on a busy machine,
    // where a worker takes longer to start than the deadline, every replacement in turn. The first
    // call after a cold start keeps the rest of startTimeoutMs when that is longer.
    const posted = performance.now();
    const deadline = Math.max(posted + this.#options.callTimeoutMs, call.startDeadline);
    const timeoutMs = Math.round(deadline - posted);
    call.timer = setTimeout(() => this.#abandon(t, timeoutMs), deadline - posted);
    t.thread.postMessage(call.request);
  }

  #start(): void {
    const max = this.#options.maxAbandoned ?? 4;
    if (this.#abandoned >= max) {
      throw new HsmError('unavailable', `HSM unavailable: ${this.#abandoned} calls are still stuck in it`);
    }
    const users = usersOf(this.#options.pkcs11.modulePath);
    Atomics.add(users, 0, 1);
    const init: WorkerInit = {
      config: this.#options.pkcs11,
      lock: LOCK,
      users: users.buffer as SharedArrayBuffer,
    };
    const thread = newWorker(init);
    const t: HsmThread = { thread, id: thread.threadId, state: 'starting', call: undefined };
    this.#threads.add(t);
    thread.on('message', (message: WorkerReady | HsmResponse) => this.#receive(t, message));
    thread.on('error', (error) =>
      this.#options.onConnectFailure?.(`HSM worker thread failed: ${error.message}`),
    );
    // A 'message' listener refs the thread's port: it must still never keep the process alive.
    thread.unref();
    thread.once('exit', () => {
      Atomics.sub(users, 0, 1);
      // Terminated inside a library-wide step, it never released the lock (hsm-worker.ts exclusive).
      if (Atomics.compareExchange(new Int32Array(LOCK), 0, t.id, 0) === t.id) {
        Atomics.notify(new Int32Array(LOCK), 0);
      }
      if (!this.#threads.delete(t)) return; // abandoned: counted down in #abandon
      const ended = new HsmError('unavailable', 'HSM unavailable: its worker thread ended');
      if (t.call !== undefined) this.#settle(t.call, ended);
      // One that ended before it was ready would end again: the next call starts another.
      if (t.state === 'starting' && this.#threads.size === 0) {
        for (const call of this.#queue.splice(0)) this.#settle(call, ended);
      }
      this.#dispatch();
    });
  }

  #receive(t: HsmThread, message: WorkerReady | HsmResponse): void {
    if (!this.#threads.has(t)) return; // abandoned: its call was answered at the deadline
    if (message.info !== undefined) this.#info = message.info;
    if ('ready' in message) {
      this.#everReady = true;
      if (this.#hereHsm !== undefined) this.#leaveHere(this.#hereHsm);
      this.#answering = message.failure === undefined;
      if (message.failure !== undefined) this.#options.onConnectFailure?.(message.failure);
      t.state = 'idle';
      this.#dispatch();
      return;
    }
    for (const event of message.events ?? []) this.#options.onEvent?.(event);
    const call = t.call;
    t.call = undefined;
    t.state = 'idle';
    const kind = message.error?.kind;
    this.#answering = kind !== 'unavailable' && kind !== 'timeout';
    if (call !== undefined) this.#settle(call, errorOf(message) ?? message);
    this.#dispatch();
  }

  #abandon(t: HsmThread, timeoutMs: number): void {
    const call = t.call;
    t.call = undefined;
    this.#threads.delete(t);
    this.#abandoned++;
    t.thread.once('exit', () => this.#abandoned--);
    pinLibrary(this.#options.pkcs11.modulePath);
    // Ends the thread once its PKCS#11 call returns; its session stays open in the library until a
    // later re-initialisation (docs/hsm.md, section 6).
    void t.thread.terminate();
    this.#options.onEvent?.(`abandoned a worker stuck in an HSM call for ${timeoutMs} ms`);
    if (call !== undefined) {
      this.#settle(call, new HsmError('timeout', `The HSM took more than ${timeoutMs} ms to answer`));
    }
    // The replacement connects now, not inside the next request's deadline.
    this.#startIfNone();
    this.#dispatch();
  }

  #settle(call: Call, outcome: HsmResponse | HsmError): void {
    clearTimeout(call.timer);
    if (outcome instanceof HsmError) call.reject(outcome);
    else call.resolve(outcome);
  }
}

/** The buffers of an answer (they arrive as Uint8Arrays), `count` of them. */
function buffers(data: Uint8Array[] | undefined, count: number): Buffer[] {
  if (data?.length !== count) throw new HsmError('failed', 'HSM worker: a malformed answer');
  return data.map((bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}
