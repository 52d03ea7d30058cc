// The fault-injecting PKCS#11 module itself, through pkcs11js and without the proxy: its rules (fail,
// delay with jitter, hang, count, every), its trace, and its isolation from a second user of the
// library it wraps in the same process: the test HSM (SoftHSM, or NSS softoken, which reads
// C_Initialize's library parameters: the module hands them on).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type * as pkcs11 from 'pkcs11js';
import { findSecretKeys, findToken, initializeArgs, openSession, P } from '../../layers/pkcs11/session.ts';
import { buildFaultModule, FaultControl } from '../helpers/fault-hsm.ts';
import { ensureTestToken, TEST_HSM, type TestToken } from '../helpers/proxy.ts';

const LABEL = 'fault-module-test';
const KEY = 'fault-key';
const aad = Buffer.from('fault-module aad');

interface Connection {
  lib: pkcs11.PKCS11;
  session: Buffer;
  key: Buffer;
}

let dir: string;
let pin: string;
let token: TestToken;
/** C_Initialize's argument for the wrapped library, through the module or not. */
const initArgs = () => initializeArgs(token.libraryParameters);
let control: FaultControl;
let faulty: Connection;
let direct: Connection | undefined;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'fault-module-'));
  pin = randomBytes(12).toString('hex');
  token = ensureTestToken({
    dir,
    label: LABEL,
    pin,
    soPin: randomBytes(12).toString('hex'),
    keys: [{ label: KEY, encrypt: true, decrypt: true }],
  });
  control = new FaultControl(join(dir, 'fault'));
  // Read by the module when it is loaded and at C_Initialize: this process is the "proxy".
  Object.assign(process.env, token.env, control.env());
  const lib = new P.PKCS11();
  lib.load(buildFaultModule());
  lib.C_Initialize(initArgs());
  faulty = connect(lib);
});

after(() => {
  for (const lib of [faulty?.lib, direct?.lib]) {
    try {
      lib?.C_Finalize();
    } catch {
      // Already finalized by a test.
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

function connect(lib: pkcs11.PKCS11): Connection {
  const found = findToken(lib, { tokenLabel: LABEL });
  assert.ok('slot' in found, 'the test token is visible');
  // Login state is per token and per process: the other user may have logged in (openSession allows it).
  const session = openSession(lib, found.slot, { pin });
  const [key] = findSecretKeys(lib, session, KEY, 1);
  assert.ok(key, 'the test key is found');
  return { lib, session, key };
}

function gcm(iv: Buffer): pkcs11.Mechanism {
  // CK_PARAMS_GCM: every field of CK_GCM_PARAMS set (NSS insists on ulIvBits).
  const parameter: pkcs11.GcmParams = { type: P.CK_PARAMS_GCM, iv, ivBits: 96, aad, tagBits: 128 };
  return { mechanism: P.CKM_AES_GCM, parameter };
}

function encryptInit({ lib, session, key }: Connection): Buffer {
  const iv = randomBytes(12);
  lib.C_EncryptInit(session, gcm(iv), key);
  return iv;
}

function encrypt(c: Connection, plaintext: Buffer): { iv: Buffer; sealed: Buffer } {
  const iv = encryptInit(c);
  return { iv, sealed: c.lib.C_Encrypt(c.session, plaintext, Buffer.alloc(plaintext.length + 16)) };
}

function decrypt({ lib, session, key }: Connection, iv: Buffer, sealed: Buffer): Buffer {
  lib.C_DecryptInit(session, gcm(iv), key);
  return lib.C_Decrypt(session, sealed, Buffer.alloc(sealed.length));
}

function roundTrip(c: Connection): void {
  const plaintext = randomBytes(40);
  const { iv, sealed } = encrypt(c, plaintext);
  assert.equal(sealed.length, plaintext.length + 16);
  assert.ok(decrypt(c, iv, sealed).equals(plaintext));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('without rules, calls go through: an AES-GCM round trip, and C_GetInfo names the wrapper', () => {
  control.clear();
  roundTrip(faulty);
  const info = faulty.lib.C_GetInfo();
  const target = TEST_HSM === 'nss' ? 'Mozilla Foundation' : 'SoftHSM';
  // A 32-character field.
  assert.equal(info.manufacturerID.trim(), `fault-pkcs11 over ${target}`.slice(0, 32));
  assert.equal(info.libraryDescription.trim(), 'Fault-injecting PKCS#11 wrapper');
});

test('fail with count=1: exactly one call fails, with that code, and the next succeeds', () => {
  control.set(['C_Encrypt fail CKR_DEVICE_ERROR count=1']);
  assert.throws(() => encrypt(faulty, randomBytes(16)), { code: P.CKR_DEVICE_ERROR });
  // Also proves the failed C_Encrypt ended the operation: else C_EncryptInit says CKR_OPERATION_ACTIVE.
  roundTrip(faulty);
  roundTrip(faulty);

  const { iv, sealed } = encrypt(faulty, randomBytes(16));
  control.set(['C_Decrypt fail CKR_ENCRYPTED_DATA_INVALID count=1', 'C_DecryptInit fail 0x30 count=1']);
  assert.throws(() => decrypt(faulty, iv, sealed), { code: P.CKR_DEVICE_ERROR }); // 0x30 at the Init
  assert.throws(() => decrypt(faulty, iv, sealed), { code: P.CKR_ENCRYPTED_DATA_INVALID });
  assert.equal(decrypt(faulty, iv, sealed).length, 16);
  control.clear();
});

test('every file change starts the counters over; a rule for * matches any function', () => {
  control.set(['C_GenerateRandom fail CKR_DEVICE_REMOVED count=1']);
  const random = () => faulty.lib.C_GenerateRandom(faulty.session, Buffer.alloc(8));
  assert.throws(random, { code: P.CKR_DEVICE_REMOVED });
  random();
  control.set(['C_GenerateRandom fail CKR_DEVICE_REMOVED count=1']); // same text, new version
  assert.throws(random, { code: P.CKR_DEVICE_REMOVED });
  control.set(['# comments and blank lines are fine', '', '* fail CKR_GENERAL_ERROR count=2']);
  assert.throws(random, { code: P.CKR_GENERAL_ERROR });
  assert.throws(() => faulty.lib.C_GetSessionInfo(faulty.session), { code: P.CKR_GENERAL_ERROR });
  random();
  control.clear();
});

test('delay: the call takes at least that long, and delays on several threads overlap', async () => {
  control.set(['C_EncryptInit delay 120 count=1']);
  let start = performance.now();
  roundTrip(faulty);
  assert.ok(performance.now() - start >= 120, 'C_EncryptInit waited 120 ms');
  start = performance.now();
  roundTrip(faulty);
  assert.ok(performance.now() - start < 100, 'count=1: the second call is not delayed');

  // Three sessions, three libuv threads: the module's lock is not held while a call sleeps.
  const others = [0, 1, 2].map(() => ({
    ...faulty,
    session: faulty.lib.C_OpenSession(slotOf(faulty), P.CKF_SERIAL_SESSION),
  }));
  for (const c of others) encryptInit(c);
  control.set(['C_Encrypt delay 150']);
  start = performance.now();
  await Promise.all(others.map((c) => c.lib.C_EncryptAsync(c.session, randomBytes(16), Buffer.alloc(32))));
  const elapsed = performance.now() - start;
  assert.ok(elapsed >= 150 && elapsed < 400, `3 parallel delayed calls took ${elapsed.toFixed(0)} ms`);
  control.clear();
  for (const c of others) faulty.lib.C_CloseSession(c.session);
});

test('delay with jitter=: fractional ms, spread within ms ± jitter; every=N fires on every Nth call only', () => {
  const random = () => faulty.lib.C_GenerateRandom(faulty.session, Buffer.alloc(8));
  const timed = () => {
    const start = performance.now();
    random();
    return performance.now() - start;
  };
  control.set(['C_GenerateRandom delay 4 jitter=2.5']);
  const jittered = Array.from({ length: 40 }, timed).sort((a, b) => a - b);
  const [fastest, slowest] = [jittered[0] as number, jittered.at(-1) as number];
  assert.ok(fastest >= 1.5, `no call below 4 - 2.5 ms (fastest ${fastest.toFixed(2)} ms)`);
  // Uniform over 5 ms: 40 draws spread over more than 2 ms unless the jitter is ignored.
  assert.ok(slowest - fastest > 2, `calls spread (${fastest.toFixed(2)}..${slowest.toFixed(2)} ms)`);

  control.set(['C_GenerateRandom delay 0.6']);
  assert.ok(Math.min(...Array.from({ length: 5 }, timed)) >= 0.6, 'fractional milliseconds');

  // every=4: calls 4 and 8 meet the slow rule; the others fall through to the next rule.
  control.set(['C_GenerateRandom delay 60 every=4', 'C_GenerateRandom fail CKR_DEVICE_ERROR every=3']);
  const outcomes = Array.from({ length: 8 }, () => {
    try {
      return timed() >= 60 ? 'slow' : 'ok';
    } catch (error) {
      assert.equal((error as { code?: number }).code, P.CKR_DEVICE_ERROR);
      return 'fail';
    }
  });
  // The second rule counts only the calls the first lets through (1 2 3 5 6 7): its 3rd and 6th fail.
  assert.deepEqual(outcomes, ['ok', 'ok', 'fail', 'slow', 'ok', 'ok', 'fail', 'slow']);
  control.clear();
});

function slotOf(c: Connection): Buffer {
  const slot = c.lib.C_GetSlotList(true).find((s) => c.lib.C_GetTokenInfo(s).label.trim() === LABEL);
  assert.ok(slot);
  return slot;
}

test('hang: the call blocks until the control file changes, then meets the new rules', async () => {
  const plaintext = randomBytes(16);
  let iv = encryptInit(faulty);
  control.set(['C_Encrypt hang count=1']);
  let settled = false;
  const pending = faulty.lib.C_EncryptAsync(faulty.session, plaintext, Buffer.alloc(32)).finally(() => {
    settled = true;
  });
  await sleep(150);
  assert.equal(settled, false, 'still blocked');
  control.clear();
  const sealed = await pending;
  assert.ok(decrypt(faulty, iv, sealed).equals(plaintext));

  // Released into a fail rule: the blocked call fails with it.
  iv = encryptInit(faulty);
  control.set(['C_Encrypt hang count=1']);
  const failing = faulty.lib.C_EncryptAsync(faulty.session, plaintext, Buffer.alloc(32));
  await sleep(50);
  control.set(['C_Encrypt fail CKR_DEVICE_REMOVED count=1']);
  await assert.rejects(failing, { code: P.CKR_DEVICE_REMOVED });
  control.clear();
  roundTrip(faulty);
});

test('the trace counts the calls, failed ones included', () => {
  control.resetTrace();
  roundTrip(faulty);
  assert.deepEqual(control.trace(), ['C_EncryptInit', 'C_Encrypt', 'C_DecryptInit', 'C_Decrypt']);

  control.set(['C_Login fail CKR_PIN_INCORRECT']);
  control.resetTrace();
  const session = faulty.lib.C_OpenSession(slotOf(faulty), P.CKF_SERIAL_SESSION);
  assert.throws(() => faulty.lib.C_Login(session, P.CKU_USER, pin), { code: P.CKR_PIN_INCORRECT });
  faulty.lib.C_CloseSession(session);
  control.clear();
  assert.equal(control.calls('C_Login'), 1);
  assert.equal(control.calls('C_Encrypt'), 0);
  assert.equal(control.calls(), control.trace().length);
});

test("the module's C_Finalize leaves the target, and a session opened on it directly, working", () => {
  const lib = new P.PKCS11();
  lib.load(token.modulePath);
  assert.throws(() => lib.C_Initialize(initArgs()), {
    code: P.CKR_CRYPTOKI_ALREADY_INITIALIZED,
  });
  direct = connect(lib);
  roundTrip(direct);

  // An injected failure of C_Finalize still finalizes (cleanup is done, then the code returned).
  control.set(['C_Finalize fail CKR_GENERAL_ERROR count=1']);
  assert.throws(() => faulty.lib.C_Finalize(), { code: P.CKR_GENERAL_ERROR });
  control.clear();
  assert.throws(() => faulty.lib.C_GetSlotList(true), { code: P.CKR_CRYPTOKI_NOT_INITIALIZED });
  assert.throws(() => faulty.lib.C_Finalize(), { code: P.CKR_CRYPTOKI_NOT_INITIALIZED });
  // The module's session was closed in the library; the direct one is untouched.
  assert.throws(() => lib.C_GetSessionInfo(faulty.session), { code: P.CKR_SESSION_HANDLE_INVALID });
  roundTrip(direct);

  faulty.lib.C_Initialize(initArgs());
  assert.throws(() => faulty.lib.C_Initialize(initArgs()), {
    code: P.CKR_CRYPTOKI_ALREADY_INITIALIZED,
  });
  faulty = connect(faulty.lib);
  roundTrip(faulty);
  faulty.lib.C_Finalize();
  roundTrip(direct);
});
