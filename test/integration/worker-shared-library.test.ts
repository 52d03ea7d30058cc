// Two HSM workers whose configured module paths name one file (a symlink, or a vendor's two install
// paths) share one library in the process, and PKCS#11 state is per process: neither may
// C_Finalize it while the other has a session (layers/pkcs11/worker-hsm.ts counts a library's
// workers by its real path). The fault module's trace shows what each re-initialisation did.
// Libraries that are not one file may still share one underneath (the fault module's two copies
// over one SoftHSM): their C_Initialize never run at once either.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
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

test('two libraries never initialise at once: the second waits for the first (one lock per process)', async () => {
  // The pass-through copy traces its calls too: it reads FAULT_PASSTHROUGH_* (fault-pkcs11.c).
  const otherTrace = join(controlDir, 'passthrough-trace');
  process.env.FAULT_PASSTHROUGH_TRACE = otherTrace;
  const traced = () => (existsSync(otherTrace) ? readFileSync(otherTrace, 'utf8').split('\n') : []);
  const pkcs11 = { tokenLabel: setup.config.hsm.tokenLabel, pin: setup.config.hsm.pin as string };
  const options = { callTimeoutMs: 2000, startTimeoutMs: 10_000 };
  control.resetTrace();
  control.set(['C_Initialize hang']);
  const first = new WorkerHsm({ ...options, pkcs11: { ...pkcs11, modulePath: buildFaultModule() } });
  let second: WorkerHsm | undefined;
  try {
    while (control.calls('C_Initialize') === 0) await sleep(10);
    second = new WorkerHsm({
      ...options,
      pkcs11: { ...pkcs11, modulePath: buildFaultModule('passthrough') },
    });
    // The second library is loaded; its C_Initialize waits while the first one's is under way.
    while (!traced().includes('C_GetFunctionList')) await sleep(10);
    await sleep(300);
    assert.deepEqual(
      traced().filter((fn) => fn === 'C_Initialize'),
      [],
      `the second library initialised during the first's C_Initialize: ${traced().join(' ')}`,
    );
    control.clear(); // the first C_Initialize returns
    assert.ok(await first.findKey('foo'), 'key foo through the first library');
    assert.ok(await second.findKey('foo'), 'key foo through the second library');
    assert.ok(traced().includes('C_Initialize'), traced().join(' '));
  } finally {
    control.clear();
    first.close();
    second?.close();
    delete process.env.FAULT_PASSTHROUGH_TRACE;
  }
});
