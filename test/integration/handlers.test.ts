// The Lambda handlers called in-process with API Gateway and ALB events, as Lambda calls them: the
// path the client signed (requestContext.path, with the stage; ALB's path, percent-encoding and
// all) vs the route, body encodings, the response in each event's shape, the key store quota
// behind each front door, the Powertools log lines and EMF metrics, cold start, and concurrent
// invocations.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type { ALBResult } from 'aws-lambda';
import { parseConfig } from '../../functions/config.ts';
import { createXksApi, type LambdaHandler } from '../../functions/handlers.ts';
import { xksHandler } from '../../functions/middleware.ts';
import { encrypt } from '../../functions/operations/encrypt.ts';
import { createRuntime, type Runtime } from '../../functions/runtime.ts';
import type { EncryptRequest } from '../../functions/schemas.ts';
import {
  type AlbEventOptions,
  type EventOptions,
  lambdaContext,
  signedAlbEvent,
  signedEvent,
} from '../helpers/events.ts';
import { assertNoLeaks, captureLogs } from '../helpers/leaks.ts';
import { createTestSetup, metadata, PREFIX, type TestSetup } from '../helpers/proxy.ts';

let setup: TestSetup;
let runtime: Runtime;
let handlers: Record<'health' | 'metadata' | 'encrypt' | 'decrypt', LambdaHandler>;
let logs: ReturnType<typeof captureLogs>;
const sensitive: Buffer[] = [];

before(async () => {
  setup = createTestSetup();
  // The token's own environment (SoftHSM's configuration file), which the PKCS#11 library reads.
  Object.assign(process.env, setup.env);
  // What Lambda sets for an on-demand environment: Powertools then reports the cold start.
  process.env.AWS_LAMBDA_INITIALIZATION_TYPE = 'on-demand';
  process.env.AWS_LAMBDA_FUNCTION_NAME = 'xks-test';
  logs = captureLogs();
  runtime = await createRuntime(parseConfig(setup.config, {}), { inLambda: true });
  const api = createXksApi(runtime);
  handlers = {
    health: api.handlers.GetHealthStatus,
    metadata: api.handlers.GetKeyMetadata,
    encrypt: api.handlers.Encrypt,
    decrypt: api.handlers.Decrypt,
  };
});

after(() => {
  runtime.close();
  logs.restore();
  rmSync(setup.dir, { recursive: true, force: true });
});

function event(route: string, body: unknown, options: Partial<EventOptions> = {}) {
  return signedEvent({
    path: `${PREFIX}/kms/xks/v1/${route}`,
    body,
    credential: setup.credentials[0] as EventOptions['credential'],
    ...options,
  });
}

function albEvent(route: string, body: unknown, options: Partial<AlbEventOptions> = {}) {
  return signedAlbEvent({
    path: `${PREFIX}/kms/xks/v1/${route}`,
    body,
    credential: setup.credentials[0] as AlbEventOptions['credential'],
    ...options,
  });
}

function encryptBody() {
  const plaintext = randomBytes(32);
  sensitive.push(plaintext);
  return {
    requestMetadata: metadata('Encrypt'),
    plaintext: plaintext.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  };
}

function emf(): Array<Record<string, unknown>> {
  return logs
    .text()
    .split('\n')
    .filter((l) => l.startsWith('{"_aws"'))
    .map((l) => JSON.parse(l));
}

test('the first invocation reports a cold start, later ones do not', async () => {
  const health = { requestMetadata: { kmsRequestId: 'h-1', kmsOperation: 'KmsHealthCheck' } };
  const first = await handlers.health(await event('health', health), lambdaContext('xks-health'));
  assert.equal(first.statusCode, 200, first.body);
  await handlers.health(await event('health', health), lambdaContext('xks-health'));
  const coldStarts = emf().filter((m) => 'ColdStart' in m);
  assert.equal(coldStarts.length, 1);
  assert.equal(coldStarts[0]?.function_name, 'xks-health');
});

test('SigV4 covers the path the client sent, with the stage (requestContext.path)', async () => {
  const ok = await handlers.encrypt(
    await event('keys/foo/encrypt', encryptBody(), { stage: 'prod' }),
    lambdaContext(),
  );
  assert.equal(ok.statusCode, 200, ok.body);
  // Signed without the stage: not what the client sent, so not authentic.
  const bad = await handlers.encrypt(
    await event('keys/foo/encrypt', encryptBody(), {
      stage: 'prod',
      signedPath: `${PREFIX}/kms/xks/v1/keys/foo/encrypt`,
    }),
    lambdaContext(),
  );
  assert.equal(bad.statusCode, 401, bad.body);
});

test('a custom domain with a base path: routed on the resource, signed over the full path', async () => {
  const ok = await handlers.encrypt(
    await event('keys/foo/encrypt', encryptBody(), { basePath: 'xks' }),
    lambdaContext(),
  );
  assert.equal(ok.statusCode, 200, ok.body);
  const withStage = await handlers.health(
    await event(
      'health',
      { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } },
      { basePath: 'a/b', stage: 'v1' },
    ),
    lambdaContext(),
  );
  assert.equal(withStage.statusCode, 200, withStage.body);
});

test('bodies as UTF-8 strings or Base64, headers single- or multi-valued', async () => {
  for (const options of [{ base64: true }, { base64: false }, { singleValueHeaders: true }]) {
    const res = await handlers.encrypt(
      await event('keys/foo/encrypt', encryptBody(), options),
      lambdaContext(),
    );
    assert.equal(res.statusCode, 200, `${JSON.stringify(options)}: ${res.body}`);
  }
});

test('a handler given another route answers InvalidUriPathException', async () => {
  const res = await handlers.decrypt(await event('keys/foo/encrypt', encryptBody()), lambdaContext());
  assert.equal(res.statusCode, 404);
  assert.equal(JSON.parse(res.body).errorName, 'InvalidUriPathException');
});

test('metrics per route: requests, errors, latency, HSM latency; errors by errorName', async () => {
  logs.clear();
  await handlers.encrypt(await event('keys/foo/encrypt', encryptBody()), lambdaContext());
  await handlers.encrypt(await event('keys/impotent_key/encrypt', encryptBody()), lambdaContext());
  const documents = emf();
  assert.equal(documents.length, 3);
  const [success, failure] = documents.filter((m) => 'Requests' in m);
  const byName = documents.find((m) => 'ErrorsByName' in m);
  assert.equal(success?.operation, 'Encrypt');
  assert.equal(success?.Requests, 1);
  assert.equal(success?.Errors, 0);
  assert.equal(typeof success?.Latency, 'number');
  assert.ok((success?.HsmLatency as number) > 0);
  assert.equal(failure?.Errors, 1);
  // ErrorsByName is its own EMF document, with the errorName dimension.
  assert.equal(byName?.errorName, 'InvalidKeyUsageException');
  assert.equal(byName?.operation, 'Encrypt');
  // The dimension sets the dashboard and alarms read (infra/): service and operation, and errorName.
  const dimensions = (m: Record<string, unknown> | undefined) =>
    (m?._aws as { CloudWatchMetrics: Array<{ Dimensions: string[][] }> } | undefined)?.CloudWatchMetrics[0]
      ?.Dimensions;
  assert.deepEqual(dimensions(success), [['service', 'operation']]);
  assert.deepEqual(dimensions(failure), [['service', 'operation']]);
  assert.deepEqual(dimensions(byName), [['service', 'operation', 'errorName']]);
  assert.equal(success?.service, 'xks-proxy');
});

test("GetHealthStatus's deep check counts as HSM time (HsmLatency), as other routes' calls do", async () => {
  logs.clear();
  // A handler of its own: its cache of deep checks is empty, so the check runs now.
  const health = createXksApi(runtime).handlers.GetHealthStatus;
  const body = { requestMetadata: { kmsRequestId: 'hsm-time', kmsOperation: 'KmsHealthCheck' } };
  const res = await health(await event('health', body), lambdaContext());
  assert.equal(res.statusCode, 200, res.body);
  const document = emf().find((m) => m.operation === 'GetHealthStatus' && 'Requests' in m);
  assert.ok((document?.HsmLatency as number) > 0, JSON.stringify(document));
  assert.equal(document?.HsmUnavailable, 0);
  const line = logs
    .text()
    .split('\n')
    .find((l) => l.includes('"kmsRequestId":"hsm-time"'));
  assert.ok((JSON.parse(line ?? '{}').hsmLatencyMs as number) > 0, line);
});

/**
 * 40 Encrypt requests through `handler` at once, every other one refused (a key that may not
 * encrypt): each answer, and each request's log line, is its own.
 */
async function assertOverlapping(handler: LambdaHandler, prefix: string): Promise<void> {
  logs.clear();
  const results = await Promise.all(
    Array.from({ length: 40 }, async (_, i) => {
      const body = {
        ...encryptBody(),
        requestMetadata: metadata('Encrypt', { kmsRequestId: `${prefix}-${i}` }),
      };
      return handler(
        await event(`keys/${i % 2 === 0 ? 'foo' : 'decrypt_only_key'}/encrypt`, body),
        lambdaContext(),
      );
    }),
  );
  results.forEach((r, i) => {
    assert.equal(r.statusCode, i % 2 === 0 ? 200 : 400, r.body);
  });
  const lines = logs
    .text()
    .split('\n')
    .filter((l) => l.includes('"message":"XKS request"'))
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 40);
  for (const line of lines) {
    const i = Number(String(line.kmsRequestId).slice(prefix.length + 1));
    assert.equal(line.keyId, i % 2 === 0 ? 'foo' : 'decrypt_only_key', `line of ${prefix}-${i}`);
    assert.equal(line.outcome, i % 2 === 0 ? 'success' : 'error');
  }
}

test('concurrent invocations never mix their log fields', async () => {
  await assertOverlapping(handlers.encrypt, 'c');
});

test('handlers that wait: requests that overlap keep their own log fields and metrics', async () => {
  const pause = () => new Promise((r) => setTimeout(r, Math.random() * 20));
  const waiting = xksHandler<EncryptRequest>(runtime, 'Encrypt', async (request) => {
    await pause();
    const answer = await encrypt(request);
    await pause();
    return answer;
  });
  await assertOverlapping(waiting, 'w');
  const requests = emf().filter((m) => 'Requests' in m);
  assert.equal(requests.length, 40);
  assert.ok(requests.every((m) => m.Requests === 1 && m.operation === 'Encrypt'));
  assert.equal(requests.filter((m) => m.Errors === 1).length, 20);
  assert.equal(emf().filter((m) => m.ErrorsByName === 1).length, 20);
});

test('ALB events get ALB answers: a status description, and multi-value headers when the event has them', async () => {
  const multi = (await handlers.encrypt(
    await albEvent('keys/foo/encrypt', encryptBody()),
    lambdaContext(),
  )) as ALBResult;
  assert.equal(multi.statusCode, 200, multi.body);
  assert.equal(multi.statusDescription, '200 OK');
  assert.equal(multi.isBase64Encoded, false);
  assert.deepEqual(multi.multiValueHeaders, { 'content-type': ['application/json'] });
  assert.equal(multi.headers, undefined);
  assert.equal(typeof JSON.parse(multi.body ?? '').ciphertext, 'string');
  const single = (await handlers.encrypt(
    await albEvent('keys/nope/encrypt', encryptBody(), { singleValueHeaders: true, base64: true }),
    lambdaContext(),
  )) as ALBResult;
  assert.equal(single.statusCode, 404, single.body);
  assert.equal(single.statusDescription, '404 Not Found');
  assert.deepEqual(single.headers, { 'content-type': 'application/json' });
  assert.equal(single.multiValueHeaders, undefined);
  assert.equal(JSON.parse(single.body ?? '').errorName, 'KeyNotFoundException');
  // API Gateway's answers keep their shape.
  const api = await handlers.encrypt(await event('keys/foo/encrypt', encryptBody()), lambdaContext());
  assert.deepEqual(Object.keys(api).sort(), ['body', 'headers', 'statusCode']);
});

test('ALB: the function routes itself: another route, an unknown prefix, a path with more, GET', async () => {
  const refused = async (res: Promise<unknown>, status: number, errorName: string) => {
    const r = (await res) as ALBResult;
    assert.equal(r.statusCode, status, r.body);
    assert.equal(JSON.parse(r.body ?? '').errorName, errorName);
    return r;
  };
  // What the listener rules' patterns let through (`*/kms/xks/v1/keys/*/encrypt`) but is no route.
  await refused(
    handlers.decrypt(await albEvent('keys/foo/encrypt', encryptBody()), lambdaContext()),
    404,
    'InvalidUriPathException',
  );
  await refused(
    handlers.encrypt(
      await albEvent('keys/foo/encrypt', encryptBody(), { path: '/nowhere/kms/xks/v1/keys/foo/encrypt' }),
      lambdaContext(),
    ),
    404,
    'InvalidUriPathException',
  );
  await refused(
    handlers.encrypt(
      await albEvent('keys/foo/encrypt', encryptBody(), { path: `${PREFIX}/kms/xks/v1/keys/a/b/encrypt` }),
      lambdaContext(),
    ),
    404,
    'InvalidUriPathException',
  );
  const get = await refused(
    handlers.encrypt(await albEvent('keys/foo/encrypt', '', { method: 'GET' }), lambdaContext()),
    405,
    'MethodNotAllowed',
  );
  assert.deepEqual(get.multiValueHeaders?.allow, ['POST']);
  assert.equal(get.statusDescription, '405 Method Not Allowed');
});

test('SigV4 over the path exactly as the client sent it, percent-encoding included, behind both front doors', async () => {
  // `%66oo` is the key foo, signed as sent: each front door hands the function that path.
  const viaApi = await handlers.encrypt(await event('keys/%66oo/encrypt', encryptBody()), lambdaContext());
  assert.equal(viaApi.statusCode, 200, viaApi.body);
  const viaAlb = await handlers.encrypt(await albEvent('keys/%66oo/encrypt', encryptBody()), lambdaContext());
  assert.equal(viaAlb.statusCode, 200, viaAlb.body);
  // Signed over the encoded path, received decoded (or the reverse): not what was signed.
  for (const [path, signedPath] of [
    [`${PREFIX}/kms/xks/v1/keys/foo/encrypt`, `${PREFIX}/kms/xks/v1/keys/%66oo/encrypt`],
    [`${PREFIX}/kms/xks/v1/keys/%66oo/encrypt`, `${PREFIX}/kms/xks/v1/keys/foo/encrypt`],
  ] as const) {
    const res = await handlers.encrypt(
      await albEvent('', encryptBody(), { path, signedPath }),
      lambdaContext(),
    );
    assert.equal(res.statusCode, 401, `${path} signed as ${signedPath}: ${res.body}`);
  }
  // A key id outside the spec's alphabet once decoded: authenticated, then refused as invalid.
  for (const call of [
    async () =>
      handlers.metadata(
        await event('keys/a%20b/metadata', { requestMetadata: metadata('DescribeKey') }),
        lambdaContext(),
      ),
    async () =>
      handlers.metadata(
        await albEvent('keys/a%20b/metadata', { requestMetadata: metadata('DescribeKey') }),
        lambdaContext(),
      ),
  ]) {
    const res = await call();
    assert.equal(res.statusCode, 400, res.body);
    assert.equal(JSON.parse(res.body).errorName, 'ValidationException');
  }
});

test("a key store's quota: enforced by the function behind an ALB (per environment), left to API Gateway in front of it", async () => {
  const throttled = parseConfig(
    {
      ...setup.config,
      keystores: setup.config.keystores.map((ks) => ({ ...ks, throttle: { rateLimit: 1, burstLimit: 2 } })),
    },
    {},
  );
  const health = { requestMetadata: { kmsRequestId: 'q', kmsOperation: 'KmsHealthCheck' } };
  for (const frontDoor of ['alb', 'apigateway'] as const) {
    const own = await createRuntime(throttled, { inLambda: true, frontDoor });
    try {
      const handler = createXksApi(own).handlers.GetHealthStatus;
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        const e = frontDoor === 'alb' ? await albEvent('health', health) : await event('health', health);
        statuses.push((await handler(e, lambdaContext())).statusCode);
      }
      assert.deepEqual(
        statuses,
        frontDoor === 'alb' ? [200, 200, 429, 429] : [200, 200, 200, 200],
        frontDoor,
      );
    } finally {
      own.close();
    }
  }
});

test('nothing sensitive in the captured logs', () => {
  assertNoLeaks(logs.text(), setup.secrets, sensitive);
});
