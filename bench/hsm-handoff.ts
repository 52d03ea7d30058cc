// The price of per-call deadlines: the same AES-GCM encrypt of 32 bytes through an HSM worker
// thread (layers/pkcs11/worker-hsm.ts, as the proxy runs it), sleeping at once (spinMicros 0) and
// spinning first (this machine's default, functions/config.ts defaultSpinMicros), and called on
// this thread (Pkcs11Hsm), interleaved, in one process: docs/performance.md.
//
//   node bench/hsm-handoff.ts [iterations]
import { performance } from 'node:perf_hooks';
import { defaultSpinMicros } from '../functions/config.ts';
import type { Hsm } from '../layers/pkcs11/hsm.ts';
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
  const spinMicros = defaultSpinMicros(process.env);
  const sleeping = new WorkerHsm({ pkcs11, callTimeoutMs: 1000, startTimeoutMs: 10_000, spinMicros: 0 });
  const spinning = new WorkerHsm({ pkcs11, callTimeoutMs: 1000, startTimeoutMs: 10_000, spinMicros });
  const inline = new Pkcs11Hsm(pkcs11);
  const plaintext = Buffer.alloc(32, 1);
  const aad = Buffer.alloc(16, 2);
  const p50 = (hsm: Hsm): number => {
    const key = hsm.findKey('foo');
    if (key === undefined) throw new Error('no key foo');
    const times: number[] = [];
    for (let i = 0; i < iterations; i++) {
      const start = performance.now();
      hsm.encrypt(key, plaintext, aad);
      times.push(performance.now() - start);
    }
    return (times.sort((a, b) => a - b)[Math.floor(iterations / 2)] as number) * 1000;
  };
  const us = (n: number) => n.toFixed(1);
  for (let round = 1; round <= 3; round++) {
    const slept = p50(sleeping);
    const spun = p50(spinning);
    const here = p50(inline);
    console.log(
      `round ${round}: encrypt 32 B p50 ${us(here)} us on this thread; through the worker ${us(slept)} us ` +
        `(+${us(slept - here)}) sleeping, ${us(spun)} us (+${us(spun - here)}) spinning ${spinMicros} us`,
    );
  }
  sleeping.close();
  spinning.close();
  inline.close();
} finally {
  removeSetup(setup);
}
