// The main thread <-> HSM worker channel (layers/pkcs11/wire.ts): messages, and the spin that
// saves a thread wake-up per HSM call (hsm.spinMicros).
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  createChannel,
  IDLE,
  REQUEST,
  RESPONSE,
  readMessage,
  STATE,
  spinUntil,
  writeMessage,
} from '../../layers/pkcs11/wire.ts';

describe('wire: messages', () => {
  test('a header and binary fields come back as written, as copies', () => {
    const channel = createChannel();
    const fields = [Buffer.from('iv-iv-iv-iv!'), Buffer.alloc(0), Buffer.alloc(70_000, 7)];
    writeMessage(channel, { op: 'encrypt', label: 'foo', version: 2 }, fields);
    const { header, buffers } = readMessage<{ op: string; label: string; version: number }>(channel);
    assert.deepEqual(header, { op: 'encrypt', label: 'foo', version: 2 });
    assert.deepEqual(buffers, fields);
    channel.bytes.fill(0);
    assert.deepEqual(buffers[2], Buffer.alloc(70_000, 7), 'the channel is reused at once: copies');
  });

  test('a message larger than the channel is a RangeError, not a partial write', () => {
    const channel = createChannel();
    assert.throws(() => writeMessage(channel, {}, [Buffer.alloc(channel.bytes.length)]), RangeError);
  });
});

describe('wire: spinUntil', () => {
  test('0 us: looks once, never waits', () => {
    let calls = 0;
    assert.equal(
      spinUntil(0, () => ++calls > 5),
      false,
    );
    assert.equal(calls, 1);
    assert.equal(
      spinUntil(0, () => true),
      true,
    );
  });

  test('gives up after about its time when nothing comes', () => {
    const start = performance.now();
    assert.equal(
      spinUntil(2000, () => false),
      false,
    );
    const ms = performance.now() - start;
    assert.ok(ms >= 2 && ms < 200, `${ms} ms`);
  });

  test('sees another thread change the state while spinning', async () => {
    const channel = createChannel();
    Atomics.store(channel.control, STATE, REQUEST);
    // The worker stores RESPONSE only once told the spin is about to start, so the spin is what sees it.
    const go = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(
      `const { workerData } = require('node:worker_threads');
       const control = new Int32Array(workerData.shared, 0, 4);
       const go = new Int32Array(workerData.go);
       Atomics.wait(go, 0, 0);
       const until = performance.now() + 1;
       while (performance.now() < until);
       Atomics.store(control, ${STATE}, ${RESPONSE});`,
      { eval: true, workerData: { shared: channel.shared, go: go.buffer } },
    );
    // Listening from the start: a worker that ends quickly emits 'online' and 'exit' in one tick
    // (seen under load: a listener added after 'online' waited forever).
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    await new Promise((resolve) => worker.once('online', resolve));
    Atomics.store(go, 0, 1);
    Atomics.notify(go, 0);
    // Spins (never sleeps) for up to 5 s: the worker's store ends it.
    const seen = spinUntil(5_000_000, () => Atomics.load(channel.control, STATE) !== REQUEST);
    await exited;
    assert.equal(seen, true);
    assert.equal(Atomics.load(channel.control, STATE), RESPONSE);
    assert.notEqual(RESPONSE, IDLE);
  });
});
