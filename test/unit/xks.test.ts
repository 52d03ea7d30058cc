// XKS domain rules (spec: Encrypt, the ciphertextMetadata NOTE on the HSM AAD; Appendix C, the CDIV;
// Base64 fields; size limits; key lookup and usage).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { XksError } from '../../functions/errors.ts';
import {
  awsSampleHsmAad,
  cdiv,
  ciphertextMetadataFor,
  decodeBase64,
  decodeSized,
  findKey,
  hsmAad,
  keyVersionOf,
  LIMITS,
  METADATA_V1,
  requireUsage,
} from '../../functions/xks.ts';
import type { Hsm, HsmKey, KeyUsage } from '../../layers/pkcs11/hsm.ts';

function assertXksError(fn: () => unknown, errorName: string, hidden: readonly string[] = []): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof XksError, `expected an XksError, got ${String(err)}`);
    assert.equal(err.errorName, errorName);
    for (const value of hidden) assert.ok(!err.message.includes(value), 'the message repeats the value');
    return true;
  });
}

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ''), 'hex');

// ---------------------------------------------------------------------------------------------
// Appendix C

describe('CDIV (spec Appendix C)', () => {
  const aad = Buffer.from('project=nile,department=marketing');
  const metadata = Buffer.from('key_version=1');
  const iv = Buffer.from('HMrlRw85cAJUd5Ax', 'base64');
  const ciphertext = Buffer.from('ghxkK1txeDNn3q8Y', 'base64');
  const tag = Buffer.from('vBxN2ncH1oEkR8WVXpmyYQ==', 'base64');

  // The 86 bytes exactly as the spec prints them.
  const SPEC_BYTES = hex(`
    70 72 6f 6a 65 63 74 3d  6e 69 6c 65 2c 64 65 70
    61 72 74 6d 65 6e 74 3d  6d 61 72 6b 65 74 69 6e
    67
    6b 65 79 5f 76 65 72 73  69 6f 6e 3d 31
    1c ca e5 47 0f 39 70 02  54 77 90 31
    82 1c 64 2b 5b 71 78 33  67 de af 18
    bc 1c 4d da 77 07 d6 81  24 47 c5 95 5e 99 b2 61
  `);
  const SPEC_SHA256_HEX = 'a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7';
  const SPEC_CDIV = 'qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=';

  test('the example fields have the sizes the spec states', () => {
    assert.deepEqual(
      [aad.length, metadata.length, iv.length, ciphertext.length, tag.length],
      [33, 13, 12, 12, 16],
    );
    // The Encrypt response example carries the same metadata in Base64.
    assert.equal(metadata.toString('base64'), 'a2V5X3ZlcnNpb249MQ==');
  });

  test('the concatenation is the 86 bytes of the spec', () => {
    const concatenated = Buffer.concat([aad, metadata, iv, ciphertext, tag]);
    assert.equal(SPEC_BYTES.length, 86);
    assert.equal(concatenated.toString('hex'), SPEC_BYTES.toString('hex'));
    assert.equal(createHash('sha256').update(SPEC_BYTES).digest('hex'), SPEC_SHA256_HEX);
  });

  test("cdiv() gives the spec's value", () => {
    assert.equal(cdiv(aad, metadata, iv, ciphertext, tag), SPEC_CDIV);
    assert.equal(Buffer.from(SPEC_CDIV, 'base64').toString('hex'), SPEC_SHA256_HEX);
  });

  test('without AAD: the hash of the rest only', () => {
    const expected = createHash('sha256')
      .update(Buffer.concat([metadata, iv, ciphertext, tag]))
      .digest('base64');
    assert.equal(cdiv(undefined, metadata, iv, ciphertext, tag), expected);
    assert.notEqual(expected, SPEC_CDIV);
    // "" is the identity of concatenation: an empty AAD is the same as none.
    assert.equal(cdiv(Buffer.alloc(0), metadata, iv, ciphertext, tag), expected);
  });

  test('without ciphertextMetadata: the hash of the rest only', () => {
    const expected = createHash('sha256')
      .update(Buffer.concat([aad, iv, ciphertext, tag]))
      .digest('base64');
    assert.equal(cdiv(aad, undefined, iv, ciphertext, tag), expected);
    assert.notEqual(expected, SPEC_CDIV);
  });

  test('without AAD and without ciphertextMetadata', () => {
    const expected = createHash('sha256')
      .update(Buffer.concat([iv, ciphertext, tag]))
      .digest('base64');
    assert.equal(cdiv(undefined, undefined, iv, ciphertext, tag), expected);
  });

  test('any changed byte changes the CDIV', () => {
    const parts = [aad, metadata, iv, ciphertext, tag];
    for (let i = 0; i < parts.length; i++) {
      const changed = parts.map((p) => Buffer.from(p));
      const target = changed[i] as Buffer;
      target[0] = (target[0] as number) ^ 0x80;
      const [a, m, v, c, t] = changed as [Buffer, Buffer, Buffer, Buffer, Buffer];
      assert.notEqual(cdiv(a, m, v, c, t), SPEC_CDIV, `field ${i}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// HSM AAD (spec: Encrypt, ciphertextMetadata NOTE)

describe('hsmAad: 2-byte BE len(AAD) || AAD || 1-byte len(metadata) || metadata', () => {
  test('no AAD, no metadata: 00 00 00', () => {
    assert.equal(hsmAad(undefined, undefined).toString('hex'), '000000');
    assert.equal(hsmAad(Buffer.alloc(0), Buffer.alloc(0)).toString('hex'), '000000');
  });

  test("AAD 'ab' and metadata 01: 00 02 61 62 01 01", () => {
    assert.equal(hsmAad(Buffer.from('ab'), Buffer.from([0x01])).toString('hex'), '000261620101');
  });

  test('AAD only, metadata only', () => {
    assert.equal(hsmAad(Buffer.from('ab'), undefined).toString('hex'), '0002616200');
    assert.equal(hsmAad(undefined, METADATA_V1).toString('hex'), '00000101');
  });

  test("the spec's swap case: metadata passed as AAD does not give the same HSM AAD", () => {
    const m = Buffer.from('key_version=1');
    const swapped = hsmAad(m, undefined);
    const original = hsmAad(undefined, m);
    assert.ok(!swapped.equals(original));
    // Both still carry the same bytes, only the lengths tell them apart.
    assert.equal(swapped.length, original.length);
    assert.equal(original.toString('hex'), `00000d${m.toString('hex')}`);
    assert.equal(swapped.toString('hex'), `000d${m.toString('hex')}00`);
  });

  test('moving bytes between AAD and metadata changes the HSM AAD', () => {
    const a = hsmAad(Buffer.from('abc'), Buffer.from('d'));
    const b = hsmAad(Buffer.from('ab'), Buffer.from('cd'));
    assert.ok(!a.equals(b));
  });

  test('8192-byte AAD: length 20 00', () => {
    const aad = Buffer.alloc(8192, 0x5a);
    const out = hsmAad(aad, METADATA_V1);
    assert.equal(out.length, 2 + 8192 + 1 + 1);
    assert.equal(out.subarray(0, 2).toString('hex'), '2000');
    assert.ok(out.subarray(2, 2 + 8192).equals(aad));
    assert.equal(out.subarray(2 + 8192).toString('hex'), '0101');
  });

  test('65535-byte AAD (LIMITS.aad): length ff ff', () => {
    assert.equal(LIMITS.aad, 65_535);
    const aad = Buffer.alloc(65_535, 0x01);
    const out = hsmAad(aad, undefined);
    assert.equal(out.length, 2 + 65_535 + 1);
    assert.equal(out.subarray(0, 2).toString('hex'), 'ffff');
    assert.ok(out.subarray(2, 2 + 65_535).equals(aad));
    assert.equal(out.at(-1), 0);
  });

  test('a 20-byte metadata (the spec maximum) has length byte 14', () => {
    const m = Buffer.alloc(20, 0xee);
    assert.equal(hsmAad(undefined, m).toString('hex'), `000014${m.toString('hex')}`);
  });

  test('an AAD one byte over LIMITS.aad never reaches hsmAad: decodeSized answers 501', () => {
    const tooLong = Buffer.alloc(LIMITS.aad + 1).toString('base64');
    assertXksError(
      () => decodeSized('additionalAuthenticatedData', tooLong, LIMITS.aad),
      'UnsupportedOperationException',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Base64 and sizes

describe('decodeBase64 and decodeSized', () => {
  test("canonical Base64 decodes: 'QQ==' is 41", () => {
    assert.equal(decodeBase64('plaintext', 'QQ==').toString('hex'), '41');
    assert.equal(decodeBase64('plaintext', 'SGVsbG8gV29ybGQh').toString(), 'Hello World!');
    assert.equal(decodeBase64('plaintext', '').length, 0);
  });

  test("non-canonical Base64 ('QR==', non-zero padding bits) is a ValidationException", () => {
    // Buffer.from would silently decode both to 41.
    assert.ok(Buffer.from('QR==', 'base64').equals(Buffer.from('QQ==', 'base64')));
    assertXksError(() => decodeBase64('plaintext', 'QR=='), 'ValidationException', ['QR==']);
    assertXksError(() => decodeBase64('plaintext', 'QUF='), 'ValidationException');
    // The spec's tag with its last character bumped: same bytes, different string.
    assertXksError(
      () => decodeBase64('authenticationTag', 'vBxN2ncH1oEkR8WVXpmyYR=='),
      'ValidationException',
    );
  });

  test('URL-safe, unpadded or otherwise non-standard Base64 is a ValidationException', () => {
    for (const value of ['-_-_', 'ab_c', 'QQ', 'QQ=', 'Q Q==', 'QQ==\n', '====', 'QQ==QQ==']) {
      assertXksError(() => decodeBase64('plaintext', value), 'ValidationException');
    }
  });

  test('the error message names the field, never the value', () => {
    assert.throws(
      () => decodeBase64('additionalAuthenticatedData', 'c2VjcmV0IGFhZB=='),
      (err: unknown) =>
        err instanceof XksError &&
        err.message.includes('additionalAuthenticatedData') &&
        !err.message.includes('c2VjcmV0IGFhZB'),
    );
  });

  test('decodeSized accepts exactly the limit and answers 501 one byte above', () => {
    for (const max of [LIMITS.data, LIMITS.aad, LIMITS.ciphertextMetadata, 1, 2, 3, 4300]) {
      const atLimit = Buffer.alloc(max, 0xa5);
      assert.ok(decodeSized('field', atLimit.toString('base64'), max).equals(atLimit), `max ${max}`);
      const over = Buffer.alloc(max + 1, 0xa5).toString('base64');
      assertXksError(() => decodeSized('field', over, max), 'UnsupportedOperationException');
    }
  });

  test('the sizes the spec requires are supported', () => {
    assert.ok(LIMITS.data >= 4300);
    assert.ok(LIMITS.aad >= 8192);
    assert.equal(LIMITS.ciphertextMetadata, 20);
    const plaintext = Buffer.alloc(4300, 1);
    assert.equal(plaintext.toString('base64').length, 5736); // as the spec says
    assert.ok(decodeSized('plaintext', plaintext.toString('base64'), LIMITS.data).equals(plaintext));
    const aad = Buffer.alloc(8192, 2);
    assert.equal(aad.toString('base64').length, 10924); // as the spec says
    assert.ok(decodeSized('additionalAuthenticatedData', aad.toString('base64'), LIMITS.aad).equals(aad));
  });

  test('a huge field is 501, and non-canonical within the limit stays 400', () => {
    assertXksError(
      () => decodeSized('plaintext', 'A'.repeat(10_000_000), LIMITS.data),
      'UnsupportedOperationException',
    );
    assertXksError(() => decodeSized('plaintext', 'QR==', LIMITS.data), 'ValidationException');
  });
});

describe('ciphertextMetadata: key versions', () => {
  test('version 1 is the single byte 01; none and empty are version 1 too', () => {
    assert.equal(METADATA_V1.toString('hex'), '01');
    assert.equal(ciphertextMetadataFor(1).toString('hex'), '01');
    assert.equal(keyVersionOf(undefined), 1);
    assert.equal(keyVersionOf(Buffer.alloc(0)), 1);
    assert.equal(keyVersionOf(Buffer.from([0x01])), 1);
  });

  test('later versions: 02 and a 4-byte big-endian version, round trip', () => {
    assert.equal(ciphertextMetadataFor(2).toString('hex'), '0200000002');
    assert.equal(ciphertextMetadataFor(258).toString('hex'), '0200000102');
    for (const v of [2, 3, 255, 256, 65_536, 999_999_999]) {
      const m = ciphertextMetadataFor(v);
      assert.ok(m.length <= 20, 'spec: ciphertextMetadata MUST NOT exceed 20 bytes');
      assert.equal(keyVersionOf(m), v);
    }
  });

  test('anything else is not ours', () => {
    for (const m of [
      Buffer.from([0x00]),
      Buffer.from([0x02]),
      Buffer.from([0x01, 0x00]),
      Buffer.from([0x00, 0x01]),
      Buffer.from('0200000001', 'hex'), // version 1 has its own one-byte form
      Buffer.from('0200000000', 'hex'),
      Buffer.from('020000000200', 'hex'),
      Buffer.from('key_version=1'),
      Buffer.alloc(20, 0x01),
    ]) {
      assert.equal(keyVersionOf(m), undefined, m.toString('hex'));
    }
  });
});

describe('awsSampleHsmAad: the AWS sample proxy encoding', () => {
  test('2-byte AAD length, SHA-256 of the AAD, 1-byte metadata length, metadata', () => {
    const aad = Buffer.from('context');
    const metadata = Buffer.from('a1b2', 'hex');
    const digest = createHash('sha256').update(aad).digest('hex');
    assert.equal(awsSampleHsmAad(aad, metadata).toString('hex'), `0007${digest}02a1b2`);
  });

  test('no AAD: a zero length and no digest; no metadata: a zero length byte', () => {
    assert.equal(awsSampleHsmAad(undefined, undefined).toString('hex'), '000000');
    assert.equal(awsSampleHsmAad(undefined, Buffer.from([0x07])).toString('hex'), '00000107');
  });
});

// ---------------------------------------------------------------------------------------------
// findKey and requireUsage, with a tiny in-memory Hsm (the HSM boundary)

function fakeHsm(keys: HsmKey[]): Hsm & { lookups: string[] } {
  const lookups: string[] = [];
  return {
    lookups,
    info: () => ({ id: 'fake', vendor: 'fake', model: 'fake' }),
    findKey: async (label) => {
      lookups.push(label);
      return keys.find((k) => k.label === label);
    },
    encrypt: () => Promise.reject(new Error('not used')),
    decrypt: () => Promise.reject(new Error('not used')),
    close: () => {},
  };
}

const key = (label: string, keySpec: string, usage: KeyUsage[]): HsmKey => ({
  label,
  version: 1,
  keySpec,
  usage: new Set(usage),
});

describe('findKey and requireUsage', () => {
  /** A key store that lists exactly these key ids. */
  const listing = (ids: string[]) => ({ allows: (id: string) => ids.includes(id) });
  const foo = key('foo', 'AES_256', ['ENCRYPT', 'DECRYPT']);
  const hidden = key('hidden', 'AES_256', ['ENCRYPT', 'DECRYPT']);

  test('a listed key the HSM has is found', async () => {
    const hsm = fakeHsm([foo, hidden]);
    assert.equal(await findKey(hsm, listing(['foo']), 'foo'), foo);
  });

  test('a key the HSM has but the key store does not list is KeyNotFound, and the HSM is not asked', async () => {
    const hsm = fakeHsm([foo, hidden]);
    await assert.rejects(findKey(hsm, listing(['foo']), 'hidden'), (err: unknown) => {
      assert.ok(err instanceof XksError, `expected an XksError, got ${String(err)}`);
      assert.equal(err.errorName, 'KeyNotFoundException');
      return true;
    });
    assert.deepEqual(hsm.lookups, []);
  });

  test('a listed key the HSM lacks is KeyNotFound, with the same message as an unlisted one', async () => {
    const hsm = fakeHsm([foo]);
    const messageOf = async (fn: () => Promise<unknown>): Promise<string> => {
      try {
        await fn();
      } catch (err) {
        assert.ok(err instanceof XksError);
        assert.equal(err.errorName, 'KeyNotFoundException');
        return err.message;
      }
      assert.fail('no error');
    };
    const notListed = await messageOf(() => findKey(hsm, listing(['foo']), 'hidden'));
    const notInHsm = await messageOf(() => findKey(hsm, listing(['foo', 'gone']), 'gone'));
    assert.deepEqual(hsm.lookups, ['gone']);
    assert.equal(notInHsm, notListed);
  });

  test('requireUsage: AES_256 with the usage passes', () => {
    requireUsage(foo, 'ENCRYPT');
    requireUsage(foo, 'DECRYPT');
  });

  test('requireUsage: missing usage or not AES_256 is InvalidKeyUsageException', () => {
    assertXksError(
      () => requireUsage(key('e', 'AES_256', ['ENCRYPT']), 'DECRYPT'),
      'InvalidKeyUsageException',
    );
    assertXksError(
      () => requireUsage(key('d', 'AES_256', ['DECRYPT']), 'ENCRYPT'),
      'InvalidKeyUsageException',
    );
    assertXksError(() => requireUsage(key('n', 'AES_256', []), 'ENCRYPT'), 'InvalidKeyUsageException');
    assertXksError(
      () => requireUsage(key('a128', 'AES_128', ['ENCRYPT', 'DECRYPT']), 'ENCRYPT'),
      'InvalidKeyUsageException',
    );
    assertXksError(
      () => requireUsage(key('hmac', 'GENERIC_SECRET', ['SIGN', 'VERIFY']), 'ENCRYPT'),
      'InvalidKeyUsageException',
    );
  });
});

test('decodeBase64 alone rejects what the schema pattern lets through: bad length or padding', () => {
  for (const value of ['SGVsbG8', 'SGVsbG8==', 'SGVsbA=', 'c2VjcmV0IGFhZA=', 'QQ=', '=', 'A']) {
    assert.throws(
      () => decodeBase64('field', value),
      (err: unknown) => err instanceof XksError && err.errorName === 'ValidationException',
      value,
    );
  }
  assert.equal(decodeBase64('field', 'SGVsbG8=').toString(), 'Hello');
  assert.equal(decodeBase64('field', '').length, 0);
});
