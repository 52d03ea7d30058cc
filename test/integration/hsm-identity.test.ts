// Which token is which HSM. An HSM's token is the one its label (and serial number, when given)
// names, and only when exactly one token matches. Its id in ekmFleetDetails, and in each request's
// log line, is the token's serial number, or the HSM's configured name when the serial tells no HSM
// apart (NSS softoken says 0000000000000000 for every token): distinct for each HSM, and the same
// on every call. On SoftHSM the fleet is two tokens; on NSS, whose library opens one database per
// process, one token reached as two HSMs through two copies of the pass-through module.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { initialize } from '../../layers/pkcs11/session.ts';
import { DEMO_KEYS } from '../../scripts/softhsm.ts';
import { buildFaultModule } from '../helpers/fault-hsm.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import {
  ensureTestToken,
  expectedHsmId,
  type RunningProxy,
  startProxy,
  type TestSetup,
} from '../helpers/proxy.ts';
import { encryptFresh } from '../helpers/sealed.ts';

const P: typeof import('pkcs11js') = createRequire(import.meta.url)('pkcs11js');

let proxy: RunningProxy;
let setup: TestSetup;
/** The ids ekmFleetDetails must show, in fleet order. */
let ids: string[];
const sensitive: Buffer[] = [];

/** Two more SoftHSM tokens, both labelled `label` (SoftHSM gives each a free slot at C_Initialize). */
function twoTokensLabelled(modulePath: string, label: string): void {
  for (let i = 0; i < 2; i++) {
    const lib = new P.PKCS11();
    lib.load(modulePath);
    initialize(lib);
    try {
      const free = lib
        .C_GetSlotList(true)
        .find((slot) => (lib.C_GetTokenInfo(slot).flags & P.CKF_TOKEN_INITIALIZED) === 0);
      assert.ok(free, 'a free SoftHSM slot');
      lib.C_InitToken(free, randomBytes(8).toString('hex'), label.padEnd(32, ' '));
    } finally {
      lib.C_Finalize();
    }
  }
}

before(async () => {
  proxy = await startProxy({
    configure: (config, dir) => {
      const { modulePath } = config.hsm;
      if (config.hsm.libraryParameters === undefined) {
        // SoftHSM: a second token with the keys, and two tokens of one label.
        const pin = config.hsm.pin as string;
        ensureTestToken({
          dir,
          label: 'xks-test-2',
          pin,
          soPin: randomBytes(8).toString('hex'),
          keys: DEMO_KEYS,
        });
        twoTokensLabelled(modulePath, 'same-label');
        config.hsm.fleet = [
          { name: 'first', tokenLabel: 'xks-test' },
          { name: 'second', tokenLabel: 'xks-test-2' },
          { name: 'ambiguous', tokenLabel: 'same-label' },
        ];
      } else {
        // NSS: its token twice; and its serial, which every NSS token has. All through the module
        // copies, which never finalize the library under the others (fault-pkcs11.c, Isolation).
        const [passthrough, faulty] = [buildFaultModule('passthrough'), buildFaultModule()];
        config.hsm.fleet = [
          { name: 'first', modulePath: passthrough },
          { name: 'second', modulePath: faulty },
          { name: 'ambiguous', modulePath: faulty, tokenSerial: '0000000000000000' },
        ];
      }
      config.healthCheck.cacheSeconds = 0;
    },
    beforeStart: (s) => {
      setup = s;
    },
  });
  ids =
    proxy.hsm === 'nss'
      ? ['first', 'second', 'ambiguous']
      : [expectedHsmId(setup, 'xks-test'), expectedHsmId(setup, 'xks-test-2'), 'ambiguous'];
});
after(async () => {
  await proxy?.stop();
});

async function health(): Promise<Array<{ id: string; healthStatus: string }>> {
  const res = await proxy.xks('health', {
    requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
  });
  assert.equal(res.status, 200, res.text);
  return res.json.ekmFleetDetails;
}

test('ekmFleetDetails: one id per HSM, distinct, the same on every call', async () => {
  const first = await health();
  assert.deepEqual(
    first.map((d) => d.id),
    ids,
  );
  assert.equal(new Set(ids).size, ids.length, 'distinct');
  if (proxy.hsm === 'softhsm') assert.match(ids[0] as string, /^[0-9a-f]{16}$/, 'a SoftHSM serial');
  assert.deepEqual(
    first.map((d) => d.healthStatus),
    ['ACTIVE', 'ACTIVE', 'UNAVAILABLE'],
  );
  assert.deepEqual(await health(), first);
});

test('a request is logged with the id of the HSM that served it', async () => {
  const enc = await encryptFresh(proxy, sensitive);
  assert.equal(enc.res.status, 200, enc.res.text);
  const needle = `"kmsRequestId":"${enc.kmsRequestId}"`;
  const output = await proxy.waitForOutput(new RegExp(`${needle}.*"hsm":`));
  const line = output.split('\n').find((l) => l.includes(needle) && l.includes('"XKS request"'));
  assert.equal(JSON.parse(line as string).hsm, ids[0]);
});

test('several tokens matching: no guess; the HSM is unavailable, saying why', async () => {
  const why =
    proxy.hsm === 'nss'
      ? "2 tokens with serial '0000000000000000' are present: name one by tokenLabel and tokenSerial"
      : "2 tokens labelled 'same-label' are present: name one by tokenLabel and tokenSerial";
  const output = await proxy.waitForOutput(/"hsm":"ambiguous","reason"/);
  assert.ok(output.includes(`"hsm":"ambiguous","reason":"HSM unavailable: ${why}"`), output.slice(-2000));
  assertNoLeaks(await proxy.settledOutput(), proxy.secrets, sensitive);
});
