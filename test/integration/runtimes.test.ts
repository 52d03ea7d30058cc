// Two runtimes in one process (functions/runtime.ts createRuntime), each made from its own
// configuration object, nothing passed through process.env: each answers with its own key stores,
// credentials and settings, keeps its own audit chain under its own key, and closing one leaves the
// other serving. Both on one SoftHSM token, as two Lambda functions share an HSM.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type AuditRecord, auditRecordsIn, verifyAudit } from '../../functions/audit.ts';
import { parseConfig } from '../../functions/config.ts';
import { createXksApi, type XksApi } from '../../functions/handlers.ts';
import { createRuntime, type Runtime } from '../../functions/runtime.ts';
import { lambdaContext, signedEvent } from '../helpers/events.ts';
import { assertNoLeaks, captureLogs } from '../helpers/leaks.ts';
import { createTestSetup, metadata, randomCredential, type TestSetup } from '../helpers/proxy.ts';
import type { Credential } from '../helpers/sign.ts';

let setup: TestSetup;
let logs: ReturnType<typeof captureLogs>;
const sides = {
  a: { prefix: '/a', vendor: 'vendor A', credential: randomCredential(), key: randomBytes(32) },
  b: { prefix: '/b', vendor: 'vendor B', credential: randomCredential(), key: randomBytes(32) },
};
type Side = keyof typeof sides;
const runtimes = {} as Record<Side, Runtime>;
const apis = {} as Record<Side, XksApi>;

before(async () => {
  setup = createTestSetup();
  // The token's own environment (SoftHSM's configuration file), which the PKCS#11 library reads.
  Object.assign(process.env, setup.env);
  logs = captureLogs();
  for (const side of ['a', 'b'] as const) {
    const { prefix, vendor, credential, key } = sides[side];
    const keyFile = join(setup.dir, `audit-${side}.key`);
    writeFileSync(keyFile, key.toString('hex'), { mode: 0o600 });
    const config = parseConfig(
      {
        ...setup.config,
        proxy: { ...setup.config.proxy, vendor },
        audit: { keyFile },
        keystores: [{ name: side, pathPrefix: prefix, credentials: [credential], keys: ['foo'] }],
      },
      {},
    );
    runtimes[side] = await createRuntime(config);
    apis[side] = createXksApi(runtimes[side]);
  }
});

after(() => {
  for (const runtime of Object.values(runtimes)) runtime.close();
  logs.restore();
  rmSync(setup.dir, { recursive: true, force: true });
});

async function call(
  side: Side,
  route: string,
  body: unknown,
  options: { prefix?: string; credential?: Credential } = {},
) {
  const handler = route === 'health' ? apis[side].handlers.GetHealthStatus : apis[side].handlers.Encrypt;
  const event = await signedEvent({
    path: `${options.prefix ?? sides[side].prefix}/kms/xks/v1/${route}`,
    body,
    credential: options.credential ?? sides[side].credential,
  });
  const res = await handler(event, lambdaContext(`xks-${side}`));
  return { status: res.statusCode, body: JSON.parse(res.body) };
}

const encryptBody = () => ({
  requestMetadata: metadata('Encrypt'),
  plaintext: randomBytes(32).toString('base64'),
  encryptionAlgorithm: 'AES_GCM',
});
const healthBody = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };

test('each runtime answers with its own key stores and credentials', async () => {
  assert.equal((await call('a', 'keys/foo/encrypt', encryptBody())).status, 200);
  assert.equal((await call('b', 'keys/foo/encrypt', encryptBody())).status, 200);
  // The other runtime's key store is no key store here.
  const elsewhere = await call('a', 'keys/foo/encrypt', encryptBody(), { prefix: '/b' });
  assert.equal(elsewhere.status, 404);
  assert.equal(elsewhere.body.errorName, 'InvalidUriPathException');
  // The other runtime's credential is no credential here.
  const stranger = await call('b', 'keys/foo/encrypt', encryptBody(), { credential: sides.a.credential });
  assert.equal(stranger.status, 401);
  assert.equal(stranger.body.errorName, 'AuthenticationFailedException');
});

test('each runtime reports its own settings', async () => {
  for (const side of ['a', 'b'] as const) {
    const res = await call(side, 'health', healthBody);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.xksProxyVendor, sides[side].vendor);
  }
});

test('each runtime keeps its own audit chain, verifiable with its own key only', () => {
  const records = [...auditRecordsIn(logs.text())];
  const chains = new Map<string, AuditRecord[]>();
  for (const record of records) chains.set(record.chain, [...(chains.get(record.chain) ?? []), record]);
  assert.deepEqual([...chains.keys()].sort(), [runtimes.a.audit.id, runtimes.b.audit.id].sort());
  for (const side of ['a', 'b'] as const) {
    const own = chains.get(runtimes[side].audit.id) ?? [];
    assert.ok(own.length >= 4, `${side}: ${own.length} records`);
    assert.ok(own.every((r) => r.type !== 'request' || r.keystore === undefined || r.keystore === side));
    assert.deepEqual(verifyAudit(own, { keys: [sides[side].key] }).problems, []);
    const other = side === 'a' ? sides.b.key : sides.a.key;
    assert.ok(verifyAudit(own, { keys: [other] }).problems.length >= own.length);
  }
});

test('closing one runtime leaves the other serving', async () => {
  runtimes.a.close();
  assert.equal((await call('b', 'keys/foo/encrypt', encryptBody())).status, 200);
  assert.equal((await call('b', 'health', healthBody)).status, 200);
});

test('nothing sensitive in the captured logs', () => {
  assertNoLeaks(
    logs.text(),
    [...setup.secrets, sides.a.credential.secretAccessKey, sides.b.credential.secretAccessKey],
    [sides.a.key, sides.b.key],
  );
});
