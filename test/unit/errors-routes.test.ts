// Error names and statuses (spec: Error codes), error messages, and the four routes (spec: API
// operations).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ERROR_STATUS, safeErrorMessage, toXksError, XksError } from '../../functions/errors.ts';
import { parseRoute } from '../../functions/routes.ts';
import { HsmError } from '../../layers/pkcs11/hsm.ts';

// The spec's Error codes table, row by row (Error Code | Error Name).
const SPEC_ERROR_TABLE: ReadonlyArray<readonly [number, string]> = [
  [400, 'ValidationException'],
  [400, 'InvalidStateException'],
  [400, 'InvalidCiphertextException'],
  [400, 'InvalidKeyUsageException'],
  [401, 'AuthenticationFailedException'],
  [403, 'AccessDeniedException'],
  [404, 'KeyNotFoundException'],
  [404, 'InvalidUriPathException'],
  [429, 'ThrottlingException'],
  [501, 'UnsupportedOperationException'],
  [503, 'DependencyTimeoutException'],
  [500, 'InternalException'],
];

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

describe('ERROR_STATUS', () => {
  test("is the spec's table exactly, plus the HTTP statuses it has no row for (405, 408, 431)", () => {
    const http = { MethodNotAllowed: 405, RequestTimeout: 408, RequestHeaderFieldsTooLarge: 431 };
    const expected: Record<string, number> = { ...http };
    for (const [status, name] of SPEC_ERROR_TABLE) expected[name] = status;
    assert.deepEqual({ ...ERROR_STATUS }, expected);
    assert.equal(Object.keys(ERROR_STATUS).length, SPEC_ERROR_TABLE.length + 3);
    // ValidationException is 400 only: the HTTP conditions have names of their own.
    for (const status of Object.values(http)) assert.ok(!SPEC_ERROR_TABLE.some(([s]) => s === status));
  });

  test('XksError carries its errorName and the status from the table', () => {
    for (const [status, name] of SPEC_ERROR_TABLE) {
      const err = new XksError(name as keyof typeof ERROR_STATUS, 'message');
      assert.ok(err instanceof Error);
      assert.equal(err.errorName, name);
      assert.equal(err.statusCode, status);
      assert.equal(err.message, 'message');
    }
    assert.equal(new XksError('MethodNotAllowed', 'GET').statusCode, 405);
  });
});

describe('safeErrorMessage (spec: printable ASCII, fewer than 512 characters)', () => {
  test('printable ASCII passes unchanged', () => {
    const all = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)).join('');
    assert.equal(safeErrorMessage(all), all);
    assert.equal(safeErrorMessage(''), '');
  });

  test('control and non-ASCII characters do not survive; the printable text around them does', () => {
    const input = 'bad\nkey\t\u0000id\u007f: caf\u00e9 \u2603 \u{1F600} \uD800 end\r';
    const out = safeErrorMessage(input);
    assert.match(out, PRINTABLE_ASCII);
    for (const part of ['bad', 'key', 'id', ': caf', ' end']) assert.ok(out.includes(part), part);
    assert.ok(out.indexOf('bad') < out.indexOf('key') && out.indexOf('key') < out.indexOf(' end'));
  });

  test('is capped at 511 characters', () => {
    assert.equal(safeErrorMessage('x'.repeat(511)), 'x'.repeat(511));
    assert.equal(safeErrorMessage('x'.repeat(512)).length, 511);
    assert.equal(safeErrorMessage('y'.repeat(100_000)), 'y'.repeat(511));
    const mixed = safeErrorMessage('\u00e9'.repeat(2000));
    assert.ok(mixed.length <= 511);
    assert.match(mixed, PRINTABLE_ASCII);
  });
});

describe('toXksError', () => {
  test('an XksError is passed through as it is', () => {
    const err = new XksError('KeyNotFoundException', 'not found');
    assert.equal(toXksError(err), err);
  });

  test('HsmError kinds map to the spec errors', () => {
    const cases: Array<[ConstructorParameters<typeof HsmError>[0], string, number]> = [
      ['invalidCiphertext', 'InvalidCiphertextException', 400],
      ['keyUsage', 'InvalidKeyUsageException', 400],
      ['unavailable', 'InternalException', 500],
      ['failed', 'InternalException', 500],
    ];
    for (const [kind, errorName, status] of cases) {
      const cause = new HsmError(kind, `HSM said ${kind}`, 'CKR_GENERAL_ERROR');
      const err = toXksError(cause);
      assert.ok(err instanceof XksError);
      assert.equal(err.errorName, errorName, kind);
      assert.equal(err.statusCode, status);
      assert.equal(err.cause, cause);
    }
  });

  test("anything else is InternalException 'Internal error', with the original as cause only", () => {
    for (const thrown of [
      new TypeError("Cannot read properties of undefined (reading 'plaintext')"),
      new Error('secret detail: PIN 1234'),
      new RangeError('out of range'),
      'a string',
      undefined,
      null,
      { message: 'not an error' },
    ]) {
      const err = toXksError(thrown);
      assert.ok(err instanceof XksError);
      assert.equal(err.errorName, 'InternalException');
      assert.equal(err.statusCode, 500);
      assert.equal(err.message, 'Internal error');
      assert.equal(err.cause, thrown);
    }
  });
});

describe('parseRoute', () => {
  test("'/kms/xks/v1/health': GetHealthStatus, prefix ''", () => {
    assert.deepEqual(parseRoute('/kms/xks/v1/health'), {
      operation: 'GetHealthStatus',
      pathPrefix: '',
      keyId: undefined,
    });
  });

  test('the three key routes under a prefix', () => {
    for (const [suffix, operation] of [
      ['encrypt', 'Encrypt'],
      ['decrypt', 'Decrypt'],
      ['metadata', 'GetKeyMetadata'],
    ] as const) {
      assert.deepEqual(parseRoute(`/a/b/kms/xks/v1/keys/foo/${suffix}`), {
        operation,
        pathPrefix: '/a/b',
        keyId: 'foo',
      });
      assert.deepEqual(parseRoute(`/kms/xks/v1/keys/foo/${suffix}`), {
        operation,
        pathPrefix: '',
        keyId: 'foo',
      });
    }
  });

  test('health under a prefix, and key ids in the whole spec alphabet', () => {
    assert.deepEqual(parseRoute('/example/uri/path/prefix/kms/xks/v1/health'), {
      operation: 'GetHealthStatus',
      pathPrefix: '/example/uri/path/prefix',
      keyId: undefined,
    });
    const keyId = 'b42c7fbf-de61-441c-ae24-123456789012._Az';
    assert.equal(parseRoute(`/p/kms/xks/v1/keys/${keyId}/encrypt`)?.keyId, keyId);
  });

  test('no route for other paths', () => {
    for (const path of [
      '/kms/xks/v1/keys/foo/sign',
      '/kms/xks/v1/keys/a/b/encrypt',
      '/kms/xks/v2/health',
      '/kms/xks/v1/health/',
      '/kms/xks/v1/keys//encrypt',
      '/kms/xks/v1/keys/foo/encrypt/',
      '/kms/xks/v1/keys/foo',
      '/kms/xks/v1/keys/foo/Encrypt',
      '/kms/xks/v1/HEALTH',
      '/kms/xks/v1/',
      '/kms/xks/v1',
      '/kms/xks/health',
      '/health',
      'kms/xks/v1/health',
      '/kms/xks/v1/health?x=1',
      '',
      '/',
    ]) {
      assert.equal(parseRoute(path), undefined, path);
    }
  });
});
