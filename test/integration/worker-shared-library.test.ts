// Two HSM workers whose configured module paths name one file (a symlink, or a vendor's two install
// paths) share one library in the process, and PKCS#11 state is per process: neither may
// C_Finalize it while the other has a session (layers/pkcs11/worker-hsm.ts counts a library's
// workers by its real path). The fault module's trace shows what each re-initialisation did.
import assert from 'node:assert/strict';
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { WorkerHsm } from '../../layers/pkcs11/worker-hsm.ts';
import { buildFaultModule, faultHsmInThisProcess } from '../helpers/fault-hsm.ts';

const { setup, control, dir: controlDir } = faultHsmInThisProcess('worker-shared-library');

test('two paths to one library count as one: a re-initialisation closes its own session, never C_Finalize', async () => {
  const modulePath = buildFaultModule();
  const link = join(controlDir, 'the-same-library.so');
  symlinkSync(modulePath, link);
  const pkcs11 = { tokenLabel: setup.config.hsm.tokenLabel, pin: setup.config.hsm.pin as string };
  const options = { callTimeoutMs: 2000, startTimeoutMs: 10_000 };
  const direct = new WorkerHsm({ ...options, pkcs11: { ...pkcs11, modulePath } });
  const linked = new WorkerHsm({ ...options, pkcs11: { ...pkcs11, modulePath: link } });
  try {
    const key = (await direct.findKey('foo')) ?? assert.fail('key foo');
    const keyLinked = (await linked.findKey('foo')) ?? assert.fail('key foo (linked)');

    // A device error: one re-initialisation and one retry, on the library the other also uses.
    control.resetTrace();
    control.set(['C_Encrypt fail CKR_DEVICE_ERROR count=1']);
    const sealed = await direct.encrypt(key, Buffer.from('shared library'), Buffer.alloc(0));
    assert.equal(
      control.calls('C_Finalize'),
      0,
      `no C_Finalize under the other's session: ${control.trace()}`,
    );
    assert.ok(control.calls('C_CloseSession') >= 1, `its own session closed instead: ${control.trace()}`);
    // The other worker's session survived it.
    control.resetTrace();
    assert.deepEqual(await linked.decrypt(keyLinked, sealed, Buffer.alloc(0)), Buffer.from('shared library'));
    assert.equal(control.calls('C_Login'), 0, `no new login for the other: ${control.trace()}`);
  } finally {
    control.clear();
    direct.close();
    linked.close();
  }
});
