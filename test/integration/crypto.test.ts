// Encrypt and Decrypt through the real local server and the test HSM (SoftHSM, or NSS softoken):
// round trips at the spec's sizes, the CDIV, tampering, the AAD/ciphertextMetadata swap, and a log
// scan at the end.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { metadata, type RunningProxy, startProxy } from '../helpers/proxy.ts';

let proxy: RunningProxy;
const sensitive: Buffer[] = [];

before(async () => {
  proxy = await startProxy();
});
after(async () => {
  await proxy?.stop();
});

function secretBytes(n: number): Buffer {
  const bytes = randomBytes(n);
  sensitive.push(bytes);
  return bytes;
}

async function encrypt(plaintext: Buffer, extra: Record<string, unknown> = {}, key = 'foo') {
  return proxy.xks(`keys/${key}/encrypt`, {
    requestMetadata: metadata('GenerateDataKey'),
    plaintext: plaintext.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
    ...extra,
  });
}

async function decrypt(fields: Record<string, unknown>, key = 'foo') {
  return proxy.xks(`keys/${key}/decrypt`, {
    requestMetadata: metadata('Decrypt'),
    encryptionAlgorithm: 'AES_GCM',
    ...fields,
  });
}

function decryptFields(encrypted: Record<string, string>, aad?: Buffer) {
  return {
    ciphertext: encrypted.ciphertext,
    ciphertextMetadata: encrypted.ciphertextMetadata,
    initializationVector: encrypted.initializationVector,
    authenticationTag: encrypted.authenticationTag,
    ...(aad === undefined ? {} : { additionalAuthenticatedData: aad.toString('base64') }),
  };
}

function flip(base64: string, byte = 0): string {
  const bytes = Buffer.from(base64, 'base64');
  bytes[byte] = (bytes[byte] as number) ^ 0x01;
  return bytes.toString('base64');
}

describe('round trips', () => {
  const cases = [
    { name: '32 bytes, no AAD, no CDIV', size: 32, aad: 0, cdiv: false },
    { name: '32 bytes with AAD and CDIV', size: 32, aad: 33, cdiv: true },
    { name: '4300 bytes (spec maximum) with 8192 bytes of AAD and CDIV', size: 4300, aad: 8192, cdiv: true },
    { name: '1 byte', size: 1, aad: 0, cdiv: true },
    { name: '64 KiB (this proxy maximum) with 65535 bytes of AAD', size: 65_536, aad: 65_535, cdiv: false },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const plaintext = secretBytes(c.size);
      const aad = c.aad > 0 ? secretBytes(c.aad) : undefined;
      const extra: Record<string, unknown> = {};
      if (aad) extra.additionalAuthenticatedData = aad.toString('base64');
      if (c.cdiv) extra.ciphertextDataIntegrityValueAlgorithm = 'SHA_256';
      const enc = await encrypt(plaintext, extra);
      assert.equal(enc.status, 200, enc.text);
      assert.equal(enc.headers['content-type'], 'application/json');
      const iv = Buffer.from(enc.json.initializationVector, 'base64');
      const tag = Buffer.from(enc.json.authenticationTag, 'base64');
      const ciphertext = Buffer.from(enc.json.ciphertext, 'base64');
      const ciphertextMetadata = Buffer.from(enc.json.ciphertextMetadata, 'base64');
      assert.equal(iv.length, 12);
      assert.equal(tag.length, 16);
      assert.equal(ciphertext.length, plaintext.length, 'AES-GCM ciphertext is as long as the plaintext');
      // A 1-byte ciphertext equals its plaintext once in 256 encryptions by chance (CI saw it);
      // from 8 bytes on, a match is a proxy that did not encrypt. The round trip and CDIV check the rest.
      if (plaintext.length >= 8) assert.ok(!ciphertext.equals(plaintext), 'the ciphertext is the plaintext');
      assert.ok(ciphertextMetadata.length >= 1 && ciphertextMetadata.length <= 20);
      if (c.cdiv) {
        // Appendix C, recomputed here independently of the proxy's code.
        const expected = createHash('sha256')
          .update(Buffer.concat([aad ?? Buffer.alloc(0), ciphertextMetadata, iv, ciphertext, tag]))
          .digest('base64');
        assert.equal(enc.json.ciphertextDataIntegrityValue, expected);
      } else {
        assert.equal(enc.json.ciphertextDataIntegrityValue, undefined);
      }
      const dec = await decrypt(decryptFields(enc.json, aad));
      assert.equal(dec.status, 200, dec.text);
      assert.deepEqual(Object.keys(dec.json), ['plaintext']);
      assert.ok(Buffer.from(dec.json.plaintext, 'base64').equals(plaintext));
    });
  }

  test('two encryptions of the same plaintext use different IVs', async () => {
    const plaintext = secretBytes(32);
    const [a, b] = await Promise.all([encrypt(plaintext), encrypt(plaintext)]);
    assert.notEqual(a.json.initializationVector, b.json.initializationVector);
    assert.notEqual(a.json.ciphertext, b.json.ciphertext);
  });

  test('the spec example plaintext and AAD round trip', async () => {
    const enc = await encrypt(Buffer.from('Hello World!'), {
      additionalAuthenticatedData: 'cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n',
      ciphertextDataIntegrityValueAlgorithm: 'SHA_256',
    });
    assert.equal(enc.status, 200);
    const dec = await decrypt({
      ...decryptFields(enc.json),
      additionalAuthenticatedData: 'cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n',
    });
    assert.equal(dec.json.plaintext, 'SGVsbG8gV29ybGQh');
  });

  test('an unknown kmsOperation is accepted (spec: MUST NOT reject)', async () => {
    const res = await proxy.xks('keys/foo/encrypt', {
      requestMetadata: metadata('BulkEncrypt', {
        kmsFutureField: 'x',
        awsSourceVpc: 'vpc-1',
        awsSourceVpce: 'vpce-1',
      }),
      plaintext: secretBytes(16).toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
      someFutureTopLevelField: { nested: true },
    });
    assert.equal(res.status, 200, res.text);
  });

  test('ARNs of 2048 characters work', async () => {
    const arn = `arn:aws:iam::123456789012:role/${'r'.repeat(2048 - 31)}`;
    assert.equal(arn.length, 2048);
    const res = await proxy.xks('keys/foo/encrypt', {
      requestMetadata: metadata('Encrypt', { awsPrincipalArn: arn, kmsKeyArn: arn }),
      plaintext: secretBytes(16).toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
    });
    assert.equal(res.status, 200, res.text);
  });
});

describe('tampering is InvalidCiphertextException', () => {
  let aad: Buffer;
  let good: Record<string, string>;
  before(async () => {
    aad = secretBytes(40);
    const enc = await encrypt(secretBytes(100), { additionalAuthenticatedData: aad.toString('base64') });
    assert.equal(enc.status, 200);
    good = decryptFields(enc.json, aad) as Record<string, string>;
  });

  const tampers: Array<[string, (f: Record<string, string>) => void]> = [
    [
      'a ciphertext bit',
      (f) => {
        f.ciphertext = flip(f.ciphertext as string, 5);
      },
    ],
    [
      'an IV bit',
      (f) => {
        f.initializationVector = flip(f.initializationVector as string);
      },
    ],
    [
      'a tag bit',
      (f) => {
        f.authenticationTag = flip(f.authenticationTag as string, 15);
      },
    ],
    [
      'an AAD bit',
      (f) => {
        f.additionalAuthenticatedData = flip(f.additionalAuthenticatedData as string, 39);
      },
    ],
    [
      'AAD left out',
      (f) => {
        delete f.additionalAuthenticatedData;
      },
    ],
    [
      'ciphertextMetadata left out',
      (f) => {
        delete f.ciphertextMetadata;
      },
    ],
    [
      'ciphertextMetadata changed',
      (f) => {
        f.ciphertextMetadata = Buffer.from([2]).toString('base64');
      },
    ],
    [
      'a 16-byte IV instead of 12',
      (f) => {
        f.initializationVector = randomBytes(16).toString('base64');
      },
    ],
    [
      'ciphertext truncated',
      (f) => {
        f.ciphertext = Buffer.from(f.ciphertext as string, 'base64')
          .subarray(1)
          .toString('base64');
      },
    ],
  ];
  for (const [name, change] of tampers)
    test(name, async () => {
      const fields = { ...good };
      change(fields);
      const res = await decrypt(fields);
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.errorName, 'InvalidCiphertextException');
    });

  test('the untampered request still decrypts (the session survived every failure)', async () => {
    const res = await decrypt(good);
    assert.equal(res.status, 200, res.text);
  });

  test('decrypting with another key of the key store fails', async () => {
    const res = await decrypt(good, 'decrypt_only_key');
    assert.equal(res.json.errorName, 'InvalidCiphertextException');
  });
});

test('the AAD/ciphertextMetadata swap of the spec NOTE does not decrypt', async () => {
  // Encrypt without AAD; the response has ciphertextMetadata M. Decrypt passing M as the AAD and
  // no ciphertextMetadata: the length-prefixed AAD encoding makes the two differ.
  const enc = await encrypt(secretBytes(32));
  assert.equal(enc.status, 200);
  const swapped = await decrypt({
    ciphertext: enc.json.ciphertext,
    initializationVector: enc.json.initializationVector,
    authenticationTag: enc.json.authenticationTag,
    additionalAuthenticatedData: enc.json.ciphertextMetadata,
  });
  assert.equal(swapped.status, 400);
  assert.equal(swapped.json.errorName, 'InvalidCiphertextException');
});

test('nothing sensitive reached the logs', async () => {
  const output = await proxy.settledOutput();
  assertNoLeaks(output, proxy.secrets, sensitive);
  assert.match(output, /"kmsRequestId":"req-/, 'the request log lines are there');
});
