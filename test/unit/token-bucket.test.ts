// A key store's quota (functions/runtime.ts TokenBucket, spec: ThrottlingException) on a clock the
// test moves: the burst, the refill rate, the cap on what is saved up. No sleeping.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TokenBucket } from '../../functions/runtime.ts';

/** A bucket on a clock that only moves when the test says, in milliseconds. */
function bucket(rate: number, burst: number) {
  let now = 1_000_000;
  const quota = new TokenBucket(rate, burst, () => now);
  return {
    take: () => quota.take(),
    /** How many requests in a row are admitted now. */
    drain: () => {
      let admitted = 0;
      while (quota.take()) admitted++;
      return admitted;
    },
    advance: (ms: number) => {
      now += ms;
    },
  };
}

test('a full bucket admits the burst at once, then refuses', () => {
  const b = bucket(10, 5);
  assert.equal(b.drain(), 5);
  assert.equal(b.take(), false);
});

test('it refills at the rate: one request per 1/rate second, not before', () => {
  const b = bucket(10, 5);
  b.drain();
  b.advance(99);
  assert.equal(b.take(), false, 'after 99 ms at 10/s: no whole token yet');
  b.advance(1);
  assert.equal(b.take(), true, 'after 100 ms: one');
  assert.equal(b.take(), false);
  b.advance(350);
  assert.equal(b.drain(), 3, '350 ms at 10/s: 3.5 tokens, 3 whole');
  b.advance(50);
  assert.equal(b.drain(), 1, 'the half token left over counts');
});

test('what is saved up never exceeds the burst', () => {
  const b = bucket(10, 5);
  b.drain();
  b.advance(60_000);
  assert.equal(b.drain(), 5);
});

test('rates below one a second, and a refused request costs nothing', () => {
  const b = bucket(0.5, 1);
  assert.equal(b.drain(), 1);
  for (let i = 0; i < 10; i++) {
    b.advance(100);
    assert.equal(b.take(), false, `${(i + 1) * 100} ms`);
  }
  b.advance(1000);
  assert.equal(b.take(), true, 'two seconds in all: one token, the refused tries took none');
});
