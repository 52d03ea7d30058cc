// Taking over from the AWS sample proxy (aws-samples/aws-kms-xks-proxy) without re-encrypting: its
// ciphertexts are built here "the sample's way" with node:crypto, independently of the proxy code,
// from a key value the test imports into the proxy's token. The sample gives the HSM
// 2-byte BE len(AAD) || SHA-256(AAD) (only when there is an AAD) || 1-byte len(metadata) || metadata
// (its handlers/mod.rs build_full_aad), and answers every Encrypt with one static ciphertextMetadata.
// A key store with `awsSampleProxy` decrypts those; without it they are InvalidCiphertextException
// (spec: Decrypt; Error codes). The proxy's own ciphertexts are checked against the spec's AAD
// (spec: Encrypt, the ciphertextMetadata NOTE) with node:crypto as well.
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createVersion } from '../../bin/keys.ts';
import type { KeystoreConfig } from '../../functions/config.ts';
import { ensureSoftHsmToken } from '../../scripts/softhsm.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { metadata, PREFIX, type RunningProxy, startProxy } from '../helpers/proxy.ts';

/** The key value, known to the test only: the sample's ciphertexts are made with it outside the HSM. */
const KEY = randomBytes(32);
const LABEL = 'migrated';

/** The sample's static metadata in each key store (its ciphertext_metadata_b64). */
const STORES = {
  /** 'sample', 6 bytes. */
  static: { prefix: PREFIX, metadata: 'c2FtcGxl' },
  /** The sample configured without metadata: its ciphertexts have none. */
  none: { prefix: '/sample/none', metadata: '' },
  /** 0x01: the very value this proxy gives version 1. */
  collides: { prefix: '/sample/collides', metadata: 'AQ==' },
  /** 0x02 00000007: what this proxy would read as "key version 7". */
  versioned: { prefix: '/sample/versioned', metadata: 'AgAAAAc=' },
  /** No awsSampleProxy: a key store that never ran the sample. */
  plain: { prefix: '/plain', metadata: undefined },
} as const;
type Store = keyof typeof STORES;

let proxy: RunningProxy;
const sensitive: Buffer[] = [KEY];

before(async () => {
  proxy = await startProxy({
    configure(config, dir) {
      // The second key, imported with a known value into the token the setup just made.
      ensureSoftHsmToken({
        dir,
        label: 'xks-test',
        pin: config.hsm.pin as string,
        soPin: randomBytes(12).toString('base64url'), // unused: the token exists
        keys: [{ label: LABEL, encrypt: true, decrypt: true, value: KEY }],
      });
      config.hsm.keyCacheSeconds = 0; // a later test rotates the key
      const [first] = config.keystores as [KeystoreConfig];
      first.keys.push(LABEL);
      first.awsSampleProxy = { ciphertextMetadata: STORES.static.metadata };
      for (const name of ['none', 'collides', 'versioned', 'plain'] as const) {
        const store = STORES[name];
        config.keystores.push({
          name,
          pathPrefix: store.prefix,
          credentials: first.credentials ?? [],
          keys: [LABEL],
          ...(store.metadata === undefined ? {} : { awsSampleProxy: { ciphertextMetadata: store.metadata } }),
        });
      }
    },
  });
});
after(async () => {
  await proxy?.stop();
});

function secretBytes(n: number): Buffer {
  const bytes = randomBytes(n);
  sensitive.push(bytes);
  return bytes;
}

/** build_full_aad of the sample, written out from its description (not the proxy's awsSampleHsmAad). */
function sampleAad(aad: Buffer | undefined, ciphertextMetadata: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(aad?.length ?? 0);
  const digest = aad === undefined ? Buffer.alloc(0) : createHash('sha256').update(aad).digest();
  return Buffer.concat([length, digest, Buffer.from([ciphertextMetadata.length]), ciphertextMetadata]);
}

/** The spec's AAD (Encrypt, ciphertextMetadata NOTE): 2-byte BE len(AAD) || AAD || 1-byte len || metadata. */
function specAad(aad: Buffer | undefined, ciphertextMetadata: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(aad?.length ?? 0);
  return Buffer.concat([
    length,
    aad ?? Buffer.alloc(0),
    Buffer.from([ciphertextMetadata.length]),
    ciphertextMetadata,
  ]);
}

interface Ciphertext {
  plaintext: Buffer;
  /** The Decrypt request's fields, as KMS would send them. */
  fields: Record<string, string>;
}

/** What the sample's Encrypt returned: AES-256-GCM, 12-byte IV, 16-byte tag, its static metadata. */
function sampleEncrypt(store: Store, aad: Buffer | undefined, size = 32): Ciphertext {
  const metadataText = STORES[store].metadata ?? '';
  const ciphertextMetadata = Buffer.from(metadataText, 'base64');
  const plaintext = secretBytes(size);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', KEY, iv);
  cipher.setAAD(sampleAad(aad, ciphertextMetadata));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return {
    plaintext,
    fields: {
      ciphertext: ciphertext.toString('base64'),
      initializationVector: iv.toString('base64'),
      authenticationTag: cipher.getAuthTag().toString('base64'),
      // Without metadata the sample's response has none, and KMS sends none back.
      ...(ciphertextMetadata.length === 0 ? {} : { ciphertextMetadata: metadataText }),
      ...(aad === undefined ? {} : { additionalAuthenticatedData: aad.toString('base64') }),
    },
  };
}

async function decrypt(store: Store, fields: Record<string, string | undefined>) {
  return proxy.xks(
    `keys/${LABEL}/decrypt`,
    JSON.parse(
      JSON.stringify({ requestMetadata: metadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ...fields }),
    ),
    { prefix: STORES[store].prefix },
  );
}

async function assertDecrypts(store: Store, c: Ciphertext, what: string) {
  const res = await decrypt(store, c.fields);
  assert.equal(res.status, 200, `${what}: ${res.text}`);
  assert.ok(Buffer.from(res.json.plaintext, 'base64').equals(c.plaintext), `${what}: wrong plaintext`);
}

async function assertInvalid(store: Store, fields: Record<string, string | undefined>, what: string) {
  const res = await decrypt(store, fields);
  // Not the body: after a wrong success it holds the plaintext.
  assert.equal(res.status, 400, `${what}: ${res.json?.errorName ?? 'no error'}`);
  assert.equal(res.json.errorName, 'InvalidCiphertextException', `${what}: ${res.text}`);
}

async function proxyEncrypt(store: Store, aad: Buffer | undefined, size = 32): Promise<Ciphertext> {
  const plaintext = secretBytes(size);
  const res = await proxy.xks(
    `keys/${LABEL}/encrypt`,
    {
      requestMetadata: metadata('Encrypt'),
      plaintext: plaintext.toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
      ...(aad === undefined ? {} : { additionalAuthenticatedData: aad.toString('base64') }),
    },
    { prefix: STORES[store].prefix },
  );
  assert.equal(res.status, 200, res.text);
  const { ciphertext, ciphertextMetadata, initializationVector, authenticationTag } = res.json;
  return {
    plaintext,
    fields: {
      ciphertext,
      ciphertextMetadata,
      initializationVector,
      authenticationTag,
      ...(aad === undefined ? {} : { additionalAuthenticatedData: aad.toString('base64') }),
    },
  };
}

function flip(base64: string, byte = 0): string {
  const bytes = Buffer.from(base64, 'base64');
  bytes[byte] = (bytes[byte] as number) ^ 0x01;
  return bytes.toString('base64');
}

/** Decrypts with node:crypto and the given AAD encoding; undefined when the tag does not verify. */
function localDecrypt(c: Ciphertext, encode: typeof specAad): Buffer | undefined {
  const f = c.fields;
  const aad =
    f.additionalAuthenticatedData === undefined
      ? undefined
      : Buffer.from(f.additionalAuthenticatedData, 'base64');
  const decipher = createDecipheriv(
    'aes-256-gcm',
    KEY,
    Buffer.from(f.initializationVector as string, 'base64'),
  );
  decipher.setAAD(encode(aad, Buffer.from(f.ciphertextMetadata ?? '', 'base64')));
  decipher.setAuthTag(Buffer.from(f.authenticationTag as string, 'base64'));
  try {
    return Buffer.concat([decipher.update(Buffer.from(f.ciphertext as string, 'base64')), decipher.final()]);
  } catch {
    return undefined;
  }
}

describe('the sample proxy ciphertexts decrypt in a key store configured for it', () => {
  test('static metadata, with and without AAD', async () => {
    await assertDecrypts('static', sampleEncrypt('static', secretBytes(33)), 'with AAD');
    await assertDecrypts('static', sampleEncrypt('static', undefined), 'without AAD');
    await assertDecrypts('static', sampleEncrypt('static', secretBytes(8192), 4300), "the spec's sizes");
  });

  test('no metadata (the sample configured without one), with and without AAD', async () => {
    await assertDecrypts('none', sampleEncrypt('none', secretBytes(20)), 'with AAD');
    await assertDecrypts('none', sampleEncrypt('none', undefined), 'without AAD');
    // KMS might echo an empty field rather than none: the same ciphertext.
    const c = sampleEncrypt('none', secretBytes(20));
    const res = await decrypt('none', { ...c.fields, ciphertextMetadata: '' });
    if (res.status === 200) assert.ok(Buffer.from(res.json.plaintext, 'base64').equals(c.plaintext));
    else assert.equal(res.json?.errorName, 'ValidationException', res.text);
  });

  test("metadata that collides with this proxy's version 1 (0x01)", async () => {
    await assertDecrypts('collides', sampleEncrypt('collides', secretBytes(16)), 'with AAD');
    await assertDecrypts('collides', sampleEncrypt('collides', undefined), 'without AAD');
  });

  test("metadata that reads as this proxy's versioned format (0x02 || uint32 7)", async () => {
    await assertDecrypts('versioned', sampleEncrypt('versioned', secretBytes(16)), 'with AAD');
  });
});

describe('refused where they do not belong, or tampered with', () => {
  test('a key store without awsSampleProxy: 400 InvalidCiphertextException', async () => {
    for (const store of ['static', 'none', 'collides'] as const) {
      await assertInvalid('plain', sampleEncrypt(store, secretBytes(16)).fields, `${store}, with AAD`);
    }
    await assertInvalid('plain', sampleEncrypt('static', undefined).fields, 'static, without AAD');
    // Without an AAD, and with no metadata or 0x01, the sample gave the HSM the very bytes the spec's
    // encoding gives (0000 || 00, 0000 || 01 01): such a ciphertext is one of this proxy's own.
    await assertDecrypts('plain', sampleEncrypt('none', undefined), 'none, without AAD');
    await assertDecrypts('plain', sampleEncrypt('collides', undefined), 'collides, without AAD');
  });

  test("another key store's sample metadata: 400", async () => {
    await assertInvalid('none', sampleEncrypt('static', secretBytes(16)).fields, 'static in none');
    await assertInvalid('static', sampleEncrypt('none', secretBytes(16)).fields, 'none in static');
    await assertInvalid('collides', sampleEncrypt('static', undefined).fields, 'static in collides');
  });

  test('tampered sample ciphertexts: 400', async () => {
    for (const store of ['static', 'none', 'collides'] as const) {
      const c = sampleEncrypt(store, secretBytes(16));
      const f = c.fields;
      await assertDecrypts(store, c, `${store}: untouched`);
      await assertInvalid(store, { ...f, ciphertext: flip(f.ciphertext as string) }, `${store}: ciphertext`);
      await assertInvalid(
        store,
        { ...f, authenticationTag: flip(f.authenticationTag as string, 15) },
        `${store}: tag`,
      );
      await assertInvalid(
        store,
        { ...f, initializationVector: flip(f.initializationVector as string) },
        `${store}: IV`,
      );
      const aad = Buffer.from(f.additionalAuthenticatedData as string, 'base64');
      await assertInvalid(
        store,
        { ...f, additionalAuthenticatedData: flip(aad.toString('base64')) },
        `${store}: AAD`,
      );
      await assertInvalid(store, { ...f, additionalAuthenticatedData: undefined }, `${store}: AAD left out`);
      // The AAD's digest given as the AAD: the sample's encoding must not let it through.
      const digest = createHash('sha256').update(aad).digest('base64');
      await assertInvalid(
        store,
        { ...f, additionalAuthenticatedData: digest },
        `${store}: SHA-256(AAD) as AAD`,
      );
    }
    const c = sampleEncrypt('static', undefined);
    await assertInvalid('static', { ...c.fields, ciphertextMetadata: flip('c2FtcGxl') }, 'metadata changed');
    await assertInvalid('static', { ...c.fields, ciphertextMetadata: undefined }, 'metadata left out');
  });
});

describe("the proxy's own ciphertexts in the same key stores", () => {
  test('Encrypt output decrypts through the proxy in every key store, sample or not', async () => {
    for (const store of ['static', 'none', 'collides', 'plain'] as const) {
      const c = await proxyEncrypt(store, secretBytes(40));
      assert.equal(c.fields.ciphertextMetadata, 'AQ==', 'version 1');
      await assertDecrypts(store, c, `${store}: proxy-made with AAD`);
      await assertDecrypts(store, await proxyEncrypt(store, undefined), `${store}: proxy-made without AAD`);
    }
  });

  test("Encrypt output is AES-256-GCM under the spec's AAD, not the sample's", async () => {
    for (const aad of [secretBytes(33), undefined, secretBytes(8192)]) {
      const c = await proxyEncrypt('static', aad);
      assert.equal(Buffer.from(c.fields.initializationVector as string, 'base64').length, 12);
      assert.equal(Buffer.from(c.fields.authenticationTag as string, 'base64').length, 16);
      const plaintext = localDecrypt(c, specAad);
      assert.ok(plaintext?.equals(c.plaintext), "node:crypto with the spec's AAD decrypts it");
      // Without an AAD the two encodings are the same bytes; with one, only the spec's opens it.
      if (aad !== undefined) assert.ok(localDecrypt(c, sampleAad) === undefined, "the sample's AAD does not");
    }
    // And the test's own sample encoder is the one node:crypto checks the other way round.
    const sample = sampleEncrypt('static', secretBytes(12));
    assert.ok(localDecrypt(sample, sampleAad)?.equals(sample.plaintext));
    assert.ok(localDecrypt(sample, specAad) === undefined);
  });

  test('after a rotation the sample ciphertexts still decrypt with version 1', async () => {
    const before = [sampleEncrypt('static', secretBytes(16)), sampleEncrypt('collides', secretBytes(16))];
    const ours = await proxyEncrypt('collides', secretBytes(16));
    const { created } = createVersion(
      { modulePath: proxy.config.hsm.modulePath, tokenLabel: 'xks-test', pin: proxy.pin },
      LABEL,
      { encrypt: true, decrypt: true },
    );
    assert.equal(created.version, 2);
    const after = await proxyEncrypt('collides', secretBytes(16));
    assert.equal(after.fields.ciphertextMetadata, 'AgAAAAI=', 'the proxy encrypts with version 2 now');
    // Version 2 is a key generated in the HSM: node:crypto with the imported value cannot open it.
    assert.ok(localDecrypt(after, specAad) === undefined);
    await assertDecrypts('static', before[0] as Ciphertext, 'static sample after rotation');
    await assertDecrypts('collides', before[1] as Ciphertext, 'colliding sample after rotation');
    await assertDecrypts('static', sampleEncrypt('static', undefined), 'new sample ciphertext');
    await assertDecrypts('collides', ours, 'proxy v1 after rotation');
    await assertDecrypts('collides', after, 'proxy v2');
  });
});

test('the proxy logged no PIN, secret, key, plaintext or AAD', async () => {
  assertNoLeaks(await proxy.settledOutput(), proxy.secrets, sensitive);
});
