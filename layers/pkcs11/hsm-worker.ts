// An HSM worker thread: owns one Pkcs11Hsm (its library, session and key cache) and answers the
// main thread's calls, one at a time, by message (worker-hsm.ts). A call that hangs here blocks only
// this thread: the main thread gives up at its deadline and starts another worker.
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { HsmError, type HsmInfo } from './hsm.ts';
import type { HsmRequest, HsmResponse, Pkcs11Config, Pkcs11Hsm } from './pkcs11-hsm.ts';

/** What a worker is told at start (workerData). */
export interface WorkerInit {
  /** The configuration, without its functions (they do not cross threads). */
  config: Omit<Pkcs11Config, 'canFinalize' | 'exclusive' | 'now'>;
  /** The process-wide lock of library-wide steps (pkcs11-hsm.ts sharedLibraryHsm). */
  lock: SharedArrayBuffer;
  /** [0]: how many users (threads) of this process use the same library (worker-hsm.ts). */
  users: SharedArrayBuffer;
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

const init = workerData as WorkerInit;
const users = new Int32Array(init.users);

let hsm: Pkcs11Hsm | undefined;
let loadError: HsmError | undefined;
try {
  // Imported here, not statically: a pkcs11js that cannot load (a layer built for another
  // architecture) is then reported to every call, instead of a worker that dies at start.
  const { sharedLibraryHsm } = await import('./pkcs11-hsm.ts');
  hsm = sharedLibraryHsm(init.config, { lock: init.lock, users, holder: threadId });
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

port.on('message', (request: HsmRequest) => {
  if (hsm === undefined) {
    const error = loadError as HsmError;
    port.postMessage({ error: { kind: error.kind, message: error.message } } satisfies HsmResponse);
    return;
  }
  const response = hsm.answer(request);
  const info = hsm.info();
  if (info !== infoSent && info !== undefined) {
    response.info = info;
    infoSent = info;
  }
  port.postMessage(response);
});
