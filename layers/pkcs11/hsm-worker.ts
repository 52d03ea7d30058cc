// An HSM worker thread: owns one Pkcs11Hsm (its library, session and key cache) and answers the
// main thread's calls one at a time (wire.ts). A call that hangs here blocks only this thread: the
// main thread gives up at its deadline and starts another worker.
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { HsmError, type HsmInfo, type HsmKey } from './hsm.ts';
import type { Pkcs11Config, Pkcs11Hsm } from './pkcs11-hsm.ts';
import {
  createChannel,
  IDLE,
  REQUEST,
  RESPONSE,
  readMessage,
  STATE,
  signal,
  spinUntil,
  writeMessage,
} from './wire.ts';

export interface WorkerRequest {
  op: 'findKey' | 'encrypt' | 'decrypt';
  label: string;
  version?: number;
}

export interface WorkerResponse {
  key?: HsmKeyWire;
  error?: { kind: HsmError['kind']; message: string; ckr?: string };
  /** What the HSM says about itself, when it changed since the last response. */
  info?: HsmInfo;
  /** Re-initialisations and the like, for the main thread to log. */
  events?: string[];
}

export type HsmKeyWire = Omit<HsmKey, 'usage'> & { usage: string[] };

/** What a worker is told at start (workerData), or once its configuration is known (prestartWorker). */
export interface WorkerInit {
  shared: SharedArrayBuffer;
  config: Pkcs11Config;
  /** How many workers of this process use the same PKCS#11 library (worker-hsm.ts). */
  libraryUsers: SharedArrayBuffer;
  /** How long to spin for the next call after answering one (worker-hsm.ts). */
  spinMicros: number;
}

const { shared, config, libraryUsers, spinMicros } = (workerData as { deferred?: boolean }).deferred
  ? await new Promise<WorkerInit>((resolve) => parentPort?.once('message', resolve))
  : (workerData as WorkerInit);
const channel = createChannel(shared);
/** [0]: the library's users in this process; [1]: the threadId of the one running a library-wide step, or 0. */
const shared32 = new Int32Array(libraryUsers);

let hsm: Pkcs11Hsm | undefined;
let loadError: HsmError | undefined;
try {
  // Imported here, not statically: a pkcs11js that cannot load (a layer built for another
  // architecture) is then reported to every call, instead of a worker that dies at start.
  const { Pkcs11Hsm } = await import('./pkcs11-hsm.ts');
  hsm = new Pkcs11Hsm({ ...config, canFinalize: () => Atomics.load(shared32, 0) <= 1, exclusive });
} catch (err) {
  // The library itself did not load: every call reports it.
  loadError = new HsmError('unavailable', `PKCS#11 library not loaded: ${(err as Error).message}`);
}
// Said at once, not only to the first call: an HSM that cannot serve is a start-up error to log.
const startFailure = loadError ?? hsm?.connectionError();
if (startFailure !== undefined) parentPort?.postMessage({ connectFailure: startFailure.message });
let infoSent: HsmInfo | undefined;

signal(channel, IDLE);
for (;;) {
  const state = Atomics.load(channel.control, STATE);
  if (state !== REQUEST) {
    // Under load the next call comes within microseconds: spin for it before sleeping.
    if (spinUntil(spinMicros, () => Atomics.load(channel.control, STATE) === REQUEST)) continue;
    Atomics.wait(channel.control, STATE, state);
    continue;
  }
  const { header, buffers } = readMessage<WorkerRequest>(channel);
  let response: WorkerResponse;
  let out: Buffer[] = [];
  try {
    if (hsm === undefined) throw loadError;
    [response, out] = serve(hsm, header, buffers);
  } catch (err) {
    const e =
      err instanceof HsmError ? err : new HsmError('failed', `HSM worker: ${(err as Error)?.message ?? err}`);
    response = { error: { kind: e.kind, message: e.message, ...(e.ckr ? { ckr: e.ckr } : {}) } };
    out = [];
  }
  const events = hsm?.takeEvents() ?? [];
  if (events.length > 0) response.events = events;
  const info = hsm?.info();
  if (info !== infoSent && info !== undefined) {
    response.info = info;
    infoSent = info;
  }
  writeMessage(channel, response, out);
  signal(channel, RESPONSE);
}

/**
 * A library-wide step (C_Initialize, C_Finalize), one worker of the library at a time. The lock
 * holds its holder's threadId: a worker terminated inside a step (abandoned at its deadline) runs
 * no `finally`, and the main thread releases its lock when it ends (worker-hsm.ts).
 */
function exclusive<T>(step: () => T): T {
  for (;;) {
    const holder = Atomics.compareExchange(shared32, 1, 0, threadId);
    if (holder === 0) break;
    Atomics.wait(shared32, 1, holder, 50);
  }
  try {
    return step();
  } finally {
    Atomics.compareExchange(shared32, 1, threadId, 0);
    Atomics.notify(shared32, 1);
  }
}

function serve(hsm: Pkcs11Hsm, request: WorkerRequest, input: Buffer[]): [WorkerResponse, Buffer[]] {
  if (request.op === 'findKey') {
    const key = hsm.findKey(request.label, request.version);
    return [key === undefined ? {} : { key: { ...key, usage: [...key.usage] } }, []];
  }
  const key = hsm.findKey(request.label, request.version);
  if (key === undefined) throw new HsmError('failed', 'The key is no longer in the HSM');
  if (request.op === 'encrypt') {
    const [plaintext, aad] = input as [Buffer, Buffer];
    const out = hsm.encrypt(key, plaintext, aad);
    return [{}, [out.iv, out.ciphertext, out.tag]];
  }
  const [iv, ciphertext, tag, aad] = input as [Buffer, Buffer, Buffer, Buffer];
  return [{}, [hsm.decrypt(key, { iv, ciphertext, tag }, aad)]];
}
