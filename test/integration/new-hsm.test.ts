// "Trying a new HSM" (docs/hsm.md) as a user does it, on the test HSM: a token the HSM's own tools
// made, with no key in it (NSS: certutil -N; SoftHSM: C_InitToken and C_InitPIN, as softhsm2-util
// does), then `xks-proxy keys create-test-keys --config FILE`, then the proxy with `--config FILE`
// (what `npm start -- --config FILE` runs) answering every route as AWS's XKS test client expects.
// The configuration docs/hsm.md shows is the proxy's own, valid as printed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../functions/config.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { HSM_FACTS, metadata, ROOT, type RunningProxy, startProxy } from '../helpers/proxy.ts';

let proxy: RunningProxy;
let created: string;
const sensitive: Buffer[] = [];

before(async () => {
  proxy = await startProxy({
    keys: [],
    beforeStart: (setup) => {
      const run = spawnSync(
        process.execPath,
        [join(ROOT, 'bin/xks-proxy.ts'), 'keys', 'create-test-keys', '--config', setup.configFile],
        { env: { ...process.env, ...setup.env }, encoding: 'utf8' },
      );
      assert.equal(run.status, 0, run.stderr);
      created = run.stdout;
    },
  });
});
after(async () => {
  await proxy?.stop();
});

function encrypt(key: string, extra: Record<string, unknown> = {}) {
  const plaintext = randomBytes(32);
  sensitive.push(plaintext);
  return proxy.xks(`keys/${key}/encrypt`, {
    requestMetadata: metadata('Encrypt'),
    plaintext: plaintext.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
    ...extra,
  });
}

function decrypt(key: string, encrypted: Record<string, string>) {
  // The Encrypt answer's fields as they are (a CDIV among them is a field Decrypt does not know).
  return proxy.xks(`keys/${key}/decrypt`, {
    requestMetadata: metadata('Decrypt'),
    encryptionAlgorithm: 'AES_GCM',
    ...encrypted,
  });
}

function assertError(res: { status: number; text: string; json: { errorName?: string } }, name: string) {
  assert.equal(res.status, 400, res.text);
  assert.equal(res.json.errorName, name);
}

test('keys create-test-keys made every key in the empty token', () => {
  for (const key of ['foo', 'encrypt_only_key', 'decrypt_only_key', 'impotent_key', 'xks-health-check']) {
    assert.match(created, new RegExp(`^ {2}${key} +AES_256 .* +created$`, 'm'));
  }
});

describe('every route, as the test client expects it', () => {
  test('GetHealthStatus: ACTIVE, the HSM named', async () => {
    const res = await proxy.xks('health', {
      requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.ekmVendor, HSM_FACTS[proxy.hsm].vendor);
    assert.equal(res.json.ekmFleetDetails[0].healthStatus, 'ACTIVE');
  });

  test('GetKeyMetadata: each key AES_256 with its usage', async () => {
    const expected: Array<[string, string[]]> = [
      ['foo', ['ENCRYPT', 'DECRYPT']],
      ['encrypt_only_key', ['ENCRYPT']],
      ['decrypt_only_key', ['DECRYPT']],
      ['impotent_key', []],
    ];
    for (const [key, keyUsage] of expected) {
      const res = await proxy.xks(`keys/${key}/metadata`, { requestMetadata: metadata('DescribeKey') });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json, { keySpec: 'AES_256', keyUsage, keyStatus: 'ENABLED' });
    }
  });

  test('Encrypt and Decrypt: foo round trips; each other key refuses what it may not do', async () => {
    const sealed = await encrypt('foo', { ciphertextDataIntegrityValueAlgorithm: 'SHA_256' });
    assert.equal(sealed.status, 200, sealed.text);
    const opened = await decrypt('foo', sealed.json);
    assert.equal(opened.status, 200, opened.text);
    assert.equal(Buffer.from(opened.json.plaintext, 'base64').length, 32);

    const encryptOnly = await encrypt('encrypt_only_key');
    assert.equal(encryptOnly.status, 200, encryptOnly.text);
    assertError(await decrypt('encrypt_only_key', encryptOnly.json), 'InvalidKeyUsageException');
    // A CDIV needs a verification decrypt (spec: Appendix C).
    assertError(
      await encrypt('encrypt_only_key', { ciphertextDataIntegrityValueAlgorithm: 'SHA_256' }),
      'InvalidKeyUsageException',
    );
    assertError(await encrypt('decrypt_only_key'), 'InvalidKeyUsageException');
    assertError(await decrypt('decrypt_only_key', sealed.json), 'InvalidCiphertextException');
    assertError(await encrypt('impotent_key'), 'InvalidKeyUsageException');
    assertError(await decrypt('impotent_key', sealed.json), 'InvalidKeyUsageException');
  });

  test('nothing sensitive reached the log', async () => {
    assertNoLeaks(await proxy.settledOutput(), proxy.secrets, sensitive);
  });
});

test('docs/hsm.md shows these steps, and its NSS configuration is valid', () => {
  const doc = readFileSync(join(ROOT, 'docs/hsm.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## 9. Trying a new HSM'));
  assert.ok(section.length < doc.length, 'the section is there');
  for (const step of [
    'certutil -N -d sql:',
    'npm run xks-proxy -- keys create-test-keys --config nss.json',
    'npm start -- --config nss.json',
  ]) {
    assert.ok(section.includes(step), step);
  }
  const json = /```json\n([\s\S]*?)\n```/.exec(section)?.[1];
  assert.ok(json, 'a JSON configuration');
  const config = parseConfig(JSON.parse(json), { XKS_HSM_PIN: 'from-the-environment' });
  assert.equal(config.hsm.profile, 'nss');
  assert.match(config.hsm.libraryParameters ?? '', /configdir='sql:[^']+'.*dbTokenDescription='xks-nss'/);
  assert.equal(config.hsm.tokenLabel, 'xks-nss');
});
