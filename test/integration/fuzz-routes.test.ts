// Property-based tests (fast-check) of the four routes' request handling (spec: API operations,
// Error codes): validly signed requests, so that they reach validation, with arbitrary bodies.
// Every answer is a success whose body has the spec's response shape (an Encrypt's result decrypts
// back), or a 400/404/405/501 whose {errorName} the spec's error table lists for that status and
// operation; never a 500, never a thrown exception, never a hang; nothing sensitive in the logs.
// Where the spec (or the proxy's documented limits, functions/xks.ts LIMITS) decides the outcome,
// the properties assert that outcome exactly.
//
// The bulk runs in-process against the Lambda handlers (as test/integration/handlers.test.ts does);
// raw bodies (invalid UTF-8, duplicate keys, deep nesting) also go over the wire to the local proxy.
//
// CI: FUZZ_RUNS cases per property (default 200), fixed seed. Long runs (or scripts/fuzz.sh) and replays:
//   FUZZ_RUNS=20000 node test/integration/fuzz-routes.test.ts
//   FUZZ_SEED=<seed> FUZZ_PATH=<path> node --test-name-pattern='<property>' test/integration/fuzz-routes.test.ts
// (FUZZ_SEED=random: a new seed each run; a failure prints the seed and path to replay it.)
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import fc from 'fast-check';
import { LIMITS } from '../../functions/xks.ts';
import { DEMO_KEYS, HEALTH_CHECK_KEY, type KeySpec } from '../../scripts/softhsm.ts';
import { lambdaContext, signedEvent } from '../helpers/events.ts';
import { fuzzParameters, positiveInt, SEED } from '../helpers/fuzz.ts';
import { assertNoLeaks, captureLogs } from '../helpers/leaks.ts';
import {
  createTestSetup,
  PREFIX,
  type RunningProxy,
  startProxy,
  TEST_KEYS,
  type TestSetup,
} from '../helpers/proxy.ts';
import { type Credential, smithySign } from '../helpers/sign.ts';

// ---------------------------------------------------------------------------------------------
// Run configuration

const RUNS = positiveInt(process.env.FUZZ_RUNS) ?? 200;
const FILE = 'test/integration/fuzz-routes.test.ts';
/** Over the wire each case costs a TLS round trip and a log scan: a tenth of the runs, 20 to 300. */
const WIRE_RUNS = Math.min(300, Math.max(20, Math.round(RUNS / 10)));
/** A call that takes longer has hung (the slowest legitimate one, a 64 KiB Encrypt, takes ~10 ms). */
const CALL_TIMEOUT_MS = 5000;
/** node:test's own limit per property, a backstop for a hang the per-call timer cannot see. */
const TEST_TIMEOUT_MS = Math.max(180_000, RUNS * 300);

function params<T>(name: string, numRuns = RUNS): fc.Parameters<T> {
  return fuzzParameters(FILE, name, numRuns, redact);
}

/** Counterexamples without plaintext or AAD (only their sizes), long strings and buffers shortened. */
function redact(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => {
    if ((key === 'plaintext' || key === 'additionalAuthenticatedData') && typeof v === 'string') {
      return `<${v.length} Base64 characters>`;
    }
    if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer') {
      const data = (v as { data: number[] }).data;
      return `<${data.length} bytes>`;
    }
    if (typeof v === 'string' && v.length > 160) return `${v.slice(0, 80)}...(${v.length} chars)`;
    return v;
  });
}

// ---------------------------------------------------------------------------------------------
// The spec's error table (spec: Error codes), written out here rather than taken from the code
// under test: errorName -> HTTP status and the APIs that may answer it.

type Op = 'GetHealthStatus' | 'GetKeyMetadata' | 'Encrypt' | 'Decrypt';
const OPS: readonly Op[] = ['GetHealthStatus', 'GetKeyMetadata', 'Encrypt', 'Decrypt'];
const KEY_OPS: readonly Op[] = ['GetKeyMetadata', 'Encrypt', 'Decrypt'];

const SPEC_ERRORS: Record<string, { status: number; apis: readonly Op[] }> = {
  // The table says "ALL except GetHealthStatus", but the GetHealthStatus section makes its two
  // requestMetadata fields REQUIRED and AWS's test client expects ValidationException without them.
  ValidationException: { status: 400, apis: OPS },
  InvalidStateException: { status: 400, apis: OPS },
  InvalidCiphertextException: { status: 400, apis: ['Decrypt'] },
  InvalidKeyUsageException: { status: 400, apis: ['Decrypt', 'Encrypt'] },
  AuthenticationFailedException: { status: 401, apis: OPS },
  AccessDeniedException: { status: 403, apis: KEY_OPS },
  KeyNotFoundException: { status: 404, apis: KEY_OPS },
  InvalidUriPathException: { status: 404, apis: OPS },
  ThrottlingException: { status: 429, apis: OPS },
  InternalException: { status: 500, apis: OPS },
  UnsupportedOperationException: { status: 501, apis: OPS },
  DependencyTimeoutException: { status: 503, apis: OPS },
};
/** What a validly signed request may get here (no policies, no quota, a healthy HSM); 405: not POST. */
const FUZZ_STATUSES = new Set([400, 404, 405, 501]);
/**
 * 503 DependencyTimeoutException: the HSM missed its per-call deadline (functions/config.ts
 * callTimeoutMs), which machine load alone can cause. A spec answer, but one that says nothing about
 * the input: such a case is counted and not judged (a 500 that may follow still fails). The last
 * test bounds them: at most MAX_TIMEOUT_SHARE of the calls.
 */
const TIMEOUT = 'DependencyTimeoutException';
const MAX_TIMEOUT_SHARE = 0.01;
let timeouts = 0;
/** Calls answered, over both callers. */
let calls = 0;

/** The outcome is one of `expected` (or a timeout, see TIMEOUT). */
/** A GetHealthStatus body of the spec's syntax: requestMetadata with kmsRequestId and kmsOperation. */
function isHealthRequest(value: unknown): boolean {
  const metadata = (value as { requestMetadata?: unknown } | null)?.requestMetadata;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) return false;
  const m = metadata as Record<string, unknown>;
  const text = (v: unknown) => v === undefined || (typeof v === 'string' && v.length <= 8192);
  return (
    typeof m.kmsRequestId === 'string' &&
    typeof m.kmsOperation === 'string' &&
    [
      'kmsRequestId',
      'kmsOperation',
      'awsPrincipalArn',
      'kmsKeyArn',
      'awsSourceVpc',
      'awsSourceVpce',
      'kmsViaService',
    ].every((name) => text(m[name]))
  );
}

function expectOutcome(outcome: Outcome, expected: readonly Outcome[], what: string): void {
  if (outcome === TIMEOUT) return;
  assert.ok(expected.includes(outcome), `${what}: ${outcome}, expected ${expected.join(' or ')}`);
}

const OK = 'OK';
/** An outcome: OK, or the errorName of an error answer. */
type Outcome = string;

// ---------------------------------------------------------------------------------------------
// Set-up: the handlers in this process, on a fresh SoftHSM token (as handlers.test.ts does).

type Handler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;
let setup: TestSetup;
let handlers: Record<Op, Handler>;
let logs: ReturnType<typeof captureLogs>;
/** A ciphertext made before any fuzzing: it must still decrypt after it (state unchanged). */
let preFuzz: { body: Record<string, unknown>; plaintext: Buffer };

let proxy: RunningProxy;

before(async () => {
  // The local proxy (its own process and token) first: creating a token initializes SoftHSM in
  // this process too, which it cannot while the in-process handlers' HSM worker holds it.
  proxy = await startProxy();
  setup = createTestSetup();
  process.env.XKS_PROXY_CONFIG = setup.configFile;
  Object.assign(process.env, setup.env);
  process.env.AWS_LAMBDA_FUNCTION_NAME = 'xks-fuzz';
  logs = captureLogs();
  const load = async (name: string) => (await import(`../../functions/${name}.ts`)).handler as Handler;
  handlers = {
    GetHealthStatus: await load('getHealthStatus'),
    GetKeyMetadata: await load('getKeyMetadata'),
    Encrypt: await load('encrypt'),
    Decrypt: await load('decrypt'),
  };
  const plaintext = Buffer.from('the state before fuzzing, 32 B.!');
  const encrypted = await exchange(inProcess, 'Encrypt', json(encryptBody(plaintext, undefined)));
  assert.equal(encrypted.outcome, OK);
  preFuzz = { body: decryptBody(encrypted.json, undefined), plaintext };
});

after(async () => {
  logs?.restore();
  if (setup) rmSync(setup.dir, { recursive: true, force: true });
  await proxy?.stop();
});

// ---------------------------------------------------------------------------------------------
// Calls

interface CallOptions {
  keyId?: string;
  method?: string;
  /** Deliver the body Base64-encoded (binaryMediaTypes); invalid UTF-8 always is. */
  base64?: boolean;
  /** Unsigned extra headers. */
  headers?: Record<string, string>;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

type Caller = (op: Op, body: Buffer, options: CallOptions) => Promise<Answer>;

function routePath(op: Op, keyId: string): string {
  if (op === 'GetHealthStatus') return `${PREFIX}/kms/xks/v1/health`;
  const suffix = { GetKeyMetadata: 'metadata', Encrypt: 'encrypt', Decrypt: 'decrypt' }[op];
  return `${PREFIX}/kms/xks/v1/keys/${encodeURIComponent(keyId)}/${suffix}`;
}

/** The Lambda handler, called as API Gateway would (REST API, payload 1.0), with a per-call timeout. */
const inProcess: Caller = async (op, body, options) => {
  const keyId = options.keyId ?? 'foo';
  const method = options.method ?? 'POST';
  const path = routePath(op, keyId);
  const credential = setup.credentials[0] as Credential;
  // The helper's event, with the signed body, method and key id of this call.
  const event = await signedEvent({ path, body: '', credential });
  const signed = await smithySign({ method, host: 'xks.example.com', path, body, credential });
  const headers: Record<string, string> = {
    ...signed,
    'Content-Type': 'application/json',
    ...options.headers,
  };
  const asText = !options.base64 && isUtf8(body);
  event.httpMethod = method;
  event.requestContext.httpMethod = method;
  event.headers = headers;
  event.multiValueHeaders = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]]));
  event.body = asText ? body.toString('utf8') : body.toString('base64');
  event.isBase64Encoded = !asText;
  event.pathParameters = op === 'GetHealthStatus' ? null : { keyId };
  const result = await withTimeout(handlers[op](event, lambdaContext()), `${op} in-process`);
  return {
    status: result.statusCode,
    headers: Object.fromEntries(
      Object.entries(result.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]),
    ),
    body: result.body,
  };
};

async function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const started = performance.now();
  try {
    return await Promise.race([
      promise.catch((err: unknown) => {
        // Never a thrown exception: the handlers answer every error themselves.
        throw new Error(
          `${what} threw instead of answering: ${err instanceof Error ? err.name : typeof err}`,
        );
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what} did not answer within ${CALL_TIMEOUT_MS} ms`)),
          CALL_TIMEOUT_MS,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    const ms = performance.now() - started;
    assert.ok(ms < CALL_TIMEOUT_MS, `${what} took ${ms.toFixed(0)} ms`);
  }
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

interface Exchange {
  outcome: Outcome;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field
  json: any;
}

/**
 * One call, and everything any answer must satisfy: a spec-shaped success (an Encrypt's result is
 * decrypted back, through the same caller) or an error the spec's table allows; in-process, the
 * log lines of this call scanned for its plaintext and AAD, and for the PIN and SigV4 secrets.
 */
async function exchange(call: Caller, op: Op, body: Buffer, options: CallOptions = {}): Promise<Exchange> {
  const answer = await call(op, body, options);
  calls++;
  const request = parseJson(body);
  assert.equal(answer.headers['content-type'], 'application/json', `${op}: content-type`);
  const payload = parseJson(Buffer.from(answer.body));
  assert.ok(
    payload !== undefined && typeof payload === 'object' && payload !== null,
    `${op}: body is no JSON object`,
  );
  // The log lines of this call, before any further call: its plaintext and AAD, as sent or decrypted.
  const sensitive = sensitiveOf(request);
  if (answer.status === 200 && typeof payload.plaintext === 'string')
    sensitive.push(Buffer.from(payload.plaintext, 'base64'));
  if (call === inProcess) {
    const out = logs.text();
    logs.clear();
    assertNoLeaks(out, setup.secrets, sensitive);
  } else wireSensitive.push(...sensitive);
  if (answer.status !== 200)
    return { outcome: checkError(op, answer, payload, options.method ?? 'POST'), json: payload };
  await checkSuccess(call, op, request, payload, options);
  return { outcome: OK, json: payload };
}

/** Plaintexts and AADs sent over the wire: the proxy's output is scanned for them at the end. */
const wireSensitive: Buffer[] = [];

// biome-ignore lint/suspicious/noExplicitAny: request and response bodies are arbitrary JSON
function parseJson(bytes: Buffer): any {
  try {
    // What the proxy sees: the body as UTF-8 (invalid sequences become U+FFFD).
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** Values that must never be logged: plaintext and AAD, as sent and decoded (spec: Logging). */
function sensitiveOf(body: unknown): Buffer[] {
  const out: Buffer[] = [];
  if (body && typeof body === 'object') {
    for (const field of ['plaintext', 'additionalAuthenticatedData']) {
      const value = (body as Record<string, unknown>)[field];
      if (typeof value !== 'string') continue;
      out.push(Buffer.from(value));
      out.push(Buffer.from(value, 'base64'));
    }
  }
  return out;
}

function checkError(op: Op, answer: Answer, payload: Record<string, unknown>, method: string): Outcome {
  const { errorName, errorMessage } = payload;
  assert.equal(typeof errorName, 'string', `${op} ${answer.status}: no errorName`);
  // errorMessage is printable ASCII without request data (spec: Error codes): safe to show.
  if (answer.status === 503 && errorName === TIMEOUT) {
    timeouts++;
    return TIMEOUT;
  }
  assert.ok(
    FUZZ_STATUSES.has(answer.status),
    `${op}: status ${answer.status} (${String(errorName)}: ${String(errorMessage)})`,
  );
  if (errorMessage !== undefined) {
    // Spec (Error codes): shorter than 512 characters, printable ASCII only.
    assert.ok(typeof errorMessage === 'string' && errorMessage.length < 512, `${op}: errorMessage too long`);
    assert.match(errorMessage, /^[\x20-\x7e]*$/, `${op}: errorMessage not printable ASCII`);
  }
  if (answer.status === 405) {
    // Spec (API operations): a GET MUST get 405; the table names no errorName for it.
    assert.notEqual(method, 'POST', `${op}: 405 for a POST`);
    assert.equal(answer.headers.allow, 'POST', `${op}: 405 without Allow: POST`);
    return errorName as string;
  }
  assert.equal(method, 'POST', `${op}: ${method} got ${answer.status} ${String(errorName)}, not 405`);
  const row = SPEC_ERRORS[errorName as string];
  assert.ok(row !== undefined, `${op}: errorName ${String(errorName)} is not in the spec's table`);
  assert.equal(answer.status, row.status, `${op}: ${String(errorName)} with status ${answer.status}`);
  assert.ok(row.apis.includes(op), `${op}: the spec does not list ${String(errorName)} for ${op}`);
  return errorName as string;
}

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard, canonical Base64 (spec: RFC 4648 section 4) of `sizes` bytes; the bytes. */
function base64Field(value: unknown, what: string, sizes?: readonly number[]): Buffer {
  assert.ok(typeof value === 'string' && B64.test(value), `${what} is not standard Base64`);
  const bytes = Buffer.from(value, 'base64');
  assert.equal(bytes.toString('base64'), value, `${what} is not canonical Base64`);
  if (sizes) assert.ok(sizes.includes(bytes.length), `${what} has ${bytes.length} bytes`);
  return bytes;
}

const KEY_USAGES = new Set(['ENCRYPT', 'DECRYPT', 'WRAP', 'UNWRAP', 'SIGN', 'VERIFY', 'DERIVE']);

// biome-ignore lint/suspicious/noExplicitAny: checked field by field
async function checkSuccess(call: Caller, op: Op, req: any, res: any, options: CallOptions) {
  assert.equal(options.method ?? 'POST', 'POST', `${op}: success for ${options.method}`);
  switch (op) {
    case 'GetHealthStatus': {
      // Spec (GetHealthStatus, response): all fields required; 1 to 10 ekmFleetDetails.
      assert.ok(Number.isInteger(res.xksProxyFleetSize) && res.xksProxyFleetSize > 0, 'xksProxyFleetSize');
      for (const field of ['xksProxyVendor', 'xksProxyModel', 'ekmVendor']) {
        assert.equal(typeof res[field], 'string', field);
      }
      assert.ok(Array.isArray(res.ekmFleetDetails), 'ekmFleetDetails');
      assert.ok(res.ekmFleetDetails.length >= 1 && res.ekmFleetDetails.length <= 10, 'ekmFleetDetails count');
      for (const hsm of res.ekmFleetDetails) {
        assert.equal(typeof hsm.id, 'string');
        assert.equal(typeof hsm.model, 'string');
        assert.ok(['ACTIVE', 'DEGRADED', 'UNAVAILABLE'].includes(hsm.healthStatus), 'healthStatus');
      }
      return;
    }
    case 'GetKeyMetadata': {
      // Spec (GetKeyMetadata, response): keySpec, keyUsage (at most ten), keyStatus.
      assert.equal(typeof res.keySpec, 'string', 'keySpec');
      assert.ok(Array.isArray(res.keyUsage) && res.keyUsage.length <= 10, 'keyUsage');
      assert.equal(new Set(res.keyUsage).size, res.keyUsage.length, 'keyUsage repeats a value');
      for (const usage of res.keyUsage) assert.ok(KEY_USAGES.has(usage), `keyUsage ${usage}`);
      assert.ok(['ENABLED', 'DISABLED'].includes(res.keyStatus), 'keyStatus');
      return;
    }
    case 'Encrypt': {
      // Spec (Encrypt, response): ciphertext as long as the plaintext; IV 12 or 16 bytes; a 16-byte
      // tag; ciphertextMetadata at most 20 bytes; the CDIV iff asked for (Appendix C).
      const plaintext = base64Field(req.plaintext, 'request plaintext');
      const aad =
        req.additionalAuthenticatedData === undefined
          ? undefined
          : base64Field(req.additionalAuthenticatedData, 'request AAD');
      const ciphertext = base64Field(res.ciphertext, 'ciphertext', [plaintext.length]);
      const iv = base64Field(res.initializationVector, 'initializationVector', [12, 16]);
      const tag = base64Field(res.authenticationTag, 'authenticationTag', [16]);
      const metadata =
        res.ciphertextMetadata === undefined
          ? undefined
          : base64Field(res.ciphertextMetadata, 'ciphertextMetadata', [...Array(21).keys()]);
      if (req.ciphertextDataIntegrityValueAlgorithm === undefined) {
        assert.equal(res.ciphertextDataIntegrityValue, undefined, 'a CDIV nobody asked for');
      } else {
        const expected = createHash('sha256')
          .update(Buffer.concat([aad ?? Buffer.alloc(0), metadata ?? Buffer.alloc(0), iv, ciphertext, tag]))
          .digest('base64');
        assert.equal(res.ciphertextDataIntegrityValue, expected, 'CDIV (Appendix C)');
      }
      // The round trip: the same key, AAD and encrypt output decrypt to the plaintext (if the key
      // may decrypt at all).
      if (keyModel(options.keyId ?? 'foo').key?.decrypt === false) return;
      const back = await exchange(
        call,
        'Decrypt',
        json(decryptBody(res, req.additionalAuthenticatedData)),
        options,
      );
      if (back.outcome === TIMEOUT) return;
      assert.equal(back.outcome, OK, 'the ciphertext does not decrypt back');
      assert.ok(Buffer.from(back.json.plaintext, 'base64').equals(plaintext), 'decrypted to other bytes');
      return;
    }
    case 'Decrypt': {
      // Spec (Decrypt, response): the plaintext, as long as the ciphertext.
      const ciphertext = base64Field(req.ciphertext, 'request ciphertext');
      base64Field(res.plaintext, 'plaintext', [ciphertext.length]);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Valid requests (spec: request payload syntax of each API)

const ARN_PRINCIPAL = 'arn:aws:iam::123456789012:user/Alice';
const ARN_KEY = 'arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';

function metadataFor(op: Op, requestId = '4112f4d6-db54-4af4-ae30-c55a22a8dfae'): Record<string, string> {
  switch (op) {
    case 'GetHealthStatus':
      return { kmsRequestId: requestId, kmsOperation: 'KmsHealthCheck' };
    case 'GetKeyMetadata':
      return { awsPrincipalArn: ARN_PRINCIPAL, kmsOperation: 'CreateKey', kmsRequestId: requestId };
    default:
      return {
        awsPrincipalArn: ARN_PRINCIPAL,
        kmsKeyArn: ARN_KEY,
        kmsOperation: op,
        kmsRequestId: requestId,
        kmsViaService: 'ebs',
      };
  }
}

function encryptBody(plaintext: Buffer, aad: Buffer | undefined, cdiv = false): Record<string, unknown> {
  return {
    requestMetadata: metadataFor('Encrypt'),
    plaintext: plaintext.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
    ...(aad === undefined ? {} : { additionalAuthenticatedData: aad.toString('base64') }),
    ...(cdiv ? { ciphertextDataIntegrityValueAlgorithm: 'SHA_256' } : {}),
  };
}

// biome-ignore lint/suspicious/noExplicitAny: an Encrypt response
function decryptBody(encrypted: any, aad: string | undefined): Record<string, unknown> {
  return {
    requestMetadata: metadataFor('Decrypt'),
    ciphertext: encrypted.ciphertext,
    ...(encrypted.ciphertextMetadata === undefined
      ? {}
      : { ciphertextMetadata: encrypted.ciphertextMetadata }),
    encryptionAlgorithm: 'AES_GCM',
    ...(aad === undefined ? {} : { additionalAuthenticatedData: aad }),
    initializationVector: encrypted.initializationVector,
    authenticationTag: encrypted.authenticationTag,
  };
}

/** A fresh, genuine Decrypt request: the Encrypt of `plaintext` (with `aad`) by `keyId`. */
async function genuineDecrypt(
  plaintext: Buffer,
  aad: Buffer | undefined,
  keyId = 'foo',
): Promise<Record<string, unknown>> {
  const encrypted = await exchange(inProcess, 'Encrypt', json(encryptBody(plaintext, aad)), { keyId });
  assert.equal(encrypted.outcome, OK, 'set-up encrypt failed');
  return decryptBody(encrypted.json, aad?.toString('base64'));
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));
/** n bytes, cheaply (fast-check would build large arrays byte by byte): a pattern from a seed. */
const sizedBytes = (n: number, seed: number) => {
  const out = Buffer.alloc(n);
  for (let i = 0, x = seed | 1; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    out[i] = x >> 16;
  }
  return out;
};
const boundarySize = (boundaries: number[], max: number) =>
  fc.oneof(fc.constantFrom(...boundaries), fc.integer({ min: 0, max }));
const PLAINTEXT_SIZES = [0, 1, 2, 3, 4, 4299, 4300, 4301, LIMITS.data - 1, LIMITS.data, LIMITS.data + 1];
const AAD_SIZES = [0, 1, 2, 3, 8191, 8192, 8193, LIMITS.aad - 1, LIMITS.aad, LIMITS.aad + 1];

/** Strings for the opaque metadata fields: unicode, lone surrogates, and lengths around 2048 and 8192. */
const metadataString = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 64 }),
  fc.string({ unit: 'binary', maxLength: 64 }),
  fc
    .tuple(fc.constantFrom(2047, 2048, 2049, 8191, 8192, 8193), fc.constantFrom('a', 'é', ':', '\u0000'))
    .map(([n, ch]) => ch.repeat(n)),
);

/** Values of a wrong JSON type for any field (objects for strings, strings for objects, ...). */
const wrongValue = (field: 'string' | 'object') =>
  fc.oneof(
    fc.constant(null),
    fc.boolean(),
    fc.oneof(fc.integer(), fc.double(), fc.constantFrom(1e308, -1e308, 0, -0)),
    fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
    field === 'string'
      ? fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 })
      : fc.string(),
  );

type B64Variant =
  | 'canonical'
  | 'unpadded'
  | 'extra-padding'
  | 'non-canonical'
  | 'url-safe'
  | 'whitespace'
  | 'invalid-char'
  | 'truncated';
const B64_VARIANTS: readonly B64Variant[] = [
  'canonical',
  'unpadded',
  'extra-padding',
  'non-canonical',
  'url-safe',
  'whitespace',
  'invalid-char',
  'truncated',
];
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** The Base64 text of `data` in a variant; only 'canonical' is the one standard encoding (RFC 4648). */
function encodeVariant(data: Buffer, variant: B64Variant, n: number): { text: string; canonical: boolean } {
  const b64 = data.toString('base64');
  const insert = (s: string, what: string) => {
    const at = n % (s.length + 1);
    return `${s.slice(0, at)}${what}${s.slice(at)}`;
  };
  switch (variant) {
    case 'canonical':
      return { text: b64, canonical: true };
    case 'unpadded':
      if (b64.endsWith('=')) return { text: b64.replace(/=+$/, ''), canonical: false };
      return encodeVariant(data, 'extra-padding', n);
    case 'extra-padding':
      return { text: `${b64}=`, canonical: false };
    case 'non-canonical': {
      // Non-zero padding bits: decodes to the same bytes, but is not their encoding.
      const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
      if (pad === 0) return encodeVariant(data, 'extra-padding', n);
      const at = b64.length - pad - 1;
      const index = ALPHABET.indexOf(b64[at] as string) | (pad === 2 ? 1 + (n % 15) : 1 + (n % 3));
      return { text: `${b64.slice(0, at)}${ALPHABET[index]}${b64.slice(at + 1)}`, canonical: false };
    }
    case 'url-safe':
      if (/[+/]/.test(b64)) return { text: b64.replaceAll('+', '-').replaceAll('/', '_'), canonical: false };
      return { text: insert(b64, n % 2 ? '-' : '_'), canonical: false };
    case 'whitespace':
      return { text: insert(b64, [' ', '\n', '\r\n', '\t'][n % 4] as string), canonical: false };
    case 'invalid-char':
      return { text: insert(b64, [...'!#$%&*.:;?@[]^`{|}~é€"\\'][n % 23] as string), canonical: false };
    case 'truncated':
      if (b64.length > 0) return { text: b64.slice(0, -1), canonical: false };
      return encodeVariant(data, 'extra-padding', n);
  }
}

/** The key ids of the test key store and what the token holds for each (scripts/softhsm.ts). */
function keyModel(keyId: string): { inStore: boolean; key?: KeySpec; disabled: boolean } {
  const store = setup.config.keystores[0];
  const inStore = store?.keys?.includes(keyId) ?? false;
  const key = [...DEMO_KEYS, ...TEST_KEYS].find((k) => k.label === keyId);
  return {
    inStore,
    ...(key === undefined ? {} : { key }),
    disabled: store?.disabledKeys?.includes(keyId) ?? false,
  };
}

function isAes256(key: KeySpec): boolean {
  return (key.type ?? 'AES') === 'AES' && (key.bytes ?? 32) === 32;
}

// ---------------------------------------------------------------------------------------------
// Properties, in-process

describe('routes, property-based (in-process)', { timeout: TEST_TIMEOUT_MS }, () => {
  test('any-json: any JSON value as the body', async (t) => {
    t.diagnostic(`seed ${SEED}, ${RUNS} runs per property, ${WIRE_RUNS} over the wire`);
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 6 }),
      fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }),
      // Objects with the right top-level names and arbitrary values.
      fc.record(
        {
          requestMetadata: fc.oneof(
            fc.jsonValue({ maxDepth: 3 }),
            fc.dictionary(
              fc.constantFrom('kmsRequestId', 'kmsOperation', 'awsPrincipalArn', 'kmsKeyArn'),
              fc.jsonValue({ maxDepth: 2 }),
            ),
          ),
          plaintext: fc.jsonValue({ maxDepth: 2 }),
          ciphertext: fc.jsonValue({ maxDepth: 2 }),
          encryptionAlgorithm: fc.oneof(fc.constant('AES_GCM'), fc.jsonValue({ maxDepth: 1 })),
          initializationVector: fc.jsonValue({ maxDepth: 1 }),
          authenticationTag: fc.jsonValue({ maxDepth: 1 }),
        },
        { requiredKeys: [] },
      ),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...OPS), body, async (op, value) => {
        const { outcome } = await exchange(inProcess, op, json(value));
        // GetHealthStatus: its two REQUIRED fields there, or ValidationException; the HSM is healthy.
        if (op === 'GetHealthStatus')
          expectOutcome(outcome, [isHealthRequest(value) ? OK : 'ValidationException'], op);
        // Anything but a JSON object cannot be a request of the spec's syntax.
        else if (value === null || typeof value !== 'object' || Array.isArray(value)) {
          expectOutcome(outcome, ['ValidationException'], op);
        }
      }),
      params('any-json'),
    );
  });

  test('mutations: one field of a valid request removed, mistyped, replaced or added', async () => {
    const mutation = fc.record({
      kind: fc.constantFrom('remove', 'wrong-type', 'metadata-string', 'const', 'unknown-field'),
      a: fc.nat(),
      wrongString: wrongValue('string'),
      wrongObject: wrongValue('object'),
      text: metadataString,
      constant: fc.oneof(
        fc.constantFrom('aes_gcm', 'AES-GCM', 'AES_GCM ', 'AES_GCM_256', 'SHA256', 'sha_256', ''),
        fc.string(),
      ),
      unknown: fc.tuple(fc.string({ maxLength: 20 }), fc.jsonValue({ maxDepth: 3 }), fc.boolean()),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...OPS),
        mutation,
        bytes(64).filter((b) => b.length > 0),
        fc.option(bytes(64), { nil: undefined }),
        fc.boolean(),
        async (op, m, plaintext, aad, cdiv) => {
          const body: Record<string, unknown> =
            op === 'Encrypt'
              ? encryptBody(plaintext, aad, cdiv)
              : op === 'Decrypt'
                ? await genuineDecrypt(plaintext, aad)
                : { requestMetadata: metadataFor(op) };
          const metadata = body.requestMetadata as Record<string, unknown>;
          const required = REQUIRED[op];
          const fields = [
            ...Object.keys(body).filter((f) => f !== 'requestMetadata'),
            ...Object.keys(metadata).map((f) => `requestMetadata.${f}`),
            'requestMetadata',
          ];
          const field = fields[m.a % fields.length] as string;
          const [parent, name] = field.startsWith('requestMetadata.')
            ? [metadata, field.slice('requestMetadata.'.length)]
            : [body, field];
          let expected: Outcome[];
          const invalid = ['ValidationException'];
          switch (m.kind) {
            case 'remove':
              delete parent[name];
              if (required.includes(field)) expected = invalid;
              // Without the AAD or the ciphertextMetadata the tag no longer verifies.
              else if (
                op === 'Decrypt' &&
                (name === 'ciphertextMetadata' ||
                  (name === 'additionalAuthenticatedData' && (aad?.length ?? 0) > 0))
              ) {
                expected = ['InvalidCiphertextException'];
              } else expected = [OK];
              break;
            case 'wrong-type':
              parent[name] = field === 'requestMetadata' ? m.wrongObject : m.wrongString;
              expected = invalid;
              break;
            case 'metadata-string': {
              // Spec: kmsRequestId is opaque, kmsOperation MUST NOT be rejected, ARNs up to 2048.
              const target = field.startsWith('requestMetadata.') ? name : 'kmsOperation';
              metadata[target] = m.text;
              expected = m.text.length <= 2048 ? [OK] : [OK, ...invalid];
              break;
            }
            case 'const': {
              // Only AES_GCM and SHA_256 exist in v1: refused as invalid or as not implemented.
              const target =
                op === 'Encrypt' && m.a % 2 === 0
                  ? 'ciphertextDataIntegrityValueAlgorithm'
                  : 'encryptionAlgorithm';
              if (op === 'GetHealthStatus' || op === 'GetKeyMetadata') {
                body[target] = m.constant; // an unknown field for these
                expected = [OK];
              } else {
                body[target] = m.constant;
                expected = ['ValidationException', 'UnsupportedOperationException'];
              }
              break;
            }
            case 'unknown-field': {
              // Unknown fields are KMS's to add (spec: Appendix B): accepted, the outcome unchanged.
              const [key, value, inMetadata] = m.unknown;
              const known = new Set([
                ...KNOWN_FIELDS,
                ...(inMetadata ? Object.keys(metadata) : Object.keys(body)),
              ]);
              const target = inMetadata ? metadata : body;
              const unknownKey = known.has(key) || key === '__proto__' ? `x-${key}` : key;
              Object.defineProperty(target, unknownKey, {
                value,
                enumerable: true,
                writable: true,
                configurable: true,
              });
              expected = [OK];
              break;
            }
          }
          const { outcome } = await exchange(inProcess, op, json(body));
          expectOutcome(outcome, expected, `${op} ${m.kind} ${field}`);
        },
      ),
      params('mutations'),
    );
  });

  test('encrypt-base64: plaintext and AAD in every Base64 variant, at every size boundary', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('plaintext', 'additionalAuthenticatedData'),
        fc.constantFrom(...B64_VARIANTS),
        boundarySize(PLAINTEXT_SIZES, 5000),
        boundarySize(AAD_SIZES, 9000),
        fc.nat(),
        fc.boolean(),
        async (field, variant, plaintextSize, aadSize, n, cdiv) => {
          const isPlaintext = field === 'plaintext';
          const size = isPlaintext ? plaintextSize : aadSize;
          const max = isPlaintext ? LIMITS.data : LIMITS.aad;
          const data = sizedBytes(size, n);
          const body = encryptBody(
            isPlaintext ? data : sizedBytes(Math.max(1, plaintextSize % 4300), n),
            isPlaintext ? undefined : data,
            cdiv,
          );
          const { text, canonical } = encodeVariant(data, variant, n);
          body[field] = text;
          let expected: Outcome[];
          if (!canonical) {
            // Near or over the limit, the size may be refused first (501).
            expected =
              size >= max - 2
                ? ['ValidationException', 'UnsupportedOperationException']
                : ['ValidationException'];
          } else if (size > max) expected = ['UnsupportedOperationException'];
          // An empty plaintext: KMS never sends one; the spec does not say.
          else if (isPlaintext && size === 0) expected = [OK, 'ValidationException'];
          // Spec (Encrypt): up to 4300 bytes of plaintext and 8192 of AAD MUST work; this proxy: LIMITS.
          else expected = [OK];
          const { outcome } = await exchange(inProcess, 'Encrypt', json(body));
          expectOutcome(outcome, expected, `${field} ${variant} ${size} B`);
        },
      ),
      params('encrypt-base64'),
    );
  });

  test('decrypt-fields: each field of a genuine Decrypt replaced, tampered with or re-encoded', async () => {
    const FIELDS = [
      'ciphertext',
      'initializationVector',
      'authenticationTag',
      'additionalAuthenticatedData',
      'ciphertextMetadata',
    ] as const;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...FIELDS),
        fc.constantFrom('other-bytes', 'bit-flip', 'encoding', 'unchanged', 'metadata-form'),
        fc.constantFrom(...B64_VARIANTS.filter((v) => v !== 'canonical')),
        fc.oneof(fc.constantFrom(1, 2, 3, 4300), fc.integer({ min: 1, max: 600 })),
        fc.option(fc.oneof(bytes(64), fc.constant(sizedBytes(8192, 7))), { nil: undefined }),
        fc.oneof(
          fc.integer({ min: 0, max: 33 }),
          fc.constantFrom(4300, 4301, LIMITS.data, LIMITS.data + 1, 8192, LIMITS.aad, LIMITS.aad + 1),
        ),
        fc.nat(),
        async (field, how, variant, plaintextSize, aad, size, n) => {
          const plaintext = sizedBytes(plaintextSize, n + 1);
          const body = await genuineDecrypt(plaintext, aad);
          const original =
            typeof body[field] === 'string' ? Buffer.from(body[field] as string, 'base64') : undefined;
          let expected: Outcome[];
          if (how === 'unchanged') {
            expected = [OK];
          } else if (how === 'bit-flip') {
            // Spec (Decrypt): a corrupted ciphertext, IV, AAD, tag (or metadata): InvalidCiphertextException.
            const data = Buffer.from(original?.length ? original : [0]);
            data.writeUInt8(data.readUInt8(n % data.length) ^ (1 << (n % 8)), n % data.length);
            body[field] = data.toString('base64');
            expected = ['InvalidCiphertextException'];
          } else if (how === 'metadata-form') {
            // This proxy's ciphertextMetadata formats (functions/xks.ts): 0x01, or 0x02 and a 4-byte key
            // version; any other value, or another version, is not the encrypt's (spec: Decrypt,
            // "MUST detect when the ciphertextMetadata ... has been modified").
            const version = Buffer.alloc(4);
            version.writeUInt32BE([0, 1, 2, 0xffffffff, n >>> 0][n % 5] as number);
            const forms = [
              Buffer.alloc(0),
              Buffer.from([1, 0]),
              Buffer.from([0]),
              Buffer.concat([Buffer.from([2]), version]),
              Buffer.concat([Buffer.from([2]), version, Buffer.from([0])]),
              Buffer.alloc(20, 2),
            ];
            body.ciphertextMetadata = (forms[n % forms.length] as Buffer).toString('base64');
            expected = ['InvalidCiphertextException'];
          } else if (how === 'encoding') {
            const { text } = encodeVariant(original ?? Buffer.alloc(0), variant, n);
            body[field] = text;
            expected = ['ValidationException'];
          } else {
            const data = sizedBytes(size, n + 2);
            body[field] = data.toString('base64');
            expected = otherBytesOutcome(field, data, original);
          }
          const { outcome } = await exchange(inProcess, 'Decrypt', json(body));
          expectOutcome(outcome, expected, `${field} ${how} (${size} B)`);
        },
      ),
      params('decrypt-fields'),
    );
  });

  test('key-ids: configured, unknown, health-check and malformed key ids', async () => {
    const configured = [...(setup.config.keystores[0]?.keys ?? []), HEALTH_CHECK_KEY];
    const keyId = fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...configured) },
      fc.stringMatching(/^[A-Za-z0-9._-]{1,128}$/),
      fc.oneof(
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }),
        fc.constantFrom('a'.repeat(129), 'foo ', 'fo/o', '.', '..', 'foo%2F', 'FOO'),
      ),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...KEY_OPS),
        keyId,
        bytes(48).filter((b) => b.length > 0),
        async (op, id, plaintext) => {
          const body =
            op === 'Encrypt'
              ? encryptBody(plaintext, undefined)
              : op === 'Decrypt'
                ? await genuineDecrypt(plaintext, undefined)
                : { requestMetadata: metadataFor(op) };
          const { outcome, json: res } = await exchange(inProcess, op, json(body), { keyId: id });
          const model = keyModel(id);
          let expected: Outcome[];
          if (!/^[A-Za-z0-9._-]{1,128}$/.test(id)) {
            // Spec (API operations): ids are 1-128 of A-Z a-z 0-9 - . _; another is no key of ours.
            expected = ['ValidationException', 'KeyNotFoundException', 'InvalidUriPathException'];
          } else if (!model.inStore || model.key === undefined) {
            // Not in this key store, or not in the HSM (and never the health-check key).
            expected = ['KeyNotFoundException'];
          } else if (op === 'GetKeyMetadata') {
            expected = [OK];
            assert.equal(res.keyStatus, model.disabled ? 'DISABLED' : 'ENABLED', `${id} keyStatus`);
            assert.equal(res.keySpec === 'AES_256', isAes256(model.key), `${id} keySpec ${res.keySpec}`);
            if (isAes256(model.key)) {
              assert.equal(res.keyUsage.includes('ENCRYPT'), model.key.encrypt, `${id} ENCRYPT`);
              assert.equal(res.keyUsage.includes('DECRYPT'), model.key.decrypt, `${id} DECRYPT`);
            }
          } else if (model.disabled) {
            expected = ['InvalidStateException'];
          } else if (!isAes256(model.key) || !(op === 'Encrypt' ? model.key.encrypt : model.key.decrypt)) {
            expected = ['InvalidKeyUsageException'];
          } else if (op === 'Decrypt' && id !== 'foo') {
            // A ciphertext of another key: its tag cannot verify.
            expected = ['InvalidCiphertextException'];
          } else expected = [OK];
          expectOutcome(outcome, expected, `${op} ${JSON.stringify(id)}`);
        },
      ),
      params('key-ids'),
    );
  });

  test('methods: anything but POST gets 405 with Allow: POST', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...OPS),
        fc.oneof(
          fc.constantFrom('GET', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'post', 'Post'),
          fc.stringMatching(/^[A-Z]{1,10}$/).filter((m) => m !== 'POST'),
        ),
        fc.jsonValue({ maxDepth: 2 }),
        async (op, method, value) => {
          const { outcome } = await exchange(inProcess, op, json(value), { method });
          expectOutcome(outcome, ['MethodNotAllowed'], `${op} ${method}`);
        },
      ),
      params('methods', Math.max(20, Math.round(RUNS / 4))),
    );
  });

  test('raw-text: duplicate keys, huge numbers, escapes, BOM, garbage, invalid UTF-8, deep nesting', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...OPS), rawBody(2000), fc.boolean(), async (op, raw, base64) => {
        const valid = await validBody(op);
        const { bytes: body, expect } = raw(op, valid);
        const { outcome } = await exchange(inProcess, op, body, { base64 });
        await checkRaw(inProcess, op, body, outcome, expect);
      }),
      params('raw-text'),
    );
  });

  test('state: after the fuzzing, health, a round trip and the pre-fuzz ciphertext all work', async () => {
    const health = await exchange(
      inProcess,
      'GetHealthStatus',
      json({ requestMetadata: metadataFor('GetHealthStatus') }),
    );
    assert.equal(health.outcome, OK);
    assert.equal(health.json.ekmFleetDetails[0].healthStatus, 'ACTIVE');
    const plaintext = Buffer.from('a normal round trip after fuzzing');
    const aad = Buffer.from('project=nile,department=marketing');
    const encrypted = await exchange(inProcess, 'Encrypt', json(encryptBody(plaintext, aad, true)));
    assert.equal(encrypted.outcome, OK);
    const decrypted = await exchange(
      inProcess,
      'Decrypt',
      json(decryptBody(encrypted.json, aad.toString('base64'))),
    );
    assert.equal(decrypted.outcome, OK);
    assert.ok(Buffer.from(decrypted.json.plaintext, 'base64').equals(plaintext));
    const old = await exchange(inProcess, 'Decrypt', json(preFuzz.body));
    assert.equal(old.outcome, OK);
    assert.ok(Buffer.from(old.json.plaintext, 'base64').equals(preFuzz.plaintext));
  });
});

const REQUIRED: Record<Op, readonly string[]> = {
  GetHealthStatus: ['requestMetadata', 'requestMetadata.kmsRequestId', 'requestMetadata.kmsOperation'],
  GetKeyMetadata: [
    'requestMetadata',
    'requestMetadata.awsPrincipalArn',
    'requestMetadata.kmsOperation',
    'requestMetadata.kmsRequestId',
  ],
  Encrypt: [
    'requestMetadata',
    'requestMetadata.awsPrincipalArn',
    'requestMetadata.kmsKeyArn',
    'requestMetadata.kmsOperation',
    'requestMetadata.kmsRequestId',
    'plaintext',
    'encryptionAlgorithm',
  ],
  Decrypt: [
    'requestMetadata',
    'requestMetadata.awsPrincipalArn',
    'requestMetadata.kmsKeyArn',
    'requestMetadata.kmsOperation',
    'requestMetadata.kmsRequestId',
    'ciphertext',
    'encryptionAlgorithm',
    'initializationVector',
    'authenticationTag',
  ],
};
const KNOWN_FIELDS = [
  'requestMetadata',
  'plaintext',
  'ciphertext',
  'ciphertextMetadata',
  'encryptionAlgorithm',
  'additionalAuthenticatedData',
  'ciphertextDataIntegrityValueAlgorithm',
  'initializationVector',
  'authenticationTag',
  'awsPrincipalArn',
  'awsSourceVpc',
  'awsSourceVpce',
  'kmsKeyArn',
  'kmsOperation',
  'kmsRequestId',
  'kmsViaService',
];

/** What replacing a genuine Decrypt's field by the canonical encoding of `data` must give. */
function otherBytesOutcome(field: string, data: Buffer, original: Buffer | undefined): Outcome[] {
  const same = original !== undefined && data.equals(original);
  switch (field) {
    case 'ciphertext':
      if (data.length === 0) return ['ValidationException', 'InvalidCiphertextException'];
      if (data.length > LIMITS.data) return ['UnsupportedOperationException'];
      return same ? [OK] : ['InvalidCiphertextException'];
    case 'additionalAuthenticatedData':
      if (data.length > LIMITS.aad) return ['UnsupportedOperationException'];
      // An absent AAD and an empty one are the same (spec: Encrypt, "length MUST be set to zero").
      if (same || (original === undefined && data.length === 0)) return [OK];
      return ['InvalidCiphertextException'];
    case 'initializationVector':
      // Spec (Decrypt): 12 or 16 bytes.
      if (data.length !== 12 && data.length !== 16) return ['ValidationException'];
      return same ? [OK] : ['InvalidCiphertextException'];
    case 'authenticationTag':
      if (data.length !== 16) return ['ValidationException'];
      return same ? [OK] : ['InvalidCiphertextException'];
    default:
      // ciphertextMetadata: at most 20 bytes (spec: Decrypt); any change MUST be detected.
      if (data.length > 20) return ['ValidationException', 'InvalidCiphertextException'];
      return same ? [OK] : ['InvalidCiphertextException'];
  }
}

async function validBody(op: Op): Promise<Record<string, unknown>> {
  const plaintext = Buffer.from('sixteen byte key');
  if (op === 'Encrypt') return encryptBody(plaintext, undefined);
  if (op === 'Decrypt') return genuineDecrypt(plaintext, undefined);
  return { requestMetadata: metadataFor(op) };
}

// ---------------------------------------------------------------------------------------------
// Raw bodies: bytes that JSON.stringify never produces.

/**
 * What a raw body must give: one of these outcomes; or what the same body gives once parsed and
 * serialized again (JSON.parse: the last of duplicate names, U+FFFD for invalid UTF-8), unless
 * refused as invalid.
 */
type RawExpectation = { outcomes: Outcome[] } | { sameAsParsed: true };

const RAW_KINDS = [
  'duplicate-key',
  'huge-number',
  'escaped',
  'whitespace',
  'bom',
  'garbage',
  'truncated',
  'invalid-utf8',
  'lone-surrogate',
  'deep-nesting',
] as const;

/** A raw body recipe, applied to a valid body of the route (which only exists once the route is known). */
function rawBody(maxDepth: number) {
  return fc
    .record({
      kind: fc.constantFrom(...RAW_KINDS),
      a: fc.nat(),
      value: fc.jsonValue({ maxDepth: 2 }),
      depth: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.constant(maxDepth)),
      bad: fc.constantFrom(
        [0xff],
        [0xc3],
        [0xed, 0xa0, 0x80],
        [0xc0, 0xaf],
        [0xf8, 0x88, 0x80, 0x80, 0x80],
        [0x80],
        [0xe2, 0x82],
      ),
    })
    .map((r) => {
      const apply = (_op: Op, valid: Record<string, unknown>): { bytes: Buffer; expect: RawExpectation } => {
        const text = JSON.stringify(valid);
        const invalid: Outcome[] = ['ValidationException'];
        const keys = Object.keys(valid);
        const key = keys[r.a % keys.length] as string;
        switch (r.kind) {
          case 'duplicate-key': {
            // RFC 8259: names SHOULD be unique. Either refused, or taken as JSON.parse does (last wins).
            const dup = `${JSON.stringify(key)}:${JSON.stringify(r.value)}`;
            const body = r.a % 2 === 0 ? `{${dup},${text.slice(1)}` : `${text.slice(0, -1)},${dup}}`;
            return { bytes: Buffer.from(body), expect: { sameAsParsed: true } };
          }
          case 'huge-number': {
            // A number no double holds: in an unknown field, ignored; in place of a known field
            // (all strings or objects), a wrong type.
            const n = [
              '1e400',
              '-1e400',
              '123456789012345678901234567890',
              '-0',
              '1e-400',
              '0.0000000000000000000000001',
            ][r.a % 6] as string;
            if (r.a % 2 === 0) {
              return {
                bytes: Buffer.from(`${text.slice(0, -1)},"xNumber":${n}}`),
                expect: { outcomes: [OK] },
              };
            }
            const marked = JSON.stringify({ ...valid, [key]: '<huge>' }).replace('"<huge>"', n);
            return { bytes: Buffer.from(marked), expect: { outcomes: invalid } };
          }
          case 'escaped': {
            // Every character of every string as a \u escape: the same JSON value (RFC 8259).
            const escaped = text.replace(/"((?:[^"\\]|\\.)*)"/g, (_m, s: string) => {
              const value = JSON.parse(`"${s}"`) as string;
              const units = Array.from({ length: value.length }, (_, i) => value.charCodeAt(i));
              return `"${units.map((u) => `\\u${u.toString(16).padStart(4, '0')}`).join('')}"`;
            });
            return { bytes: Buffer.from(escaped), expect: { outcomes: [OK] } };
          }
          case 'whitespace':
            // Insignificant whitespace between tokens (RFC 8259).
            return {
              bytes: Buffer.from(JSON.stringify(valid, null, ['\t', '  ', '\r\n'][r.a % 3])),
              expect: { outcomes: [OK] },
            };
          case 'bom':
            // RFC 8259: a parser MAY ignore a byte order mark, or refuse it.
            return {
              bytes: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]),
              expect: { outcomes: [OK, ...invalid] },
            };
          case 'garbage':
            return {
              bytes: Buffer.from(`${text}${['x', '}', ',', ' {}', '\u0000', ']'][r.a % 6]}`),
              expect: { outcomes: invalid },
            };
          case 'truncated':
            return { bytes: Buffer.from(text.slice(0, r.a % text.length)), expect: { outcomes: invalid } };
          case 'invalid-utf8': {
            // Anywhere in the text: refused, or read as U+FFFD (the WHATWG decoder) and then as the
            // same text with U+FFFD would be.
            const at = r.a % (text.length + 1);
            const bytes = Buffer.concat([
              Buffer.from(text.slice(0, at)),
              Buffer.from(r.bad),
              Buffer.from(text.slice(at)),
            ]);
            return { bytes, expect: { sameAsParsed: true } };
          }
          case 'lone-surrogate': {
            // A lone surrogate escape in an opaque metadata string (kmsRequestId): still a string.
            const body = text.replace(
              /("kmsRequestId":")/,
              `$1\\ud800${['', '\\udc00\\udc00', 'x\\udfff'][r.a % 3]}`,
            );
            return { bytes: Buffer.from(body), expect: { outcomes: [OK] } };
          }
          case 'deep-nesting': {
            // An unknown field nested `depth` levels deep: ignored, or refused; never a crash.
            const open = r.a % 2 === 0 ? '['.repeat(r.depth) : '{"a":'.repeat(r.depth);
            const close = r.a % 2 === 0 ? ']'.repeat(r.depth) : '}'.repeat(r.depth);
            return {
              bytes: Buffer.from(`${text.slice(0, -1)},"xDeep":${open}1${close}}`),
              expect: { outcomes: [OK, ...invalid] },
            };
          }
        }
      };
      return Object.assign(apply, { toJSON: () => r });
    });
}

async function checkRaw(
  call: Caller,
  op: Op,
  body: Buffer,
  outcome: Outcome,
  expect: RawExpectation,
): Promise<void> {
  if ('outcomes' in expect) {
    expectOutcome(outcome, expect.outcomes, op);
    return;
  }
  const parsed = parseJson(body);
  if (parsed === undefined) {
    // Not JSON once decoded: invalid.
    expectOutcome(outcome, ['ValidationException'], `${op}, no JSON`);
    return;
  }
  const { outcome: normalized } = await exchange(call, op, json(parsed));
  const allowed = [normalized, 'ValidationException'];
  if (normalized !== TIMEOUT)
    expectOutcome(
      outcome,
      allowed,
      `${op}: ${outcome}, but ${normalized} for the same body without duplicates`,
    );
}

// ---------------------------------------------------------------------------------------------
// Over the wire: the local proxy (TLS, node:http), for raw bytes and header names

describe('routes, property-based (over the wire)', { timeout: TEST_TIMEOUT_MS }, () => {
  const wire: Caller = async (op, body, options) => {
    const path = routePath(op, options.keyId ?? 'foo');
    const method = options.method ?? 'POST';
    const signed = await smithySign({
      method,
      host: proxy.host,
      path,
      body,
      credential: proxy.credentials[0] as Credential,
    });
    const res = await withTimeout(
      proxy.send({
        method,
        path,
        headers: { ...signed, 'content-type': 'application/json', ...options.headers },
        body,
      }),
      `${op} over the wire`,
    );
    return {
      status: res.status,
      headers: Object.fromEntries(Object.entries(res.headers).map(([k, v]) => [k, String(v)])),
      body: res.text,
    };
  };

  test('wire-raw: raw bodies over HTTPS, up to deep nesting and invalid UTF-8', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...OPS), rawBody(100_000), async (op, raw) => {
        const valid = op === 'Decrypt' ? await wireDecryptBody(wire) : await validBody(op);
        const { bytes: body, expect } = raw(op, valid);
        const { outcome } = await exchange(wire, op, body);
        await checkRaw(wire, op, body, outcome, expect);
      }),
      params('wire-raw', WIRE_RUNS),
    );
  });

  test('wire-headers: any header name (an RFC 9110 token) as an extra unsigned header', async () => {
    // 'constructor', '__proto__', 'toString': names, not properties of an object.
    const name = fc
      .oneof(
        fc.constantFrom(
          'constructor',
          '__proto__',
          'toString',
          'hasOwnProperty',
          'valueOf',
          'prototype',
          'Constructor',
        ),
        fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}$/),
      )
      .filter(
        (n) =>
          ![
            'host',
            'authorization',
            'x-amz-date',
            'x-amz-content-sha256',
            'content-length',
            'content-type',
            'transfer-encoding',
            'connection',
            'expect',
            'upgrade',
            'te',
            'trailer',
            'keep-alive',
          ].includes(n.toLowerCase()),
      );
    await fc.assert(
      fc.asyncProperty(name, fc.stringMatching(/^[!-~]{0,20}$/), async (header, value) => {
        const { outcome } = await exchange(
          wire,
          'GetHealthStatus',
          json({ requestMetadata: metadataFor('GetHealthStatus') }),
          {
            headers: { [header]: value },
          },
        );
        expectOutcome(outcome, [OK], `header ${JSON.stringify(header)}`);
      }),
      params('wire-headers', WIRE_RUNS),
    );
  });

  test('wire-state: the proxy still works, and printed nothing sensitive', async () => {
    const health = await exchange(
      wire,
      'GetHealthStatus',
      json({ requestMetadata: metadataFor('GetHealthStatus') }),
    );
    assert.equal(health.outcome, OK);
    const plaintext = Buffer.from('a normal round trip after wire fuzzing');
    const encrypted = await exchange(wire, 'Encrypt', json(encryptBody(plaintext, undefined)));
    assert.equal(encrypted.outcome, OK);
    assertNoLeaks(await proxy.settledOutput(), proxy.secrets, wireSensitive);
  });
});

test('HSM deadline misses (503, not judged): at most 1% of the calls', (t) => {
  t.diagnostic(`${timeouts} HSM deadline misses (503) in ${calls} calls`);
  const allowed = Math.ceil(calls * MAX_TIMEOUT_SHARE);
  assert.ok(
    timeouts <= allowed,
    `${timeouts} of ${calls} calls missed the HSM deadline (at most ${allowed})`,
  );
});

async function wireDecryptBody(call: Caller): Promise<Record<string, unknown>> {
  const encrypted = await exchange(
    call,
    'Encrypt',
    json(encryptBody(Buffer.from('sixteen byte key'), undefined)),
  );
  assert.equal(encrypted.outcome, OK, 'set-up encrypt failed');
  return decryptBody(encrypted.json, undefined);
}
