// An abandoned HSM worker (layers/pkcs11/worker-hsm.ts) must not take its PKCS#11 library with it.
// A worker that ends closes its handle on the library; a terminated one runs no C_Finalize. When
// the abandoned worker is the last holder (its replacement has not loaded the library yet, or is
// gone too), a library written in C would be unloaded while still initialised: its state lost, and
// with a network HSM's client library, its own threads left running in unmapped code. The fault
// module (a C library over SoftHSM) shows both: it is unmapped, and its rules' counters start over.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HsmError } from '../../layers/pkcs11/hsm.ts';
import { WorkerHsm } from '../../layers/pkcs11/worker-hsm.ts';
import { buildFaultModule, faultHsmInThisProcess } from '../helpers/fault-hsm.ts';

const { setup, control } = faultHsmInThisProcess('worker-abandon');

const modulePath = buildFaultModule();
const options = {
  pkcs11: { modulePath, tokenLabel: setup.config.hsm.tokenLabel, pin: setup.config.hsm.pin as string },
  callTimeoutMs: 100,
  startTimeoutMs: 10_000,
};
const loaded = () => readFileSync('/proc/self/maps', 'utf8').includes(modulePath);

test('the PKCS#11 library stays loaded, with its state, after an abandoned worker ends as its last user', async () => {
  const first = new WorkerHsm(options);
  const key = await first.findKey('foo');
  assert.ok(key, 'key foo');
  assert.ok(loaded(), 'the worker loaded the library');

  // Stuck past the deadline: abandoned, and a replacement starts; closing ends the replacement too.
  control.set(['C_EncryptInit delay 300 count=1']);
  await assert.rejects(
    first.encrypt(key, Buffer.alloc(32), Buffer.alloc(0)),
    (err) => err instanceof HsmError && err.kind === 'timeout',
  );
  first.close();
  // The stuck call returns after 300 ms; its thread then ends.
  await sleep(800);
  assert.ok(loaded(), 'the library is still loaded with no worker left');

  // A new worker finds the library as it was: the rule that fired once does not fire again.
  const second = new WorkerHsm(options);
  const sealed = await second.encrypt(
    (await second.findKey('foo')) ?? assert.fail('key foo'),
    Buffer.alloc(32),
    Buffer.alloc(0),
  );
  assert.equal(sealed.ciphertext.length, 32);
  second.close();
});
