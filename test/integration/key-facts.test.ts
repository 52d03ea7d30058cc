// A key's facts (its version, keySpec and usage: GetKeyMetadata's answer, and what Encrypt and
// Decrypt check) read with one C_GetAttributeValue per key version: pkcs11js makes it two PKCS#11
// calls (sizes, then values), each a round trip to a network HSM, where reading the ten
// attributes one by one made twenty. A token that refuses one attribute of the batch (it has none,
// or keeps it secret: the whole call fails) gets them one by one, with the same facts. The HSM is
// the test token (SoftHSM, or NSS softoken) through the fault-injecting module, in this process.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Pkcs11Hsm } from '../../layers/pkcs11/pkcs11-hsm.ts';
import { findSecretKeys, TokenSession } from '../../layers/pkcs11/session.ts';
import { buildFaultModule, faultHsmInThisProcess } from '../helpers/fault-hsm.ts';

const { setup, control } = faultHsmInThisProcess('key-facts');
const opened: Pkcs11Hsm[] = [];
after(() => {
  for (const hsm of opened) hsm.close();
});

function connect(): Pkcs11Hsm {
  const hsm = new Pkcs11Hsm({
    modulePath: buildFaultModule(),
    libraryParameters: setup.config.hsm.libraryParameters,
    tokenLabel: setup.config.hsm.tokenLabel,
    pin: setup.pin,
  });
  opened.push(hsm);
  return hsm;
}

/**
 * How many keys labelled `label` the token holds, read without the fault module: before any HSM
 * connects, as closing this session finalizes the library, whose state the process shares.
 */
function versionsOf(label: string): number {
  const token = TokenSession.open({
    modulePath: setup.config.hsm.modulePath,
    libraryParameters: setup.config.hsm.libraryParameters,
    tokenLabel: setup.config.hsm.tokenLabel,
    pin: setup.pin,
  });
  try {
    return findSecretKeys(token.lib, token.session, label, 0).length;
  } finally {
    token.close();
  }
}

const versions = versionsOf('foo');

test("a key's facts: one C_GetAttributeValue per version (two PKCS#11 calls)", () => {
  assert.ok(versions >= 1);
  const hsm = connect();
  control.resetTrace();
  const key = hsm.findKey('foo');
  assert.ok(key, 'no key foo');
  assert.deepEqual([...key.usage].sort(), ['DECRYPT', 'ENCRYPT']);
  assert.equal(key.keySpec, 'AES_256');
  assert.equal(control.calls('C_GetAttributeValue'), 2 * versions, control.trace().join(' '));
});

for (const refusal of ['CKR_ATTRIBUTE_TYPE_INVALID', 'CKR_ATTRIBUTE_SENSITIVE']) {
  test(`a token that refuses the batch (${refusal}): each attribute on its own, the same facts`, () => {
    const expected = connect().findKey('foo');
    assert.ok(expected);
    const hsm = connect();
    control.resetTrace();
    control.set([`C_GetAttributeValue fail ${refusal} count=${versions}`]);
    try {
      assert.deepEqual(hsm.findKey('foo'), expected);
      // Per version: the refused batch's first call, then two calls for each of the ten attributes.
      assert.equal(control.calls('C_GetAttributeValue'), versions * 21, control.trace().join(' '));
    } finally {
      control.clear();
    }
  });
}
