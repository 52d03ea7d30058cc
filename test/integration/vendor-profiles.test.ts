// Vendor profiles against SoftHSM (layers/pkcs11/profiles.ts, docs/hsm.md section 2). SoftHSM
// itself is the `softhsm` profile; the others expect the HSM to make the IV, which SoftHSM does not
// do: the proxy must then refuse to answer rather than return an IV that would repeat.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { HsmError } from '../../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../../layers/pkcs11/pkcs11-hsm.ts';
import { VENDOR_PROFILES, type VendorProfile } from '../../layers/pkcs11/profiles.ts';
import { createTestSetup, type TestSetup } from '../helpers/proxy.ts';

let setup: TestSetup;
const opened: Pkcs11Hsm[] = [];

before(() => {
  setup = createTestSetup();
  process.env.SOFTHSM2_CONF = setup.softhsmConf;
});
after(() => {
  for (const hsm of opened) hsm.close();
  rmSync(setup.dir, { recursive: true, force: true });
});

function hsmWith(profile: VendorProfile): Pkcs11Hsm {
  const hsm = new Pkcs11Hsm({
    modulePath: setup.config.hsm.modulePath,
    tokenLabel: 'xks-test',
    pin: setup.pin,
    profile,
  });
  opened.push(hsm);
  return hsm;
}

const aad = Buffer.from([0, 4, 1, 2, 3, 4, 0]);

test('softhsm: 12-byte random IVs from the HSM, round trips, tags verified', () => {
  const hsm = hsmWith(VENDOR_PROFILES.softhsm);
  const key = hsm.findKey('foo');
  assert.ok(key);
  const ivs = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const plaintext = randomBytes(1 + i);
    const out = hsm.encrypt(key, plaintext, aad);
    assert.equal(out.iv.length, 12);
    assert.equal(out.tag.length, 16);
    ivs.add(out.iv.toString('hex'));
    assert.ok(hsm.decrypt(key, out, aad).equals(plaintext));
  }
  assert.equal(ivs.size, 50, 'no IV repeats');
  const out = hsm.encrypt(key, randomBytes(32), aad);
  out.tag[0] = (out.tag[0] as number) ^ 1;
  assert.throws(
    () => hsm.decrypt(key, out, aad),
    (e: unknown) => e instanceof HsmError && e.kind === 'invalidCiphertext',
  );
});

test('ulIvBits left 0 (the Luna FIPS setting) still works where the HSM ignores it', () => {
  const hsm = hsmWith({ ...VENDOR_PROFILES.softhsm, ivBits: false });
  const key = hsm.findKey('foo');
  assert.ok(key);
  const plaintext = randomBytes(40);
  assert.ok(hsm.decrypt(key, hsm.encrypt(key, plaintext, aad), aad).equals(plaintext));
});

test('cloudhsm / nshield (the HSM fills the IV) on an HSM that does not: refused, never a zero IV', () => {
  for (const profile of [VENDOR_PROFILES.cloudhsm, VENDOR_PROFILES.nshield]) {
    const hsm = hsmWith(profile);
    const key = hsm.findKey('foo');
    assert.ok(key);
    assert.throws(
      () => hsm.encrypt(key, randomBytes(32), aad),
      (e: unknown) =>
        e instanceof HsmError && e.kind === 'failed' && /did not generate an IV/.test(e.message),
      profile.name,
    );
  }
});

test('luna (the HSM appends the IV) on an HSM that does not: refused for the output size', () => {
  const hsm = hsmWith(VENDOR_PROFILES.luna);
  const key = hsm.findKey('foo');
  assert.ok(key);
  assert.throws(
    () => hsm.encrypt(key, randomBytes(32), aad),
    (e: unknown) => e instanceof HsmError && e.kind === 'failed' && /returned 48 bytes/.test(e.message),
  );
});

test('the bad-ciphertext codes are per profile: CKR_GENERAL_ERROR is one only for softhsm', () => {
  // SoftHSM answers a bad tag with CKR_GENERAL_ERROR: under a profile that does not list it, that
  // is an HSM failure (500), not a bad ciphertext (400).
  const soft = hsmWith(VENDOR_PROFILES.softhsm);
  const key = soft.findKey('foo');
  assert.ok(key);
  const out = soft.encrypt(key, randomBytes(16), aad);
  out.ciphertext[0] = (out.ciphertext[0] as number) ^ 1;
  const strict = hsmWith({ ...VENDOR_PROFILES.softhsm, invalidCiphertext: ['CKR_ENCRYPTED_DATA_INVALID'] });
  const strictKey = strict.findKey('foo');
  assert.ok(strictKey);
  assert.throws(
    () => strict.decrypt(strictKey, out, aad),
    (e: unknown) => e instanceof HsmError && e.kind === 'failed' && e.ckr === 'CKR_GENERAL_ERROR',
  );
  assert.throws(
    () => soft.decrypt(key, out, aad),
    (e: unknown) => e instanceof HsmError && e.kind === 'invalidCiphertext',
  );
});
