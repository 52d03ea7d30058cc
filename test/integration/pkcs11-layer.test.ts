// The PKCS#11 layer against the real test HSM (SoftHSM, or NSS softoken), with its state pulled
// away behind its back by a second handle on the same library (the same process, so the same
// state): closed sessions, a finalized library, a replaced key. It must recover by itself and never
// answer wrong. Then what the layer takes from each library as it is: its library parameters
// whole, its refusal of a key's usage, and the AES-GCM it must be able to do.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { HsmError } from '../../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../../layers/pkcs11/pkcs11-hsm.ts';
import {
  aesGcmShortfall,
  closeSession,
  findSecretKeys,
  initialize,
  openSession,
  P,
  secretKeyTemplate,
} from '../../layers/pkcs11/session.ts';
import { ensureNssToken } from '../../scripts/nss.ts';
import { createTestSetup, HSM_FACTS, ROOT, type TestSetup } from '../helpers/proxy.ts';

let setup: TestSetup;
let hsm: Pkcs11Hsm;
let other: InstanceType<typeof P.PKCS11>;

before(() => {
  setup = createTestSetup();
  Object.assign(process.env, setup.env);
  if (setup.hsm === 'nss') {
    // A decoy beside the token's database, where its parameters without their last character lead.
    const decoy = { label: 'decoy', encrypt: true, decrypt: true };
    ensureNssToken({ dir: setup.dir, database: 'nssd', label: 'xks-test', pin: setup.pin, keys: [decoy] });
  }
  hsm = new Pkcs11Hsm(connection());
  other = new P.PKCS11();
  other.load(setup.config.hsm.modulePath);
});
after(() => {
  hsm.close();
  rmSync(setup.dir, { recursive: true, force: true });
});

const aad = Buffer.from([0, 0, 1, 1]);

function connection(): ConstructorParameters<typeof Pkcs11Hsm>[0] {
  const { modulePath, libraryParameters } = setup.config.hsm;
  return { modulePath, libraryParameters, tokenLabel: 'xks-test', pin: setup.pin };
}

function roundTrip(): void {
  const key = hsm.findKey('foo');
  assert.ok(key);
  const plaintext = randomBytes(48);
  const out = hsm.encrypt(key, plaintext, aad);
  assert.ok(hsm.decrypt(key, out, aad).equals(plaintext));
}

/** Runs `mess` on a second PKCS#11 handle of the same library, initialised for the occasion. */
function behindItsBack(mess: (slot: Buffer) => void): void {
  // Already initialised by the layer, usually: the library state is shared.
  initialize(other, setup.config.hsm.libraryParameters);
  const slot = other.C_GetSlotList(true).find((s) => other.C_GetTokenInfo(s).label.startsWith('xks-test'));
  assert.ok(slot);
  mess(slot);
}

test('info names the token, its maker and the library version; an id only from a serial that tells HSMs apart', () => {
  roundTrip();
  const info = hsm.info();
  assert.equal(info?.vendor, HSM_FACTS[setup.hsm].vendor);
  assert.match(info?.model ?? '', HSM_FACTS[setup.hsm].model);
  if (setup.hsm === 'nss') {
    // Every NSS token's serial is 0000000000000000: no id, the configured name stands for it.
    assert.equal(info?.id, undefined);
  } else {
    assert.match(info?.id ?? '', /^[0-9a-f]{16}$/);
  }
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
    // A session of its own; the application may be logged in already (shared state).
    const session = openSession(other, slot, { pin: setup.pin, readWrite: true });
    const [old] = findSecretKeys(other, session, 'foo', 1);
    assert.ok(old);
    other.C_DestroyObject(session, old);
    other.C_GenerateKey(session, { mechanism: P.CKM_AES_KEY_GEN }, [
      ...secretKeyTemplate({ label: 'foo', keyType: P.CKK_AES, encrypt: true, decrypt: true }),
      { type: P.CKA_VALUE_LEN, value: 32 },
    ]);
    closeSession(other, session);
  });
  // The new key works (through a fresh handle) ...
  roundTrip();
  // ... and the old key's ciphertext is rejected as such, not answered with garbage.
  assert.throws(
    () => hsm.decrypt(hsm.findKey('foo') as NonNullable<ReturnType<Pkcs11Hsm['findKey']>>, before, aad),
    (err: unknown) => err instanceof HsmError && err.kind === 'invalidCiphertext',
  );
});

test("the HSM's own refusal of a key's usage is a key usage error (SoftHSM: CKR_KEY_FUNCTION_NOT_PERMITTED, NSS: CKR_KEY_TYPE_INCONSISTENT)", () => {
  // The proxy checks CKA_ENCRYPT and CKA_DECRYPT before it asks; here the layer is asked directly,
  // as when a key's usage changed in the HSM after the proxy read it.
  const expected = setup.hsm === 'nss' ? 'CKR_KEY_TYPE_INCONSISTENT' : 'CKR_KEY_FUNCTION_NOT_PERMITTED';
  const refused = (err: unknown) =>
    err instanceof HsmError && err.kind === 'keyUsage' && err.ckr === expected;
  const decryptOnly = hsm.findKey('decrypt_only_key');
  const encryptOnly = hsm.findKey('encrypt_only_key');
  const impotent = hsm.findKey('impotent_key');
  assert.ok(decryptOnly && encryptOnly && impotent);
  assert.throws(() => hsm.encrypt(decryptOnly, randomBytes(16), aad), refused);
  assert.throws(() => hsm.encrypt(impotent, randomBytes(16), aad), refused);
  const sealed = hsm.encrypt(encryptOnly, randomBytes(16), aad);
  assert.throws(() => hsm.decrypt(encryptOnly, sealed, aad), refused);
  assert.throws(() => hsm.decrypt(impotent, sealed, aad), refused);
  roundTrip();
});

test('library parameters reach the library whole (pkcs11js 2.1.7 alone drops their last character)', (t) => {
  // SoftHSM takes none (hsm-unavailable.test.ts gives it some).
  if (setup.hsm !== 'nss') return t.skip('NSS softoken only');
  // The parameters end with the database folder, .../nssdb; beside it, .../nssd holds another
  // database, the one a library given all but the last character opens (made in before()).
  const parameters = setup.config.hsm.libraryParameters as string;
  assert.ok(parameters.endsWith('/nssdb'), parameters);
  assert.ok(hsm.findKey('foo'), 'the layer opened the database its parameters name');
  assert.equal(hsm.findKey('decoy'), undefined, 'not the one without the last character');
  // What pkcs11js alone does with the same parameters (another process: NSS is initialised here).
  const script = `
    const P = require('pkcs11js');
    const lib = new P.PKCS11();
    lib.load(process.env.MODULE);
    lib.C_Initialize({ flags: P.CKF_OS_LOCKING_OK, libraryParameters: process.env.PARAMETERS });
    const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === 'xks-test');
    const session = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION);
    lib.C_Login(session, P.CKU_USER, process.env.PIN);
    const found = (label) => {
      lib.C_FindObjectsInit(session, [{ type: P.CKA_LABEL, value: label }]);
      const n = lib.C_FindObjects(session, 1).length;
      lib.C_FindObjectsFinal(session);
      return n > 0;
    };
    console.log(JSON.stringify({ foo: found('foo'), decoy: found('decoy') }));
    lib.C_Finalize();`;
  const run = spawnSync(process.execPath, ['-e', script], {
    cwd: ROOT,
    env: { ...process.env, MODULE: setup.config.hsm.modulePath, PARAMETERS: parameters, PIN: setup.pin },
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), { foo: false, decoy: true }, 'pkcs11js alone opens .../nssd');
});

test('the AES-GCM a token must do: AES-256 keys (sizes in bytes, or bits), encrypt and decrypt', () => {
  const both = P.CKF_ENCRYPT | P.CKF_DECRYPT;
  assert.equal(aesGcmShortfall({ minKeySize: 16, maxKeySize: 32, flags: both }), undefined);
  assert.equal(aesGcmShortfall({ minKeySize: 128, maxKeySize: 256, flags: both }), undefined);
  assert.equal(aesGcmShortfall({ minKeySize: 32, maxKeySize: 32, flags: both | P.CKF_HW }), undefined);
  assert.match(
    aesGcmShortfall({ minKeySize: 16, maxKeySize: 24, flags: both }) ?? '',
    /takes keys of 16-24, not of 32 bytes/,
  );
  assert.match(aesGcmShortfall({ minKeySize: 128, maxKeySize: 192, flags: both }) ?? '', /not of 32 bytes/);
  assert.match(
    aesGcmShortfall({ minKeySize: 16, maxKeySize: 32, flags: P.CKF_ENCRYPT }) ?? '',
    /does not decrypt$/,
  );
  assert.match(
    aesGcmShortfall({ minKeySize: 16, maxKeySize: 32, flags: 0 }) ?? '',
    /does not encrypt or decrypt$/,
  );
  // This token's, as it answers.
  const lib = other;
  initialize(lib, setup.config.hsm.libraryParameters);
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.startsWith('xks-test'));
  assert.ok(slot);
  assert.equal(aesGcmShortfall(lib.C_GetMechanismInfo(slot, P.CKM_AES_GCM)), undefined);
});
