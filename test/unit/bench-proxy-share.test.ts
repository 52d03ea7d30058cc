// The proxy's share of a request in the benchmark (bench/lib/proxy-share.ts): the log line's times
// as the proxy writes them, the pairing of timed calls with their lines, and its refusal of a
// pairing that cannot be right.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { proxyShare, requestTimes } from '../../bench/lib/proxy-share.ts';

// The shape of a request line (functions/middleware.ts respond), abridged.
const line = (latencyMs: number, hsmMs: number) =>
  `{"level":"INFO","message":"XKS request","timestamp":"2026-12-06T16:45:12.265Z","keyId":"foo",` +
  `"operation":"Encrypt","statusCode":200,"outcome":"success","latencyMs":${latencyMs},"hsmLatencyMs":${hsmMs},` +
  `"hsm":"4d3f","audit":{"type":"request","latencyMs":${latencyMs}}}`;

test('a request line gives latencyMs and hsmLatencyMs; other lines nothing', () => {
  assert.deepEqual(requestTimes(line(6.912, 2.549)), { latencyMs: 6.912, hsmMs: 2.549 });
  assert.equal(requestTimes('{"level":"WARN","message":"HSM event","event":"x"}'), undefined);
});

test('share = handler time − HSM time, per call, after the calls made before the timed loop', () => {
  const lines = [line(9, 9), line(9, 9), line(1.5, 1.2), line(2.1, 2), line(6.2, 6)].map((l) => {
    const t = requestTimes(l);
    assert.ok(t);
    return t;
  });
  const result = proxyShare([1600, 2300, 6400], 2, lines);
  assert.deepEqual(result.share.n, 3, 'one share per timed call, the two lines before the loop left out');
  assert.equal(result.share.min.toFixed(3), '0.300');
  assert.equal(result.share.max.toFixed(3), '0.400');
  assert.equal(result.hsm.p50, 2);
  assert.equal(result.handler.max, 6.4);
});

test('the calls a GC pause fell into are counted and left out of shareWithoutGc', () => {
  const lines = [line(1.5, 1.2), line(2.1, 2), line(6.2, 6)].map((l) => requestTimes(l) as never);
  const result = proxyShare([1600, 4100, 6400], 0, lines, [1]);
  assert.equal(result.gcCalls, 1);
  assert.equal(result.share.max.toFixed(3), '2.100', 'the paused call stays in the share');
  assert.equal(result.shareWithoutGc.n, 2);
  assert.equal(result.shareWithoutGc.max.toFixed(3), '0.400');
  assert.equal(proxyShare([1600, 4100, 6400], 0, lines).gcCalls, 0);
});

test('the calls the proxy collected during are counted apart, with their HSM time', () => {
  const lines = [line(1.5, 1.2), line(2.1, 2), line(6.2, 6)].map((l) => requestTimes(l) as never);
  const result = proxyShare([1600, 4100, 6400], 0, lines, [], [2]);
  assert.equal(result.gcCalls, 0);
  assert.equal(result.shareWithoutGc.n, 3, 'a collection in the HSM wait leaves the call in');
  assert.equal(result.forcedGcCalls, 1);
  assert.equal(result.hsmWithForcedGc?.p50, 6);
  assert.equal(proxyShare([1600, 4100, 6400], 0, lines).hsmWithForcedGc, undefined);
});

test('a misaligned pairing (a line slower than its handler call) or too few lines throws', () => {
  const lines = [line(1.5, 1.2), line(6.2, 6), line(2.1, 2)].map((l) => requestTimes(l) as never);
  assert.throws(() => proxyShare([1600, 2300, 6400], 0, lines), /misaligned/);
  assert.throws(() => proxyShare([1600, 2300], 2, lines), /3 request lines for 2 \+ 2 handler calls/);
});
