// Names a request controls become object keys on the way in: header names, query parameter names,
// JSON field names (local server, middleware, SigV4 canonicalization, authorization, audit). A
// property over Object.prototype's own names (constructor, __proto__, toString, hasOwnProperty,
// valueOf, ...) in each place, through the real local proxy: every request gets the answer the same
// request with an ordinary name gets, never a 500, and leaves one log line with its audit record.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { fuzzParameters } from '../helpers/fuzz.ts';
import { metadata, PREFIX, ROOT, type RunningProxy, randomCredential, startProxy } from '../helpers/proxy.ts';
import { aws4Sign, smithySign } from '../helpers/sign.ts';

/** Object.prototype's own names, and case variants of them (header names are case-insensitive). */
const PROTO_NAMES = Object.getOwnPropertyNames(Object.prototype);
const name = fc.oneof(
  fc.constantFrom(...PROTO_NAMES),
  fc.constantFrom(...PROTO_NAMES).map((n) => n.toUpperCase()),
  fc.constantFrom(...PROTO_NAMES).map((n) => `${n[0]?.toUpperCase()}${n.slice(1)}`),
);

let proxy: RunningProxy;
before(async () => {
  proxy = await startProxy();
});
after(() => proxy?.stop());

const requestIds: string[] = [];

test('prototype-names: Object.prototype names as headers, query names and JSON fields: the ordinary answer, logged and audited', async () => {
  const cases = fc.record({
    where: fc.constantFrom('header', 'signed-header', 'query', 'body', 'metadata', 'nested'),
    name,
    value: fc.oneof(fc.constant('1'), fc.constant('{}'), fc.constant('[]'), fc.constant('null')),
    route: fc.constantFrom('health', 'keys/foo/metadata', 'keys/foo/encrypt'),
    signer: fc.constantFrom('smithy', 'aws4', 'none'),
  });
  await fc.assert(
    fc.asyncProperty(cases, async (c) => {
      const kmsRequestId = `names-${randomBytes(6).toString('hex')}`;
      requestIds.push(kmsRequestId);
      const m = { ...metadata('Encrypt'), kmsRequestId };
      const base: Record<string, unknown> =
        c.route === 'health'
          ? { requestMetadata: { kmsRequestId, kmsOperation: 'KmsHealthCheck' } }
          : c.route === 'keys/foo/metadata'
            ? { requestMetadata: m }
            : { requestMetadata: m, plaintext: 'AAAAAAAAAAAAAAAAAAAAAA==', encryptionAlgorithm: 'AES_GCM' };
      // Field names inserted as JSON text: an object literal's __proto__ would set a prototype.
      let body = JSON.stringify(base);
      const field = `${JSON.stringify(c.name)}:${c.value === '1' ? '"1"' : c.value}`;
      if (c.where === 'body') body = `{${field},${body.slice(1)}`;
      if (c.where === 'metadata') body = body.replace('"requestMetadata":{', `"requestMetadata":{${field},`);
      if (c.where === 'nested') body = `{"extra":{${field}},${body.slice(1)}`;
      const path = `${PREFIX}/kms/xks/v1/${c.route}${c.where === 'query' ? `?${c.name}=${c.value}` : ''}`;
      const extra = c.where === 'header' || c.where === 'signed-header' ? { [c.name]: c.value } : {};
      const credential =
        c.signer === 'none' ? randomCredential() : (proxy.credentials[0] as (typeof proxy.credentials)[0]);
      const toSign = {
        host: proxy.host,
        path,
        body,
        credential,
        headers: c.where === 'signed-header' ? extra : {},
      };
      const signed = c.signer === 'aws4' ? aws4Sign(toSign) : await smithySign(toSign);
      const headers = { ...signed, 'content-type': 'application/json', ...extra };
      const res = await proxy.send({ path, headers, body });
      assert.notEqual(res.status, 500, res.text);
      assert.ok(res.json !== undefined, `a JSON body: ${res.text}`);
      if (c.signer === 'none') {
        assert.equal(res.status, 401, res.text);
      } else if (c.where === 'query') {
        assert.equal(res.status, 401, res.text);
        assert.equal(res.json.errorMessage, 'SigV4 authentication failed: XKS requests have no query string');
      } else {
        assert.equal(res.status, 200, `${JSON.stringify(c)}: ${res.text}`);
      }
    }),
    fuzzParameters('test/integration/request-names.test.ts', 'prototype-names', 120, (v) =>
      JSON.stringify(v),
    ),
  );
});

test('each of those requests left exactly one log line with its audit record; the chain verifies', async () => {
  const output = await proxy.settledOutput();
  const lines = output.split('\n').filter((l) => l.includes('"message":"XKS request"'));
  for (const id of requestIds) {
    const mine = lines.filter((l) => l.includes(`"${id}"`));
    assert.equal(mine.length, 1, `${id}: ${mine.length} lines`);
    assert.match(mine[0] as string, /"audit":\{[^}]*"mac":"[0-9a-f]{64}"/);
  }
  const log = join(proxy.dir, 'proxy.log');
  writeFileSync(log, output);
  const run = spawnSync(
    process.execPath,
    [join(ROOT, 'bin/xks-proxy.ts'), 'audit', 'verify', '--key-file', proxy.auditKeyFile, log],
    { encoding: 'utf8' },
  );
  assert.equal(run.status, 0, run.stdout + run.stderr);
});
