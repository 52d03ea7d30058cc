// The HSM is not there when the proxy starts (SoftHSM: no token with the configured label; NSS: no
// database where its library parameters say): requests get the spec's errors, health says
// UNAVAILABLE, the process keeps serving, and once the token appears the proxy recovers by itself,
// without a restart. Then an HSM the proxy can never use: a wrong PIN, wrong library parameters.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { nssLibraryParameters } from '../../scripts/nss.ts';
import { DEMO_KEYS } from '../../scripts/softhsm.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { ensureTestToken, metadata, type RunningProxy, startProxy, TEST_HSM } from '../helpers/proxy.ts';

let proxy: RunningProxy;
const LATE_TOKEN = 'late-token';
/**
 * Where the late NSS token's database will be. Read-only parameters: NSS would make an empty
 * database in the folder while the test makes the token there.
 */
const lateDir = (dir: string) => join(dir, 'late');

before(async () => {
  proxy = await startProxy({
    configure: (config, dir) => {
      config.hsm.tokenLabel = LATE_TOKEN;
      if (TEST_HSM === 'nss') {
        config.hsm.libraryParameters = nssLibraryParameters(
          join(lateDir(dir), 'nssdb'),
          LATE_TOKEN,
          'readOnly',
        );
      }
    },
  });
});
after(async () => {
  await proxy?.stop();
});

const health = () =>
  proxy.xks('health', { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } });
const encrypt = () =>
  proxy.xks('keys/foo/encrypt', {
    requestMetadata: metadata('Encrypt'),
    plaintext: randomBytes(32).toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  });

test('without the HSM: health is UNAVAILABLE, crypto is 500 InternalException', async () => {
  const h = await health();
  assert.equal(h.status, 200, h.text);
  assert.equal(h.json.ekmFleetDetails[0].healthStatus, 'UNAVAILABLE');
  for (let i = 0; i < 3; i++) {
    const res = await encrypt();
    assert.equal(res.status, 500, res.text);
    assert.equal(res.json.errorName, 'InternalException');
    // SoftHSM has no such token; NSS cannot open its database (C_Initialize fails).
    const why =
      proxy.hsm === 'nss'
        ? /^HSM unavailable \(CKR_[A-Z_]+\)$/
        : /^HSM unavailable: no token labelled 'late-token'/;
    assert.match(res.json.errorMessage, why);
  }
  const meta = await proxy.xks('keys/foo/metadata', { requestMetadata: metadata('CreateKey') });
  assert.equal(meta.status, 500);
});

test('when the token appears, the next requests succeed without a restart', async () => {
  // The same SoftHSM configuration the proxy uses (the token folder under its state folder); the
  // NSS database where the proxy's parameters look.
  const dir = proxy.hsm === 'nss' ? lateDir(proxy.dir) : proxy.dir;
  const soPin = randomBytes(8).toString('hex');
  ensureTestToken({ dir, label: LATE_TOKEN, pin: proxy.pin, soPin, keys: DEMO_KEYS });
  // Reconnection attempts are at most one a second: within a few seconds the proxy is back.
  let res = await encrypt();
  for (const deadline = Date.now() + 5000; res.status !== 200 && Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 200));
    res = await encrypt();
  }
  assert.equal(res.status, 200, res.text);
  const h = await health();
  assert.equal(h.json.ekmFleetDetails[0].healthStatus, 'ACTIVE');
});

test('the failures were logged with their cause, and without the PIN', async () => {
  const output = await proxy.settledOutput();
  assert.match(output, /"errorName":"InternalException"/);
  assert.match(
    output,
    proxy.hsm === 'nss' ? /HSM unavailable \(CKR_/ : /CKR_TOKEN_NOT_PRESENT|No token labelled/,
  );
  // Said at start-up, before any request asked (the worker reports its failed connection).
  assert.match(
    output,
    /"level":"ERROR","message":"HSM connection failed".*"hsm":"late-token","reason":"HSM unavailable/,
  );
  assertNoLeaks(output, proxy.secrets, []);
});

test('a wrong PIN: 500 InternalException naming CKR_PIN_INCORRECT, and the PIN in no log or answer', async () => {
  const wrong = await startProxy({
    configure: (config) => {
      config.hsm.pin = `${config.hsm.pin}-wrong`;
    },
  });
  try {
    const res = await wrong.xks('keys/foo/metadata', { requestMetadata: metadata('CreateKey') });
    assert.equal(res.status, 500);
    assert.equal(res.json.errorName, 'InternalException');
    assert.match(res.json.errorMessage, /HSM refused the PIN \(CKR_PIN_INCORRECT\); not trying it again/);
    // The refused PIN is remembered: later requests get the same answer without a new login.
    for (let i = 0; i < 3; i++) {
      const again = await wrong.xks('keys/foo/encrypt', {
        requestMetadata: metadata('Encrypt'),
        plaintext: 'AAAA',
        encryptionAlgorithm: 'AES_GCM',
      });
      assert.equal(again.json.errorMessage, res.json.errorMessage);
    }
    const h = await wrong.xks('health', {
      requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
    });
    assert.equal(h.json.ekmFleetDetails[0].healthStatus, 'UNAVAILABLE');
    const output = await wrong.settledOutput();
    const wrongPin = wrong.config.hsm.pin as string;
    assert.ok(!res.text.includes(wrongPin) && !h.text.includes(wrongPin));
    assertNoLeaks(output, [...wrong.secrets, wrongPin], []);
  } finally {
    await wrong.stop();
  }
});

test('library parameters the library does not take (SoftHSM given some, NSS none): 500 naming CKR_ARGUMENTS_BAD, UNAVAILABLE, and the reason logged at start-up', async () => {
  const wrong = await startProxy({
    configure: (config) => {
      if (config.hsm.libraryParameters === undefined)
        config.hsm.libraryParameters = "configdir='sql:/nowhere'";
      else delete config.hsm.libraryParameters;
    },
  });
  try {
    const started = await wrong.waitForOutput(/"message":"HSM connection failed"/);
    assert.match(
      started,
      /"message":"HSM connection failed".*"reason":"HSM unavailable \(CKR_ARGUMENTS_BAD\)"/,
    );
    const res = await wrong.xks('keys/foo/encrypt', {
      requestMetadata: metadata('Encrypt'),
      plaintext: randomBytes(16).toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
    });
    assert.equal(res.status, 500, res.text);
    assert.equal(res.json.errorName, 'InternalException');
    assert.equal(res.json.errorMessage, 'HSM unavailable (CKR_ARGUMENTS_BAD)');
    const h = await wrong.xks('health', {
      requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
    });
    assert.equal(h.json.ekmFleetDetails[0].healthStatus, 'UNAVAILABLE');
    assertNoLeaks(await wrong.settledOutput(), wrong.secrets, []);
  } finally {
    await wrong.stop();
  }
});
