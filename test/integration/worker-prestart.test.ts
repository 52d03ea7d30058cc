// The HSM worker started before the configuration is known (layers/pkcs11/worker-hsm.ts
// prestartWorker, imported first by every handler for the cold start): the first WorkerHsm hands
// it its configuration and it serves like any other; later ones start their own.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { prestartWorker, WorkerHsm } from '../../layers/pkcs11/worker-hsm.ts';
import { createTestSetup } from '../helpers/proxy.ts';

const setup = createTestSetup();
Object.assign(process.env, setup.env);
after(() => rmSync(setup.dir, { recursive: true, force: true }));

const options = {
  pkcs11: {
    modulePath: setup.config.hsm.modulePath,
    tokenLabel: setup.config.hsm.tokenLabel,
    pin: setup.config.hsm.pin as string,
  },
  callTimeoutMs: 2000,
  startTimeoutMs: 10_000,
};

async function roundTrip(hsm: WorkerHsm): Promise<void> {
  const key = await hsm.findKey('foo');
  assert.ok(key, 'key foo');
  const plaintext = Buffer.from('prestarted worker');
  const aad = Buffer.from('aad');
  const sealed = await hsm.encrypt(key, plaintext, aad);
  assert.deepEqual(await hsm.decrypt(key, sealed, aad), plaintext);
}

test('a prestarted worker waits for its configuration, then serves; the next WorkerHsm starts its own', async () => {
  prestartWorker();
  prestartWorker(); // a second call keeps the one waiting
  // Long enough for the worker to be up and waiting for its configuration.
  await sleep(500);
  const first = new WorkerHsm(options);
  const second = new WorkerHsm(options);
  try {
    await roundTrip(first);
    await roundTrip(second);
    assert.match(first.info()?.vendor ?? '', /SoftHSM/);
  } finally {
    first.close();
    second.close();
  }
});
