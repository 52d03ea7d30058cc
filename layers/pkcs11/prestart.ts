// Imported first by each handler (functions/*.ts): the HSM worker thread starts while the rest of
// the handler's modules load (layers/pkcs11/worker-hsm.ts prestartWorker), not after them.
import { prestartWorker } from './worker-hsm.ts';

prestartWorker();
