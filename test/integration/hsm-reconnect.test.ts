// The HSM's reconnect interval (layers/pkcs11/pkcs11-hsm.ts), on a clock the test moves: after a
// failed connection, calls fail at once with its reason and without a PKCS#11 call until the
// interval has passed; then the next call connects again. A refused PIN is never tried again. The
// HSM is the test token reached through the fault-injecting module, in this process. A library
// that does not load is the same: an unavailable HSM, tried again after the interval.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { HsmError } from '../../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../../layers/pkcs11/pkcs11-hsm.ts';
import { buildFaultModule, faultHsmInThisProcess } from '../helpers/fault-hsm.ts';

const { setup, control } = faultHsmInThisProcess('hsm-reconnect');
const clock = { ms: 0 };
const opened: Pkcs11Hsm[] = [];
after(() => {
  for (const hsm of opened) hsm.close();
});

function connect(pin = setup.pin): Pkcs11Hsm {
  const hsm = new Pkcs11Hsm({
    modulePath: buildFaultModule(),
    libraryParameters: setup.config.hsm.libraryParameters,
    tokenLabel: setup.config.hsm.tokenLabel,
    pin,
    now: () => clock.ms,
  });
  opened.push(hsm);
  return hsm;
}

const aad = Buffer.from([0, 0, 1, 1]);
const encrypt = (hsm: Pkcs11Hsm) => hsm.encrypt({ label: 'foo', version: 1 }, randomBytes(16), aad);
const unavailable = (ckr: string) => (err: unknown) =>
  err instanceof HsmError && err.kind === 'unavailable' && err.ckr === ckr;

test('a failed re-initialisation: no PKCS#11 call for 1 s, the same error meanwhile, then a reconnection', () => {
  const hsm = connect();
  encrypt(hsm);
  control.resetTrace();
  control.set(['C_Encrypt fail CKR_DEVICE_ERROR count=1', 'C_Initialize fail CKR_DEVICE_ERROR count=1']);
  assert.throws(() => encrypt(hsm), unavailable('CKR_DEVICE_ERROR'));
  assert.deepEqual(
    control.trace().filter((fn) => fn === 'C_Initialize' || fn === 'C_Login'),
    ['C_Initialize'],
    'one attempt to initialise, no login after it failed',
  );
  control.resetTrace();
  clock.ms += 999;
  assert.throws(() => encrypt(hsm), unavailable('CKR_DEVICE_ERROR'));
  assert.deepEqual(control.trace(), [], 'no HSM call within the reconnect interval');
  clock.ms += 1;
  const sealed = encrypt(hsm);
  assert.equal(sealed.ciphertext.length, 16);
  assert.ok(control.calls('C_Initialize') === 1 && control.calls('C_Login') === 1, control.trace().join(' '));
  // Logged out with its last session: the next test's login is its own.
  hsm.close();
});

test('a refused PIN: never tried again, whatever the time', () => {
  control.resetTrace();
  const hsm = connect(`${setup.pin}-wrong`);
  assert.throws(() => encrypt(hsm), /HSM refused the PIN \(CKR_PIN_INCORRECT\); not trying it again/);
  clock.ms += 3_600_000;
  assert.throws(() => encrypt(hsm), unavailable('CKR_PIN_INCORRECT'));
  assert.equal(control.calls('C_Login'), 1, control.trace().join(' '));
});

test('a library that does not load (its C_GetFunctionList fails): unavailable, and loaded at a later attempt', () => {
  control.set(['C_GetFunctionList fail CKR_DEVICE_REMOVED']);
  const hsm = connect();
  assert.throws(() => encrypt(hsm), /^HsmError: PKCS#11 library not loaded: CKR_DEVICE_REMOVED/);
  control.clear();
  control.resetTrace();
  assert.throws(() => encrypt(hsm), /PKCS#11 library not loaded/);
  assert.deepEqual(control.trace(), [], 'no attempt within the reconnect interval');
  clock.ms += 1000;
  assert.equal(encrypt(hsm).ciphertext.length, 16);
  hsm.close();
});
