// GetHealthStatus, GetKeyMetadata and the spec's error table (every row that applies to this
// proxy so far), through the real local server (as API Gateway, or as an ALB when
// XKS_TEST_FRONT_DOOR=alb) and the test HSM (SoftHSM, or NSS softoken).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { assertNoLeaks } from '../helpers/leaks.ts';
import {
  expectedHsmId,
  HSM_FACTS,
  metadata,
  PREFIX,
  type RunningProxy,
  randomCredential,
  startProxy,
} from '../helpers/proxy.ts';
import { aws4Sign } from '../helpers/sign.ts';

let proxy: RunningProxy;
const sensitive: Buffer[] = [];

before(async () => {
  proxy = await startProxy();
});
after(async () => {
  await proxy?.stop();
});

function assertError(
  res: { status: number; json: { errorName?: string; errorMessage?: string } },
  status: number,
  name: string,
) {
  assert.equal(res.status, status, JSON.stringify(res.json));
  assert.equal(res.json.errorName, name);
  // Spec (Error codes): errorMessage is printable ASCII and shorter than 512 characters.
  if (res.json.errorMessage !== undefined) assert.match(res.json.errorMessage, /^[\x20-\x7e]{0,511}$/);
}

const healthBody = { requestMetadata: { kmsRequestId: 'health-1', kmsOperation: 'KmsHealthCheck' } };
const plaintext = () => {
  const bytes = randomBytes(32);
  sensitive.push(bytes);
  return bytes.toString('base64');
};
const encryptBody = (extra: Record<string, unknown> = {}) => ({
  requestMetadata: metadata('Encrypt'),
  plaintext: plaintext(),
  encryptionAlgorithm: 'AES_GCM',
  ...extra,
});
const decryptBody = (extra: Record<string, unknown> = {}) => ({
  requestMetadata: metadata('Decrypt'),
  ciphertext: plaintext(),
  encryptionAlgorithm: 'AES_GCM',
  initializationVector: randomBytes(12).toString('base64'),
  authenticationTag: randomBytes(16).toString('base64'),
  ...extra,
});

describe('GetHealthStatus', () => {
  test('answers a deep, schema-valid status', async () => {
    const res = await proxy.xks('health', healthBody);
    assert.equal(res.status, 200, res.text);
    const body = res.json;
    assert.ok(Number.isInteger(body.xksProxyFleetSize) && body.xksProxyFleetSize > 0);
    for (const field of ['xksProxyVendor', 'xksProxyModel', 'ekmVendor']) {
      assert.equal(typeof body[field], 'string');
      assert.ok(body[field].length > 0, field);
    }
    assert.equal(body.ekmVendor, HSM_FACTS[proxy.hsm].vendor);
    assert.ok(body.ekmFleetDetails.length >= 1 && body.ekmFleetDetails.length <= 10);
    const [hsm] = body.ekmFleetDetails;
    assert.equal(hsm.healthStatus, 'ACTIVE');
    assert.match(hsm.model, HSM_FACTS[proxy.hsm].model, 'model names the product and its version');
    // The token serial; NSS reports zeros for every token, so its configured name (the label).
    assert.equal(hsm.id, expectedHsmId(proxy, 'xks-test'));
    assert.equal(res.text.includes('\n'), false, 'single-line JSON');
  });

  test('checks with its own key, never a customer key: without that key it is UNAVAILABLE', async () => {
    const other = await startProxy({
      configure: (config) => {
        config.hsm.healthCheckKeyLabel = 'no-such-health-key';
      },
    });
    try {
      const res = await other.xks('health', healthBody);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.ekmFleetDetails[0].healthStatus, 'UNAVAILABLE');
      // ... while the customer keys themselves work.
      assert.equal((await other.xks('keys/foo/encrypt', encryptBody())).status, 200);
      await other.waitForOutput(/Deep health check failed/);
    } finally {
      await other.stop();
    }
  });

  test('without requestMetadata, or without its kmsRequestId or kmsOperation: 400 ValidationException', async () => {
    // The GetHealthStatus section makes both fields REQUIRED; AWS's public XKS test client expects
    // ValidationException for "{}" and for an empty requestMetadata.
    const cases: Array<[string, RegExp]> = [
      ['{}', /request is missing requestMetadata/],
      ['{"requestMetadata":{}}', /requestMetadata is missing kmsRequestId/],
      ['{"requestMetadata":{"kmsRequestId":"1"}}', /requestMetadata is missing kmsOperation/],
      ['{"requestMetadata":{"kmsOperation":"KmsHealthCheck"}}', /requestMetadata is missing kmsRequestId/],
      ['{"requestMetadata":7}', /requestMetadata must be object/],
      ['[]', /request must be object/],
      ['not json', /The body is not JSON/],
    ];
    for (const [body, message] of cases) {
      const res = await proxy.xks('health', body);
      assertError(res, 400, 'ValidationException');
      assert.match(res.json.errorMessage, message, body);
    }
  });

  test('an unknown kmsOperation, and unknown fields, are accepted', async () => {
    const res = await proxy.xks('health', {
      requestMetadata: { kmsRequestId: 'h-2', kmsOperation: 'SomeFutureOperation', somethingNew: 'x' },
      alsoNew: 1,
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.ekmFleetDetails[0].healthStatus, 'ACTIVE');
  });
});

describe('GetKeyMetadata', () => {
  const cases: Array<[string, string, string[]]> = [
    ['foo', 'AES_256', ['ENCRYPT', 'DECRYPT']],
    ['encrypt_only_key', 'AES_256', ['ENCRYPT']],
    ['decrypt_only_key', 'AES_256', ['DECRYPT']],
    ['impotent_key', 'AES_256', []],
    ['aes128', 'AES_128', ['ENCRYPT', 'DECRYPT']],
    ['hmac', 'GENERIC_SECRET_256', ['SIGN', 'VERIFY']],
  ];
  for (const [key, keySpec, keyUsage] of cases) {
    test(`${key}: ${keySpec} ${keyUsage.join('+') || 'no usage'}`, async () => {
      const res = await proxy.xks(`keys/${key}/metadata`, {
        requestMetadata: {
          awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
          kmsOperation: 'CreateKey',
          kmsRequestId: 'm-1',
        },
      });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json, { keySpec, keyUsage, keyStatus: 'ENABLED' });
    });
  }
});

describe('keys the customer disabled (spec: GetKeyMetadata keyStatus; InvalidStateException)', () => {
  const cases: Array<[string, string]> = [['disabled_key', 'listed in the key store disabledKeys']];
  for (const [key, why] of cases) {
    test(`${key} (${why}): DISABLED, and Encrypt/Decrypt are 400 InvalidStateException`, async () => {
      const meta = await proxy.xks(`keys/${key}/metadata`, { requestMetadata: metadata('DescribeKey') });
      assert.equal(meta.status, 200, meta.text);
      assert.deepEqual(meta.json, {
        keySpec: 'AES_256',
        keyUsage: ['ENCRYPT', 'DECRYPT'],
        keyStatus: 'DISABLED',
      });
      assertError(await proxy.xks(`keys/${key}/encrypt`, encryptBody()), 400, 'InvalidStateException');
      assertError(await proxy.xks(`keys/${key}/decrypt`, decryptBody()), 400, 'InvalidStateException');
    });
  }
});

describe('error table (spec: Error codes)', () => {
  test('400 ValidationException: invalid input, each message saying what is wrong with it', async () => {
    const bad: Array<[string, unknown, RegExp]> = [
      ['not JSON', '{"requestMetadata":', /^The body is not JSON$/],
      [
        'no requestMetadata',
        { plaintext: plaintext(), encryptionAlgorithm: 'AES_GCM' },
        /missing requestMetadata/,
      ],
      [
        'no plaintext',
        { requestMetadata: metadata('Encrypt'), encryptionAlgorithm: 'AES_GCM' },
        /missing plaintext/,
      ],
      ['empty plaintext', encryptBody({ plaintext: '' }), /^plaintext is empty$/],
      ['unpadded "AA"', encryptBody({ plaintext: 'AA' }), /^plaintext .*length is not a multiple of 4/],
      ['"A"', encryptBody({ plaintext: 'A' }), /^plaintext .*length is not a multiple of 4/],
      ['plaintext a number', encryptBody({ plaintext: 12 }), /^plaintext must be string$/],
      ['URL-safe Base64', encryptBody({ plaintext: '-_-_' }), /^plaintext is URL-safe Base64/],
      ['other characters', encryptBody({ plaintext: 'SGVs bG8=' }), /characters outside the standard Base64/],
      ['padding inside', encryptBody({ plaintext: 'SG=sbG8=' }), /"=" only as padding/],
      ['Base64 without padding', encryptBody({ plaintext: 'SGVsbG8' }), /length is not a multiple of 4/],
      ['non-canonical Base64', encryptBody({ plaintext: 'QR==' }), /^plaintext is not canonical Base64/],
      [
        'AAD not canonical',
        encryptBody({ additionalAuthenticatedData: 'QR==' }),
        /^additionalAuthenticatedData is not canonical/,
      ],
      [
        'wrong algorithm',
        encryptBody({ encryptionAlgorithm: 'AES_CBC' }),
        /^encryptionAlgorithm must be "AES_GCM"$/,
      ],
      [
        'wrong CDIV algorithm',
        encryptBody({ ciphertextDataIntegrityValueAlgorithm: 'SHA_1' }),
        /^ciphertextDataIntegrityValueAlgorithm must be "SHA_256"$/,
      ],
      [
        'no kmsRequestId',
        encryptBody({ requestMetadata: { ...metadata('Encrypt'), kmsRequestId: undefined } }),
        /^requestMetadata is missing kmsRequestId$/,
      ],
      [
        'kmsKeyArn not a string',
        encryptBody({ requestMetadata: { ...metadata('Encrypt'), kmsKeyArn: 5 } }),
        /^requestMetadata\.kmsKeyArn must be string$/,
      ],
      [
        'an ARN over 8192 characters',
        encryptBody({ requestMetadata: { ...metadata('Encrypt'), awsPrincipalArn: 'a'.repeat(8193) } }),
        /^requestMetadata\.awsPrincipalArn is longer than 8192 characters$/,
      ],
    ];
    for (const [name, body, message] of bad) {
      const res = await proxy.xks('keys/foo/encrypt', body);
      assertError(res, 400, 'ValidationException');
      assert.match(res.json.errorMessage, message, name);
    }
    const badDecrypt: Array<[string, Record<string, unknown>]> = [
      ['8-byte IV', { initializationVector: randomBytes(8).toString('base64') }],
      ['13-byte IV', { initializationVector: randomBytes(13).toString('base64') }],
      ['12-byte tag', { authenticationTag: randomBytes(12).toString('base64') }],
      ['17-byte tag', { authenticationTag: randomBytes(17).toString('base64') }],
      ['21-byte ciphertextMetadata', { ciphertextMetadata: randomBytes(21).toString('base64') }],
      ['no IV', { initializationVector: undefined }],
      ['no tag', { authenticationTag: undefined }],
    ];
    for (const [name, extra] of badDecrypt) {
      const res = await proxy.xks('keys/foo/decrypt', decryptBody(extra));
      assert.equal(res.json.errorName, 'ValidationException', name);
      assert.equal(res.status, 400);
      assert.match(
        res.json.errorMessage,
        /^(initializationVector must be 12 or 16 bytes|authenticationTag must be 16 bytes|ciphertextMetadata is longer than 20 bytes|request is missing (initializationVector|authenticationTag))/,
        name,
      );
    }
    const shortCiphertext = await proxy.xks('keys/foo/decrypt', decryptBody({ ciphertext: 'AA' }));
    assert.match(shortCiphertext.json.errorMessage, /^ciphertext .*length is not a multiple of 4/);
    const longId = 'k'.repeat(129);
    assertError(
      await proxy.xks(`keys/${longId}/metadata`, { requestMetadata: metadata('CreateKey') }),
      400,
      'ValidationException',
    );
    assertError(
      await proxy.xks('keys/a%20b/metadata', { requestMetadata: metadata('CreateKey') }),
      400,
      'ValidationException',
    );
  });

  test('400 InvalidCiphertextException: a ciphertext the key did not make', async () => {
    assertError(await proxy.xks('keys/foo/decrypt', decryptBody()), 400, 'InvalidCiphertextException');
  });

  test('400 InvalidKeyUsageException: the key does not allow the operation', async () => {
    assertError(
      await proxy.xks('keys/decrypt_only_key/encrypt', encryptBody()),
      400,
      'InvalidKeyUsageException',
    );
    assertError(await proxy.xks('keys/impotent_key/encrypt', encryptBody()), 400, 'InvalidKeyUsageException');
    assertError(
      await proxy.xks('keys/encrypt_only_key/decrypt', decryptBody()),
      400,
      'InvalidKeyUsageException',
    );
    assertError(await proxy.xks('keys/impotent_key/decrypt', decryptBody()), 400, 'InvalidKeyUsageException');
    // Not AES-256: AES-128 and an HMAC key.
    assertError(await proxy.xks('keys/aes128/encrypt', encryptBody()), 400, 'InvalidKeyUsageException');
    assertError(await proxy.xks('keys/hmac/decrypt', decryptBody()), 400, 'InvalidKeyUsageException');
    // A CDIV needs a verification decrypt (Appendix C), so it needs DECRYPT too.
    const cdiv = encryptBody({ ciphertextDataIntegrityValueAlgorithm: 'SHA_256' });
    assertError(await proxy.xks('keys/encrypt_only_key/encrypt', cdiv), 400, 'InvalidKeyUsageException');
    // ... and without CDIV the encrypt-only key encrypts.
    assert.equal((await proxy.xks('keys/encrypt_only_key/encrypt', encryptBody())).status, 200);
  });

  test('401 before anything else is judged: without credentials, a bad key id, body or key gets only 401', async () => {
    const stranger = { credential: randomCredential() };
    for (const [route, body] of [
      ['keys/a%20b/metadata', { requestMetadata: metadata('CreateKey') }],
      [`keys/${'k'.repeat(129)}/encrypt`, encryptBody()],
      ['keys/foo/encrypt', 'not json'],
      ['keys/foo/encrypt', encryptBody({ plaintext: 'AA' })],
      ['keys/not-a-key/metadata', { requestMetadata: metadata('DescribeKey') }],
      ['keys/disabled_key/encrypt', encryptBody()],
      ['health', '{}'],
    ] as const) {
      assertError(await proxy.xks(route, body, stranger), 401, 'AuthenticationFailedException');
      // Unsigned altogether: the same.
      const unsigned = await proxy.send({
        path: `${PREFIX}/kms/xks/v1/${route}`,
        body: JSON.stringify(body),
      });
      assertError(unsigned, 401, 'AuthenticationFailedException');
    }
    // Only the path prefix tells: an unknown one is 404 (spec: InvalidUriPathException), signed or not.
    assertError(
      await proxy.xks('keys/a%20b/metadata', {}, { ...stranger, prefix: '/nowhere' }),
      404,
      'InvalidUriPathException',
    );
  });

  test('401 for any query string (Appendix A: the canonical query string is ""), however the signer encoded it', async () => {
    for (const query of ['a=b', 'a=b+c', 'a=%2B', 'x=1&x=2', 'only-a-name', '%7E=~']) {
      for (const signer of ['smithy', 'aws4'] as const) {
        const res = await proxy.xks('keys/foo/encrypt', encryptBody(), {
          ...(signer === 'aws4' ? { signer: aws4Sign } : {}),
          pathSuffix: `?${query}`,
        });
        assertError(res, 401, 'AuthenticationFailedException');
        assert.equal(
          res.json.errorMessage,
          'SigV4 authentication failed: XKS requests have no query string',
          `${signer} ?${query}`,
        );
      }
    }
    // A bare "?" is no query string: signers and API Gateway alike see none.
    const res = await proxy.xks('keys/foo/encrypt', encryptBody(), { pathSuffix: '?' });
    assert.equal(res.status, 200, res.text);
  });

  test('401 AuthenticationFailedException: a bad signature', async () => {
    const res = await proxy.xks('keys/foo/encrypt', encryptBody(), {
      tamper: (req) => {
        req.body = req.body.replace('GenerateDataKey', 'Encrypt').replace('"Encrypt"', '"ReEncrypt"');
      },
    });
    assertError(res, 401, 'AuthenticationFailedException');
  });

  test('404 KeyNotFoundException: not in the key store, or not in the HSM', async () => {
    const body = { requestMetadata: metadata('CreateKey') };
    assertError(await proxy.xks('keys/nope/metadata', body), 404, 'KeyNotFoundException');
    assertError(await proxy.xks('keys/not_in_hsm/metadata', body), 404, 'KeyNotFoundException');
    assertError(await proxy.xks('keys/nope/encrypt', encryptBody()), 404, 'KeyNotFoundException');
    assertError(await proxy.xks('keys/nope/decrypt', decryptBody()), 404, 'KeyNotFoundException');
    // The health-check key exists in the HSM but is no customer key.
    assertError(await proxy.xks('keys/xks-health-check/encrypt', encryptBody()), 404, 'KeyNotFoundException');
  });

  test('404 InvalidUriPathException: unknown prefix or route, any method', async () => {
    const paths = [
      '/wrong/prefix/kms/xks/v1/health',
      `${PREFIX}/kms/xks/v2/health`,
      `${PREFIX}/kms/xks/v1/keys/foo/sign`,
      `${PREFIX}/kms/xks/v1/keys/foo`,
      `${PREFIX}/kms/xks/v1/health/`,
      '/',
      '/kms/xks/v1/keys/foo/bar/encrypt',
    ];
    for (const path of paths) {
      for (const method of ['POST', 'GET']) {
        const res = await proxy.send({
          method,
          path,
          headers: { 'content-type': 'application/json' },
          body: '{}',
        });
        assertError(res, 404, 'InvalidUriPathException');
      }
    }
    // A real route under another key store's prefix is unknown to this one.
    const res = await proxy.xks('health', healthBody, { prefix: '/test' });
    assertError(res, 404, 'InvalidUriPathException');
  });

  test('405 for GET (and other methods) on the four routes', async () => {
    for (const route of ['health', 'keys/foo/metadata', 'keys/foo/encrypt', 'keys/foo/decrypt']) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const res = await proxy.send({ method, path: `${PREFIX}/kms/xks/v1/${route}` });
        assert.equal(res.status, 405, `${method} ${route}`);
        assert.equal(res.headers.allow, 'POST');
        assert.equal(res.json.errorName, 'MethodNotAllowed');
      }
    }
  });

  test('501 UnsupportedOperationException: larger than this proxy supports', async () => {
    const big = randomBytes(65_537).toString('base64');
    assertError(
      await proxy.xks('keys/foo/encrypt', encryptBody({ plaintext: big })),
      501,
      'UnsupportedOperationException',
    );
    const bigAad = randomBytes(65_536).toString('base64');
    assertError(
      await proxy.xks('keys/foo/encrypt', encryptBody({ additionalAuthenticatedData: bigAad })),
      501,
      'UnsupportedOperationException',
    );
    assertError(
      await proxy.xks('keys/foo/decrypt', decryptBody({ ciphertext: big })),
      501,
      'UnsupportedOperationException',
    );
    // A body over the server's limit is refused while it is read.
    const huge = Buffer.alloc(2 * 1024 * 1024, 0x41);
    const res = await proxy.send({ path: `${PREFIX}/kms/xks/v1/keys/foo/encrypt`, body: huge });
    assertError(res, 501, 'UnsupportedOperationException');
  });

  test('still serving after all of the above', async () => {
    assert.equal((await proxy.xks('health', healthBody)).status, 200);
    assert.equal((await proxy.xks('keys/foo/encrypt', encryptBody())).status, 200);
  });
});

test('every request left one log line with its outcome; nothing sensitive was logged', async () => {
  const output = await proxy.settledOutput();
  const lines = output
    .split('\n')
    .filter((l) => l.startsWith('{"level"'))
    .map((l) => JSON.parse(l));
  const requests = lines.filter((l) => l.message === 'XKS request');
  assert.ok(requests.length > 40, `${requests.length} request lines`);
  for (const line of requests) {
    assert.ok(['success', 'error'].includes(line.outcome));
    assert.equal(typeof line.latencyMs, 'number');
    assert.equal(typeof line.audit?.mac, 'string', 'each line carries its audit record');
    if (line.outcome === 'error') assert.equal(typeof line.errorName, 'string');
  }
  const denied = requests.find((l) => l.errorName === 'InvalidKeyUsageException');
  assert.equal(denied?.keystore, 'test');
  assert.equal(denied?.kmsOperation, 'Encrypt');
  assert.equal(denied?.awsPrincipalArn, 'arn:aws:iam::123456789012:user/Alice');
  assertNoLeaks(output, proxy.secrets, sensitive);
});
