// The PKCS#11 layer against real SoftHSM, with its state pulled away behind its back by a second
// handle on the same library (the same process, so the same SoftHSM state): closed sessions, a
// finalized library, a replaced key. It must recover by itself and never answer wrong.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { HsmError } from '../../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../../layers/pkcs11/pkcs11-hsm.ts';
import { createTestSetup, type TestSetup } from '../helpers/proxy.ts';

const P: typeof import('pkcs11js') = createRequire(import.meta.url)('pkcs11js');

let setup: TestSetup;
let hsm: Pkcs11Hsm;
let other: InstanceType<typeof P.PKCS11>;

before(() => {
  setup = createTestSetup();
  process.env.SOFTHSM2_CONF = setup.softhsmConf;
  hsm = new Pkcs11Hsm({ modulePath: setup.config.hsm.modulePath, tokenLabel: 'xks-test', pin: setup.pin });
  other = new P.PKCS11();
  other.load(setup.config.hsm.modulePath);
});
after(() => {
  hsm.close();
  rmSync(setup.dir, { recursive: true, force: true });
});

const aad = Buffer.from([0, 0, 1, 1]);

function roundTrip(): void {
  const key = hsm.findKey('foo');
  assert.ok(key);
  const plaintext = randomBytes(48);
  const out = hsm.encrypt(key, plaintext, aad);
  assert.ok(hsm.decrypt(key, out, aad).equals(plaintext));
}

/** Runs `mess` on a second PKCS#11 handle of the same library, initialised for the occasion. */
function behindItsBack(mess: (slot: Buffer) => void): void {
  try {
    other.C_Initialize({ flags: P.CKF_OS_LOCKING_OK });
  } catch {
    // Already initialised by the layer: the library state is shared.
  }
  const slot = other.C_GetSlotList(true).find((s) => other.C_GetTokenInfo(s).label.startsWith('xks-test'));
  assert.ok(slot);
  mess(slot);
}

test('info names the token, its maker and the library version', () => {
  roundTrip();
  const info = hsm.info();
  assert.equal(info?.vendor, 'SoftHSM project');
  assert.match(info?.model ?? '', /^SoftHSM v2 \(hardware 2\.\d+, firmware 2\.\d+, .* 2\.\d+\)$/);
  assert.ok(info?.id);
});

test('all sessions closed behind its back: re-established, the call succeeds', () => {
  roundTrip();
  behindItsBack((slot) => other.C_CloseAllSessions(slot));
  roundTrip();
});

test('library finalized behind its back: initialised again, the call succeeds', () => {
  roundTrip();
  behindItsBack(() => other.C_Finalize());
  roundTrip();
});

test('a cached key replaced by another with the same label: the stale handle is dropped', () => {
  const key = hsm.findKey('foo');
  assert.ok(key);
  const before = hsm.encrypt(key, Buffer.from('before the swap!'), aad);
  behindItsBack((slot) => {
    const session = other.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
    try {
      other.C_Login(session, P.CKU_USER, setup.pin);
    } catch {
      // The application is logged in already (shared state).
    }
    other.C_FindObjectsInit(session, [
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_LABEL, value: 'foo' },
    ]);
    const [old] = other.C_FindObjects(session, 1);
    other.C_FindObjectsFinal(session);
    assert.ok(old);
    other.C_DestroyObject(session, old);
    other.C_GenerateKey(session, { mechanism: P.CKM_AES_KEY_GEN }, [
      { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
      { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
      { type: P.CKA_VALUE_LEN, value: 32 },
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_PRIVATE, value: true },
      { type: P.CKA_SENSITIVE, value: true },
      { type: P.CKA_EXTRACTABLE, value: false },
      { type: P.CKA_LABEL, value: 'foo' },
      { type: P.CKA_ENCRYPT, value: true },
      { type: P.CKA_DECRYPT, value: true },
    ]);
    other.C_CloseSession(session);
  });
  // The new key works (through a fresh handle) ...
  roundTrip();
  // ... and the old key's ciphertext is rejected as such, not answered with garbage.
  assert.throws(
    () => hsm.decrypt(hsm.findKey('foo') as NonNullable<ReturnType<Pkcs11Hsm['findKey']>>, before, aad),
    (err: unknown) => err instanceof HsmError && err.kind === 'invalidCiphertext',
  );
});
