// The young-generation collector's rules (functions/young-gc.ts), with V8's real heap and a gc()
// that records its calls or fails: test/integration/lambda-process.test.ts runs the real gc() in the
// Lambda handler.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getHeapSpaceStatistics } from 'node:v8';
import { YoungGenerationCollector } from '../../functions/young-gc.ts';

/** Allocates until the young generation is at least three quarters full. */
function fillYoungGeneration(): unknown[] {
  const kept: unknown[] = [];
  for (let i = 0; i < 10_000_000; i++) {
    kept.push({ i });
    if (kept.length > 1000) kept.length = 0;
    if (i % 100 !== 0) continue;
    const young = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space');
    if (young && young.space_available_size < (young.space_used_size + young.space_available_size) / 8) {
      return kept;
    }
  }
  throw new Error('the young generation never filled');
}

test('without gc() (node --expose-gc) there is no collector', () => {
  assert.equal(YoungGenerationCollector.create(undefined), undefined);
});

test('collects during a call of a kind that took a while, never during one that did not', () => {
  const calls: unknown[] = [];
  const collector = YoungGenerationCollector.create(((options: unknown) => {
    calls.push(options);
  }) as NodeJS.GCFunction);
  assert.ok(collector);
  collector.took('findKey', 0.02);
  collector.took('encrypt', 6.5);
  fillYoungGeneration();
  collector.whileWaiting('findKey');
  collector.whileWaiting('decrypt');
  assert.equal(calls.length, 0, 'a cached key lookup, and a kind not seen yet');
  collector.whileWaiting('encrypt');
  assert.deepEqual(calls, [{ type: 'minor' }]);
});

test('a gc() that fails never fails the request, and is not called again', () => {
  let calls = 0;
  const collector = YoungGenerationCollector.create((() => {
    calls++;
    throw new TypeError('options not supported');
  }) as NodeJS.GCFunction);
  assert.ok(collector);
  collector.took('encrypt', 6.5);
  fillYoungGeneration();
  assert.doesNotThrow(() => collector.whileWaiting('encrypt'));
  fillYoungGeneration();
  collector.whileWaiting('encrypt');
  assert.equal(calls, 1);
});
