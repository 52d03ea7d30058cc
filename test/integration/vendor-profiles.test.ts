// Vendor profiles against the test HSM (layers/pkcs11/profiles.ts, docs/hsm.md section 2): SoftHSM
// is the `softhsm` profile, NSS softoken the `nss` one; the others expect the HSM to make the IV,
// which neither does: the proxy must then refuse to answer rather than return an IV that would
// repeat. What each implementation answers here is what docs/hsm.md's table of vendor facts says.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { HsmError } from '../../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../../layers/pkcs11/pkcs11-hsm.ts';
import { VENDOR_PROFILES, type VendorProfile } from '../../layers/pkcs11/profiles.ts';
import { createTestSetup, HSM_FACTS, type TestSetup } from '../helpers/proxy.ts';

let setup: TestSetup;
const opened: Pkcs11Hsm[] = [];

before(() => {
  setup = createTestSetup();
  Object.assign(process.env, setup.env);
});
after(() => {
  for (const hsm of opened) hsm.close();
  rmSync(setup.dir, { recursive: true, force: true });
});

function hsmWith(profile: VendorProfile): Pkcs11Hsm {
  const hsm = new Pkcs11Hsm({
    modulePath: setup.config.hsm.modulePath,
    libraryParameters: setup.config.hsm.libraryParameters,
    tokenLabel: 'xks-test',
    pin: setup.pin,
    profile,
  });
  opened.push(hsm);
  return hsm;
}

const aad = Buffer.from([0, 4, 1, 2, 3, 4, 0]);
/** This implementation's own profile. */
const own = () => VENDOR_PROFILES[HSM_FACTS[setup.hsm].profile];
/** How it answers a tag that does not verify. */
const BAD_TAG = { softhsm: 'CKR_GENERAL_ERROR', nss: 'CKR_ENCRYPTED_DATA_INVALID' } as const;

test('its own profile: 12-byte random IVs from the HSM, round trips, tags verified', () => {
  const hsm = hsmWith(own());
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

test('ulIvBits left 0 (the Luna FIPS setting): SoftHSM ignores it; NSS refuses the parameters, an HSM failure (500), not a key usage error', () => {
  const hsm = hsmWith({ ...own(), ivBits: false });
  const key = hsm.findKey('foo');
  assert.ok(key);
  const plaintext = randomBytes(40);
  if (setup.hsm === 'nss') {
    assert.throws(
      () => hsm.encrypt(key, plaintext, aad),
      (e: unknown) => e instanceof HsmError && e.kind === 'failed' && e.ckr === 'CKR_MECHANISM_PARAM_INVALID',
    );
    return;
  }
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

test('luna (the HSM appends the IV) on an HSM that does not: refused for the output size (NSS: already for its ulIvBits 0)', () => {
  const hsm = hsmWith(VENDOR_PROFILES.luna);
  const key = hsm.findKey('foo');
  assert.ok(key);
  const refusal =
    setup.hsm === 'nss' ? /\(CKR_MECHANISM_PARAM_INVALID\)/ : /returned 48 bytes for a 32-byte GCM encrypt/;
  assert.throws(
    () => hsm.encrypt(key, randomBytes(32), aad),
    (e: unknown) => e instanceof HsmError && e.kind === 'failed' && refusal.test(e.message),
  );
});

test('the bad-ciphertext codes are per profile: SoftHSM says CKR_GENERAL_ERROR, NSS CKR_ENCRYPTED_DATA_INVALID', () => {
  // Under a profile that does not list the code this HSM gives a tag that does not verify, that is
  // an HSM failure (500), not a bad ciphertext (400): CKR_GENERAL_ERROR is one only for softhsm.
  const badTag = BAD_TAG[setup.hsm];
  const hsm = hsmWith(own());
  const key = hsm.findKey('foo');
  assert.ok(key);
  const out = hsm.encrypt(key, randomBytes(16), aad);
  out.ciphertext[0] = (out.ciphertext[0] as number) ^ 1;
  assert.throws(
    () => hsm.decrypt(key, out, aad),
    (e: unknown) => e instanceof HsmError && e.kind === 'invalidCiphertext' && e.ckr === badTag,
  );
  const strict = hsmWith({
    ...own(),
    invalidCiphertext: own().invalidCiphertext.filter((c) => c !== badTag),
  });
  const strictKey = strict.findKey('foo');
  assert.ok(strictKey);
  assert.throws(
    () => strict.decrypt(strictKey, out, aad),
    (e: unknown) => e instanceof HsmError && e.kind === 'failed' && e.ckr === badTag,
  );
  // Only the softhsm profile reads CKR_GENERAL_ERROR as a bad ciphertext.
  for (const profile of Object.values(VENDOR_PROFILES)) {
    assert.equal(
      profile.invalidCiphertext.includes('CKR_GENERAL_ERROR'),
      profile.name === 'softhsm',
      profile.name,
    );
  }
});
