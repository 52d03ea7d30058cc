// The price of per-call deadlines: the same AES-GCM encrypt of 32 bytes through an HSM worker
// thread (layers/pkcs11/worker-hsm.ts, a message each way, as the proxy runs it) and called on this
// thread (Pkcs11Hsm), interleaved, in one process: docs/performance.md.
//
//   node bench/hsm-handoff.ts [iterations]
import { performance } from 'node:perf_hooks';
import type { HsmKey } from '../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../layers/pkcs11/pkcs11-hsm.ts';
import { WorkerHsm } from '../layers/pkcs11/worker-hsm.ts';
import { benchSetup, removeSetup } from './lib/requests.ts';

const iterations = Number(process.argv[2] ?? 10_000);
const setup = benchSetup();
process.env.SOFTHSM2_CONF = setup.softhsmConf;
try {
  const pkcs11 = {
    modulePath: setup.config.hsm.modulePath,
    tokenLabel: setup.config.hsm.tokenLabel,
    pin: setup.config.hsm.pin as string,
  };
  const worker = new WorkerHsm({ pkcs11, callTimeoutMs: 1000, startTimeoutMs: 10_000 });
  const inline = new Pkcs11Hsm(pkcs11);
  const plaintext = Buffer.alloc(32, 1);
  const aad = Buffer.alloc(16, 2);
  const p50 = async (encrypt: (key: HsmKey) => unknown, key: HsmKey): Promise<number> => {
    const times: number[] = [];
    for (let i = 0; i < iterations; i++) {
      const start = performance.now();
      await encrypt(key);
      times.push(performance.now() - start);
    }
    return (times.sort((a, b) => a - b)[Math.floor(iterations / 2)] as number) * 1000;
  };
  const key = (await worker.findKey('foo')) ?? inline.findKey('foo');
  if (key === undefined) throw new Error('no key foo');
  const us = (n: number) => n.toFixed(1);
  for (let round = 1; round <= 3; round++) {
    const through = await p50((k) => worker.encrypt(k, plaintext, aad), key);
    const here = await p50((k) => inline.encrypt(k, plaintext, aad), key);
    console.log(
      `round ${round}: encrypt 32 B p50 ${us(here)} us on this thread, ${us(through)} us through the worker (+${us(through - here)})`,
    );
  }
  worker.close();
  inline.close();
} finally {
  removeSetup(setup);
}
