// The HSM is not there when the proxy starts (no token with the configured label): requests get the
// spec's errors, health says UNAVAILABLE, the process keeps serving, and once the token appears the
// proxy recovers by itself, without a restart.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { DEMO_KEYS, ensureSoftHsmToken } from '../../scripts/softhsm.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { metadata, type RunningProxy, startProxy } from '../helpers/proxy.ts';

let proxy: RunningProxy;
const LATE_TOKEN = 'late-token';

before(async () => {
  proxy = await startProxy({
    configure: (config) => {
      config.hsm.tokenLabel = LATE_TOKEN;
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
    assert.match(res.json.errorMessage, /^HSM unavailable: no token labelled 'late-token'/);
  }
  const meta = await proxy.xks('keys/foo/metadata', { requestMetadata: metadata('CreateKey') });
  assert.equal(meta.status, 500);
});

test('when the token appears, the next requests succeed without a restart', async () => {
  // The same SoftHSM configuration the proxy uses (the token folder under its state folder).
  process.env.SOFTHSM2_CONF = `${proxy.dir}/softhsm2.conf`;
  ensureSoftHsmToken({
    dir: proxy.dir,
    label: LATE_TOKEN,
    pin: proxy.pin,
    soPin: randomBytes(8).toString('hex'),
    keys: DEMO_KEYS,
  });
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
  assert.match(output, /CKR_TOKEN_NOT_PRESENT|No token labelled/);
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
