// An HSM worker thread: owns one Pkcs11Hsm (its library, session and key cache) and answers the
// main thread's calls, one at a time, by message (worker-hsm.ts). A call that hangs here blocks only
// this thread: the main thread gives up at its deadline and starts another worker.
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { HsmError, type HsmInfo, type HsmKey, type KeyUsage } from './hsm.ts';
import type { Pkcs11Config, Pkcs11Hsm } from './pkcs11-hsm.ts';

/** What a worker is told at start (workerData), or by its first message when it was prestarted. */
export interface WorkerInit {
  /** The configuration, without its functions (they do not cross threads). */
  config: Omit<Pkcs11Config, 'canFinalize' | 'exclusive' | 'now'>;
  /** The process-wide lock of library-wide steps: [0] the threadId holding it, or 0. */
  lock: SharedArrayBuffer;
  /** [0]: how many worker threads of this process use the same library (worker-hsm.ts). */
  users: SharedArrayBuffer;
}

export interface WorkerRequest {
  op: 'findKey' | 'encrypt' | 'decrypt';
  label: string;
  version?: number;
  /** encrypt: plaintext, AAD; decrypt: IV, ciphertext, tag, AAD. */
  data?: Uint8Array[];
}

export type HsmKeyWire = Omit<HsmKey, 'usage'> & { usage: KeyUsage[] };

export interface WorkerResponse {
  key?: HsmKeyWire;
  /** encrypt: IV, ciphertext, tag; decrypt: plaintext. */
  data?: Uint8Array[];
  error?: { kind: HsmError['kind']; message: string; ckr?: string };
  /** What the HSM says about itself, when it changed since the last message. */
  info?: HsmInfo;
  /** Re-initialisations and the like, for the main thread to log. */
  events?: string[];
}

/** The worker's first message, once its library is loaded and it has tried to connect. */
export interface WorkerReady {
  ready: true;
  info?: HsmInfo;
  /** Why it could not connect (never a secret), for a start-up error line. */
  failure?: string;
}

const port = parentPort;
if (port === null) throw new Error('hsm-worker.ts runs as a worker thread');

const init: WorkerInit = (workerData as { deferred?: boolean }).deferred
  ? await new Promise<WorkerInit>((resolve) => port.once('message', resolve))
  : (workerData as WorkerInit);
const lock = new Int32Array(init.lock);
const users = new Int32Array(init.users);

let hsm: Pkcs11Hsm | undefined;
let loadError: HsmError | undefined;
try {
  // Imported here, not statically: a pkcs11js that cannot load (a layer built for another
  // architecture) is then reported to every call, instead of a worker that dies at start.
  const { Pkcs11Hsm } = await import('./pkcs11-hsm.ts');
  hsm = new Pkcs11Hsm({ ...init.config, canFinalize: () => Atomics.load(users, 0) <= 1, exclusive });
} catch (err) {
  loadError = new HsmError('unavailable', `PKCS#11 library not loaded: ${(err as Error).message}`);
}
let infoSent = hsm?.info();
const failure = loadError ?? hsm?.connectionError();
port.postMessage({
  ready: true,
  ...(infoSent === undefined ? {} : { info: infoSent }),
  ...(failure === undefined ? {} : { failure: failure.message }),
} satisfies WorkerReady);

port.on('message', (request: WorkerRequest) => {
  let response: WorkerResponse;
  try {
    if (hsm === undefined) throw loadError;
    response = serve(hsm, request);
  } catch (err) {
    const e =
      err instanceof HsmError ? err : new HsmError('failed', `HSM worker: ${(err as Error)?.message ?? err}`);
    response = { error: { kind: e.kind, message: e.message, ...(e.ckr ? { ckr: e.ckr } : {}) } };
  }
  const events = hsm?.takeEvents() ?? [];
  if (events.length > 0) response.events = events;
  const info = hsm?.info();
  if (info !== infoSent && info !== undefined) {
    response.info = info;
    infoSent = info;
  }
  port.postMessage(response);
});

function serve(hsm: Pkcs11Hsm, request: WorkerRequest): WorkerResponse {
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
 * A library-wide step (C_Initialize, C_Finalize, the slot search), one thread of the process at a
 * time. The lock holds its holder's threadId: a worker terminated inside a step (abandoned at its
 * deadline) runs no `finally`, and the main thread releases its lock when it ends (worker-hsm.ts).
 */
function exclusive<T>(step: () => T): T {
  for (;;) {
    const holder = Atomics.compareExchange(lock, 0, 0, threadId);
    if (holder === 0) break;
    Atomics.wait(lock, 0, holder, 50);
  }
  try {
    return step();
  } finally {
    Atomics.compareExchange(lock, 0, threadId, 0);
    Atomics.notify(lock, 0);
  }
}
