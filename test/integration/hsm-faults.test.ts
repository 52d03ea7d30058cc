// The proxy over a faulty HSM: the fault-injecting PKCS#11 module over the test HSM (SoftHSM, or NSS
// softoken), driven from here, makes the HSM fail the way real ones do. Every session or device error once: one
// re-initialisation, one retry, the right answer. Twice: a clear 500 naming the code, and the next
// request succeeds. Bad ciphertext and key usage codes map to 400s without a re-initialisation; a mechanism
// the HSM refuses is a 500, never a key usage error, and a token without AES-GCM is no HSM. A
// slow or hung HSM: 503 at the call deadline and a new worker after it. A dead token: 500 quickly,
// UNAVAILABLE, and recovery without a restart. Whatever happens, no 200 ever carries a wrong answer.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, type TestContext, test } from 'node:test';
import { VENDOR_PROFILES } from '../../layers/pkcs11/profiles.ts';
import { buildFaultModule, FaultControl } from '../helpers/fault-hsm.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import {
  expectedHsmId,
  HSM_FACTS,
  metadata,
  type RunningProxy,
  startProxy,
  TEST_HSM,
} from '../helpers/proxy.ts';
import { type Answer, decryptSealed, encryptFresh, type Sealed } from '../helpers/sealed.ts';

/** hsm.callTimeoutMs (the test setup's value, set again here so the bounds below stay true). */
const DEADLINE_MS = 100;
/** What a 503 may take in the proxy beyond the deadline: the spec's KMS budget is 250 ms in all. */
const PROXY_BOUND_MS = 250;
/** The same seen from the client (TLS, SigV4, a busy machine): generous, yet far below a 300 ms delay. */
const CLIENT_BOUND_MS = 290;

let proxy: RunningProxy;
let control: FaultControl;
let controlDir: string;
/**
 * The HSM's id in ekmFleetDetails and in the log's `hsm` field: the token's serial number (NSS: its
 * configured name, the label).
 */
let serial: string;
/** The test HSM's vendor profile: how it says a ciphertext did not authenticate. */
const PROFILE = VENDOR_PROFILES[HSM_FACTS[TEST_HSM].profile];

/** Every 200 Encrypt, checked again at the end. */
const sealed: Sealed[] = [];
/** Plaintexts and AAD: never in the log. */
const sensitive: Buffer[] = [];

before(async () => {
  controlDir = mkdtempSync(join(tmpdir(), 'hsm-faults-'));
  control = new FaultControl(controlDir);
  proxy = await startProxy({
    configure: (config) => {
      config.hsm.modulePath = buildFaultModule();
      config.hsm.callTimeoutMs = DEADLINE_MS;
      // Every health check asks the HSM: no cached ACTIVE hides a fault.
      config.healthCheck.cacheSeconds = 0;
    },
    env: control.env(),
  });
  // The worker may still be connecting when the server listens: the tests start from a ready HSM.
  await recover();
  // Read here only once the proxy has logged in: a login rewrites the token's files, and SoftHSM in
  // this process fails (CKR_GENERAL_ERROR) reading one the proxy is writing.
  serial = expectedHsmId(proxy, 'xks-test');
});
afterEach(() => {
  // A failed assertion must not leave a rule behind for the next test.
  control.clear();
});
after(async () => {
  control?.clear();
  await proxy?.stop();
  if (controlDir) rmSync(controlDir, { recursive: true, force: true });
});

const b64 = (bytes: Buffer) => bytes.toString('base64');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function encrypt(): Promise<Answer & { sealed?: Sealed }> {
  const answer = await encryptFresh(proxy, sensitive);
  if (answer.sealed) sealed.push(answer.sealed);
  return answer;
}

function decrypt(s: Sealed, fields: Partial<Record<string, string>> = {}): Promise<Answer> {
  return decryptSealed(proxy, s, fields);
}

/** Asserts the Decrypt answered 200 with exactly the plaintext that was encrypted. */
function assertPlaintext(answer: Answer, s: Sealed): void {
  assert.equal(answer.res.status, 200, answer.res.text);
  assert.ok(
    Buffer.from(answer.res.json.plaintext, 'base64').equals(s.plaintext),
    'decrypts to the plaintext',
  );
}

/** An Encrypt and its Decrypt, both 200 and right. */
async function roundTrip(): Promise<void> {
  const enc = await encrypt();
  assert.equal(enc.res.status, 200, enc.res.text);
  assertPlaintext(await decrypt(enc.sealed as Sealed), enc.sealed as Sealed);
}

function assertError(answer: Answer, status: number, errorName: string, message?: RegExp): void {
  assert.equal(answer.res.status, status, answer.res.text);
  assert.equal(answer.res.json.errorName, errorName);
  if (message) assert.match(answer.res.json.errorMessage, message);
}

const health = async (): Promise<string> => {
  const res = await proxy.xks('health', {
    requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
  });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.ekmFleetDetails.length, 1);
  assert.equal(res.json.ekmFleetDetails[0].id, serial);
  return res.json.ekmFleetDetails[0].healthStatus;
};

/** The proxy's log line of one request (the pipe may lag behind the response). */
async function logLine(kmsRequestId: string): Promise<Record<string, unknown>> {
  const needle = `"kmsRequestId":"${kmsRequestId}"`;
  const output = await proxy.waitForOutput(new RegExp(`"XKS request".*${needle}|${needle}.*"XKS request"`));
  const line = output.split('\n').find((l) => l.includes(needle) && l.includes('"XKS request"'));
  return JSON.parse(line as string) as Record<string, unknown>;
}

/**
 * Polls until a round trip succeeds; returns how long it took and what the Encrypts that failed
 * meanwhile were told (counted by message).
 */
async function recover(withinMs = 10_000): Promise<{ ms: number; failures: number; seen: string }> {
  const started = performance.now();
  const seen = new Map<string, number>();
  for (let failures = 0; ; failures++) {
    const enc = await encrypt();
    if (enc.res.status === 200) {
      assertPlaintext(await decrypt(enc.sealed as Sealed), enc.sealed as Sealed);
      const text = [...seen].map(([message, n]) => `${n} x ${message}`).join('; ');
      return { ms: performance.now() - started, failures, seen: text || 'none' };
    }
    const message = `${enc.res.status} ${enc.res.json?.errorMessage}`;
    seen.set(message, (seen.get(message) ?? 0) + 1);
    assert.ok(performance.now() - started < withinMs, `no recovery within ${withinMs} ms: ${enc.res.text}`);
    await sleep(50);
  }
}

/**
 * The trace of one request that met `fn` failing once: the call, the library finalized and
 * initialised again with a login (exactly once), and the call again.
 */
function assertOneReinit(trace: string[], fn: string): void {
  const first = trace.indexOf(fn);
  const last = trace.lastIndexOf(fn);
  assert.ok(first >= 0 && last > first, `${fn} called twice: ${trace.join(' ')}`);
  const count = (name: string) => trace.filter((n) => n === name).length;
  assert.equal(count('C_Initialize'), 1, 'exactly one re-initialisation');
  assert.equal(count('C_Login'), 1, 'exactly one login');
  const finalize = trace.indexOf('C_Finalize');
  const init = trace.indexOf('C_Initialize');
  const login = trace.indexOf('C_Login');
  assert.ok(first < finalize && finalize < init && init < login && login < last, trace.join(' '));
}

test('healthy: a round trip, served by the token, without any re-initialisation', async () => {
  control.resetTrace();
  const enc = await encrypt();
  assert.equal(enc.res.status, 200, enc.res.text);
  assertPlaintext(await decrypt(enc.sealed as Sealed), enc.sealed as Sealed);
  // The trace sees the proxy's calls: so the assertions on it below can fail.
  assert.ok(control.calls('C_Encrypt') >= 1 && control.calls('C_Decrypt') >= 1, control.trace().join(' '));
  assert.equal(control.calls('C_Initialize'), 0);
  assert.equal((await logLine(enc.kmsRequestId)).hsm, serial);
  assert.equal(await health(), 'ACTIVE');
});

describe('a session or device error once: one re-initialisation, one retry, the right answer', () => {
  const onEncrypt = [
    'CKR_SESSION_HANDLE_INVALID',
    'CKR_SESSION_CLOSED',
    'CKR_DEVICE_ERROR',
    'CKR_DEVICE_REMOVED',
    'CKR_DEVICE_MEMORY',
    'CKR_TOKEN_NOT_PRESENT',
    'CKR_TOKEN_NOT_RECOGNIZED',
    'CKR_OPERATION_ACTIVE',
    'CKR_USER_NOT_LOGGED_IN',
    'CKR_CRYPTOKI_NOT_INITIALIZED',
  ].map((ckr) => ({ fn: 'C_Encrypt', ckr, op: 'encrypt' }));
  const elsewhere = [
    { fn: 'C_EncryptInit', ckr: 'CKR_SESSION_HANDLE_INVALID', op: 'encrypt' },
    { fn: 'C_EncryptInit', ckr: 'CKR_DEVICE_ERROR', op: 'encrypt' },
    { fn: 'C_GenerateRandom', ckr: 'CKR_TOKEN_NOT_PRESENT', op: 'encrypt' },
    // NSS's answer once its library was finalized (pkcs11-hsm.ts SESSION_ERRORS).
    { fn: 'C_GenerateRandom', ckr: 'CKR_ARGUMENTS_BAD', op: 'encrypt' },
    { fn: 'C_DecryptInit', ckr: 'CKR_OPERATION_ACTIVE', op: 'decrypt' },
    { fn: 'C_Decrypt', ckr: 'CKR_SESSION_CLOSED', op: 'decrypt' },
    { fn: 'C_Decrypt', ckr: 'CKR_DEVICE_REMOVED', op: 'decrypt' },
    { fn: 'C_Decrypt', ckr: 'CKR_DEVICE_ERROR', op: 'decrypt' },
  ];
  for (const { fn, ckr, op } of [...onEncrypt, ...elsewhere]) {
    test(`${op}: ${fn} → ${ckr} once`, async () => {
      let s: Sealed;
      if (op === 'encrypt') {
        control.resetTrace();
        control.set([`${fn} fail ${ckr} count=1`]);
        const enc = await encrypt();
        assert.equal(enc.res.status, 200, enc.res.text);
        assertOneReinit(control.trace(), fn);
        assert.equal((await logLine(enc.kmsRequestId)).hsm, serial);
        s = enc.sealed as Sealed;
        control.clear();
        assertPlaintext(await decrypt(s), s);
      } else {
        const enc = await encrypt();
        assert.equal(enc.res.status, 200, enc.res.text);
        s = enc.sealed as Sealed;
        control.resetTrace();
        control.set([`${fn} fail ${ckr} count=1`]);
        assertPlaintext(await decrypt(s), s);
        assertOneReinit(control.trace(), fn);
      }
    });
  }
});

describe('the same error twice in a row: 500 naming it, and the next request succeeds', () => {
  const cases = [
    { fn: 'C_Encrypt', ckr: 'CKR_DEVICE_ERROR', op: 'encrypt' },
    { fn: 'C_Encrypt', ckr: 'CKR_SESSION_HANDLE_INVALID', op: 'encrypt' },
    { fn: 'C_EncryptInit', ckr: 'CKR_DEVICE_REMOVED', op: 'encrypt' },
    { fn: 'C_Decrypt', ckr: 'CKR_TOKEN_NOT_PRESENT', op: 'decrypt' },
  ];
  for (const { fn, ckr, op } of cases) {
    test(`${op}: ${fn} → ${ckr} twice`, async () => {
      const good = await encrypt();
      assert.equal(good.res.status, 200, good.res.text);
      control.resetTrace();
      // Left in place afterwards: its two firings are used up, as a real transient fault would end.
      control.set([`${fn} fail ${ckr} count=2`]);
      const failed = op === 'encrypt' ? await encrypt() : await decrypt(good.sealed as Sealed);
      assertError(failed, 500, 'InternalException', new RegExp(`\\(${ckr}\\)`));
      // One retry, not a loop: the call twice, one re-initialisation between.
      assert.equal(control.calls(fn), 2, control.trace().join(' '));
      assert.equal(control.calls('C_Initialize'), 1, control.trace().join(' '));
      // No restart: the very next requests succeed.
      await roundTrip();
      assertPlaintext(await decrypt(good.sealed as Sealed), good.sealed as Sealed);
    });
  }
});

// The interval between reconnection attempts itself (no PKCS#11 call within it) is tested on a clock
// of its own: hsm-reconnect.test.ts.
test('C_Initialize fails during the re-initialisation: 500, then recovery without a restart', async (t) => {
  control.resetTrace();
  control.set(['C_Encrypt fail CKR_DEVICE_ERROR count=1', 'C_Initialize fail CKR_DEVICE_ERROR count=1']);
  const failed = await encrypt();
  const failedAt = performance.now();
  assertError(failed, 500, 'InternalException', /\(CKR_DEVICE_ERROR\)/);
  assert.deepEqual(
    control.trace().filter((fn) => fn === 'C_Initialize' || fn === 'C_Login'),
    ['C_Initialize'],
    'one attempt to initialise, no login after it failed',
  );
  const { ms, failures } = await recover();
  t.diagnostic(
    `recovered ${Math.round(performance.now() - failedAt)} ms after the failure (${failures} more 500s)`,
  );
  assert.ok(ms < 5000, `recovered in ${ms} ms`);
});

test('a re-initialisation slower than the deadline: 503, and the replacement worker still connects', async (t) => {
  try {
    // The re-initialisation after the failed C_Encrypt holds the library-wide lock (C_Finalize,
    // then C_Initialize) when the deadline abandons its worker, whose thread then ends inside it.
    control.set(['C_Encrypt fail CKR_DEVICE_ERROR count=1', 'C_Initialize delay 300 count=1']);
    assertError(await encrypt(), 503, 'DependencyTimeoutException');
    // Without the lock released, the replacement waits for it forever: "to connect" from then on.
    // With it, the requests meanwhile open the breaker (2 s), after which a trial succeeds.
    const { ms, seen } = await recover();
    t.diagnostic(`recovered in ${ms.toFixed(0)} ms; failures meanwhile: ${seen}`);
    assert.ok(ms < 5000, `recovered in ${ms} ms`);
  } finally {
    control.clear();
    await recover();
  }
});

describe('a stale key handle', () => {
  test('C_EncryptInit → CKR_OBJECT_HANDLE_INVALID once: looked up again, no re-initialisation', async () => {
    control.resetTrace();
    control.set(['C_EncryptInit fail CKR_OBJECT_HANDLE_INVALID count=1']);
    const enc = await encrypt();
    assert.equal(enc.res.status, 200, enc.res.text);
    const trace = control.trace();
    assert.equal(control.calls('C_EncryptInit'), 2, trace.join(' '));
    assert.ok(
      trace.indexOf('C_FindObjectsInit') > trace.indexOf('C_EncryptInit'),
      `the key found again ${trace.join(' ')}`,
    );
    assert.equal(control.calls('C_Initialize'), 0);
    control.clear();
    assertPlaintext(await decrypt(enc.sealed as Sealed), enc.sealed as Sealed);
  });

  test('C_DecryptInit → CKR_KEY_HANDLE_INVALID once: looked up again, no re-initialisation', async () => {
    const enc = await encrypt();
    assert.equal(enc.res.status, 200, enc.res.text);
    control.resetTrace();
    control.set(['C_DecryptInit fail CKR_KEY_HANDLE_INVALID count=1']);
    assertPlaintext(await decrypt(enc.sealed as Sealed), enc.sealed as Sealed);
    assert.equal(control.calls('C_DecryptInit'), 2);
    assert.ok(control.calls('C_FindObjectsInit') >= 1);
    assert.equal(control.calls('C_Initialize'), 0);
  });

  test('still stale after a fresh lookup: 500 naming the code, no loop, then success', async () => {
    control.resetTrace();
    control.set(['C_EncryptInit fail CKR_OBJECT_HANDLE_INVALID count=2']);
    assertError(await encrypt(), 500, 'InternalException', /CKR_OBJECT_HANDLE_INVALID/);
    assert.equal(control.calls('C_EncryptInit'), 2);
    await roundTrip();
  });
});

describe('a ciphertext the HSM rejects: 400 InvalidCiphertextException, no retry or re-initialisation', () => {
  // The profile's codes (profiles.ts): CKR_GENERAL_ERROR is how SoftHSM reports a bad tag.
  for (const ckr of PROFILE.invalidCiphertext) {
    test(`C_Decrypt → ${ckr}`, async () => {
      const enc = await encrypt();
      assert.equal(enc.res.status, 200, enc.res.text);
      control.resetTrace();
      control.set([`C_Decrypt fail ${ckr} count=1`]);
      assertError(await decrypt(enc.sealed as Sealed), 400, 'InvalidCiphertextException');
      assert.equal(control.calls('C_Decrypt'), 1, 'not retried');
      assert.equal(control.calls('C_Initialize'), 0, 'the session was kept');
      // The same ciphertext, now untouched, decrypts: the 400 was the HSM's answer, not the data's.
      assertPlaintext(await decrypt(enc.sealed as Sealed), enc.sealed as Sealed);
    });
  }

  test('a tag that really does not verify (no fault injected)', async () => {
    const enc = await encrypt();
    assert.equal(enc.res.status, 200, enc.res.text);
    const s = enc.sealed as Sealed;
    const tag = Buffer.from(s.fields.authenticationTag as string, 'base64');
    tag[0] = (tag[0] as number) ^ 1;
    control.resetTrace();
    assertError(await decrypt(s, { authenticationTag: b64(tag) }), 400, 'InvalidCiphertextException');
    assert.equal(control.calls('C_Initialize'), 0);
  });

  // Another vendor's code (nShield's CKR_FUNCTION_FAILED; SoftHSM's CKR_GENERAL_ERROR on NSS).
  for (const ckr of ['CKR_FUNCTION_FAILED', 'CKR_GENERAL_ERROR'].filter(
    (c) => !PROFILE.invalidCiphertext.includes(c),
  )) {
    test(`another vendor’s bad-ciphertext code (${ckr}) is a 500 with the ${PROFILE.name} profile`, async () => {
      const enc = await encrypt();
      assert.equal(enc.res.status, 200, enc.res.text);
      control.set([`C_Decrypt fail ${ckr} count=1`]);
      assertError(await decrypt(enc.sealed as Sealed), 500, 'InternalException', new RegExp(ckr));
    });
  }
});

/** The code `ckr` once at C_EncryptInit and at C_DecryptInit: that answer, no retry or re-initialisation. */
function initRefusals(ckr: string, status: number, errorName: string): void {
  test(`C_EncryptInit → ${ckr}`, async () => {
    control.resetTrace();
    control.set([`C_EncryptInit fail ${ckr} count=1`]);
    assertError(await encrypt(), status, errorName, new RegExp(`\\(${ckr}\\)`));
    assert.equal(control.calls('C_EncryptInit'), 1);
    assert.equal(control.calls('C_Initialize'), 0);
  });

  test(`C_DecryptInit → ${ckr}`, async () => {
    const enc = await encrypt();
    assert.equal(enc.res.status, 200, enc.res.text);
    control.resetTrace();
    control.set([`C_DecryptInit fail ${ckr} count=1`]);
    assertError(await decrypt(enc.sealed as Sealed), status, errorName, new RegExp(`\\(${ckr}\\)`));
    assert.equal(control.calls('C_DecryptInit'), 1);
    assert.equal(control.calls('C_Initialize'), 0);
  });
}

describe('a key the HSM does not let do this: 400 InvalidKeyUsageException', () => {
  // SoftHSM's refusal of a key's usage, and NSS's (which says the key's type is inconsistent).
  for (const ckr of ['CKR_KEY_FUNCTION_NOT_PERMITTED', 'CKR_KEY_TYPE_INCONSISTENT']) {
    initRefusals(ckr, 400, 'InvalidKeyUsageException');
  }
});

describe('a mechanism the HSM refuses: 500 InternalException, not a key usage error', () => {
  // The HSM cannot do this AES-GCM, whatever the key: telling KMS the key is wrong would mislead.
  for (const ckr of ['CKR_MECHANISM_INVALID', 'CKR_MECHANISM_PARAM_INVALID']) {
    initRefusals(ckr, 500, 'InternalException');
  }
});

test('a token without AES-GCM: a start-up error naming it, UNAVAILABLE, 500 (never InvalidKeyUsageException); served once it has it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-no-gcm-'));
  const noGcm = new FaultControl(dir);
  // What opencryptoki's soft token answers: it has no CKM_AES_GCM at all.
  noGcm.set(['C_GetMechanismInfo fail CKR_MECHANISM_INVALID']);
  const other = await startProxy({
    configure: (config) => {
      config.hsm.modulePath = buildFaultModule();
      config.healthCheck.cacheSeconds = 0;
    },
    env: noGcm.env(),
  });
  t.after(async () => {
    await other.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const reason = 'HSM unavailable: the token cannot do AES-256-GCM: it has no CKM_AES_GCM';
  await other.waitForOutput(/"message":"HSM connection failed"/);
  assert.match(
    other.output(),
    new RegExp(`"level":"ERROR","message":"HSM connection failed".*"reason":"${reason}"`),
  );
  const enc = await encryptFresh(other, sensitive);
  assertError(enc, 500, 'InternalException', new RegExp(`^${reason}$`));
  const h = await other.xks('health', {
    requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
  });
  assert.equal(h.json.ekmFleetDetails[0].healthStatus, 'UNAVAILABLE');
  assert.match(await other.waitForOutput(/Deep health check failed/), new RegExp(reason));
  noGcm.clear();
  let res = await encryptFresh(other, sensitive);
  for (const deadline = Date.now() + 5000; res.res.status !== 200 && Date.now() < deadline; ) {
    await sleep(100);
    res = await encryptFresh(other, sensitive);
  }
  assert.equal(res.res.status, 200, res.res.text);
  assertNoLeaks(await other.settledOutput(), other.secrets, sensitive);
});

/** A 503 DependencyTimeoutException that came at the deadline: not before it, not long after. */
async function assertTimedOut(t: TestContext, answer: Answer, what: string): Promise<void> {
  assertError(answer, 503, 'DependencyTimeoutException', new RegExp(`more than ${DEADLINE_MS} ms`));
  const line = await logLine(answer.kmsRequestId);
  const hsmMs = line.hsmLatencyMs as number;
  const proxyMs = line.latencyMs as number;
  t.diagnostic(
    `${what}: 503 after ${answer.ms.toFixed(1)} ms at the client, ${proxyMs} ms in the proxy, ${hsmMs} ms waiting for the HSM`,
  );
  assert.ok(hsmMs >= DEADLINE_MS - 1, `waited the deadline (${hsmMs} ms)`);
  assert.ok(proxyMs < PROXY_BOUND_MS, `answered within ${PROXY_BOUND_MS} ms in the proxy (${proxyMs} ms)`);
  assert.ok(answer.ms < CLIENT_BOUND_MS, `answered within ${CLIENT_BOUND_MS} ms (${answer.ms} ms)`);
}

describe('a slow or hung HSM', () => {
  test('C_EncryptInit delayed 300 ms: 503 at the deadline, the process keeps serving, a new worker after it', async (t) => {
    control.set(['C_EncryptInit delay 300']);
    await assertTimedOut(t, await encrypt(), 'delay 300');
    // The process still answers at once what needs no HSM call (the key's description is cached).
    const meta = await proxy.xks('keys/foo/metadata', { requestMetadata: metadata('DescribeKey') });
    assert.equal(meta.status, 200, meta.text);
    control.clear();
    control.resetTrace();
    const { ms, seen } = await recover();
    t.diagnostic(`recovered in ${ms.toFixed(0)} ms after the rule was cleared; failures meanwhile: ${seen}`);
    // A new worker loaded the module and logged in (the stuck one was abandoned, not reused).
    assert.ok(control.calls('C_GetFunctionList') >= 1, control.trace().slice(0, 8).join(' '));
    assert.ok(control.calls('C_Login') >= 1);
  });

  test('C_EncryptInit hangs: 503 at the deadline; released, the next requests succeed', async (t) => {
    control.set(['C_EncryptInit hang']);
    await assertTimedOut(t, await encrypt(), 'hang');
    control.clear(); // releases the stuck call, whose worker then ends
    const { ms, seen } = await recover();
    t.diagnostic(`recovered in ${ms.toFixed(0)} ms after the release; failures meanwhile: ${seen}`);
    await roundTrip();
  });

  test('the worker replacing an abandoned one is ready before the next request', async (t) => {
    try {
      control.set(['C_EncryptInit delay 300']);
      assertError(await encrypt(), 503, 'DependencyTimeoutException');
      control.clear();
      control.resetTrace();
      // Idle for longer than the stuck call: a replacement started at once has connected by now.
      await sleep(600);
      assert.ok(control.calls('C_Login') >= 1, `no new worker connected while idle: ${control.trace()}`);
      control.resetTrace();
      const enc = await encrypt();
      assert.equal(enc.res.status, 200, enc.res.text);
      const hsmMs = (await logLine(enc.kmsRequestId)).hsmLatencyMs as number;
      t.diagnostic(`first request after the timeout: ${hsmMs} ms in the HSM layer`);
      // Served by a worker that had connected: no module load, initialisation or login in its calls.
      const started = ['C_GetFunctionList', 'C_Initialize', 'C_Login'].filter((fn) => control.calls(fn) > 0);
      assert.deepEqual(started, [], `the first request paid a worker start: ${control.trace().join(' ')}`);
    } finally {
      control.clear();
      await recover();
    }
  });

  test('a call that finds the replacement worker still starting has its own deadline from when the worker is ready: the replacement is kept', async () => {
    try {
      // The stuck call is abandoned; its replacement starts at once and hangs in C_Login.
      control.set(['C_EncryptInit delay 300 count=1', 'C_Login hang']);
      assertError(await encrypt(), 503, 'DependencyTimeoutException');
      const logged = (await proxy.settledOutput()).length;
      // The replacement finishes starting ~50 ms into the next request's wait for it, and that
      // request's call then takes 60 ms: past a deadline counted from the request (100 ms), within
      // one counted from when the worker took the call.
      const release = setTimeout(() => control.set(['C_EncryptInit delay 60']), 40);
      let enc = await encrypt();
      clearTimeout(release);
      control.set(['C_EncryptInit delay 60']);
      // A machine too busy to finish the start within the wait (NSS softoken's start is the slower):
      // "to connect", the worker kept; it is ready within seconds.
      for (const until = performance.now() + 5000; /to connect/.test(enc.res.json?.errorMessage ?? ''); ) {
        if (performance.now() > until) break;
        enc = await encrypt();
      }
      assert.equal(enc.res.status, 200, enc.res.text);
      const abandoned = (await proxy.settledOutput()).slice(logged).match(/abandoned a worker/g) ?? [];
      assert.equal(abandoned.length, 0, 'the replacement worker was kept');
    } finally {
      control.clear();
      await recover();
    }
  });

  test('repeated timeouts open the breaker: fast failures without an HSM call, UNAVAILABLE; a trial after the pause recovers', async (t) => {
    try {
      control.set(['C_EncryptInit delay 300']);
      for (let i = 0; i < 3; i++) assertError(await encrypt(), 503, 'DependencyTimeoutException');
      const openedAt = performance.now();
      await sleep(350); // the abandoned calls end (300 ms): their trailing calls are not this test's
      control.resetTrace();
      const fast = await encrypt();
      assertError(fast, 503, 'DependencyTimeoutException');
      assert.deepEqual(control.trace(), [], 'the open breaker kept the request away from the HSM');
      // Failed fast: not after waiting for a deadline.
      assert.ok(((await logLine(fast.kmsRequestId)).hsmLatencyMs as number) < DEADLINE_MS, 'failed fast');
      assert.equal(await health(), 'UNAVAILABLE');
      // Healthy again, but not tried before the pause ends; then a trial brings it back.
      control.clear();
      const { ms } = await recover();
      t.diagnostic(
        `back ${Math.round(performance.now() - openedAt)} ms after the breaker opened (${ms} ms polling)`,
      );
      assert.equal(await health(), 'ACTIVE');
    } finally {
      control.clear();
      await recover();
    }
  });
});

test('a dead token (every call CKR_DEVICE_REMOVED): 500 quickly, UNAVAILABLE; recovery without a restart', async (t) => {
  control.set(['* fail CKR_DEVICE_REMOVED']);
  for (let i = 0; i < 4; i++) {
    const enc = await encrypt();
    assertError(enc, 500, 'InternalException', /\(CKR_DEVICE_REMOVED\)/);
    const hsmMs = (await logLine(enc.kmsRequestId)).hsmLatencyMs as number;
    // Fails fast: an answer, not a wait for the deadline.
    assert.ok(hsmMs < DEADLINE_MS, `a dead HSM fails fast (${hsmMs} ms)`);
  }
  const started = performance.now();
  assert.equal(await health(), 'UNAVAILABLE');
  t.diagnostic(`health answered UNAVAILABLE in ${(performance.now() - started).toFixed(0)} ms`);
  control.clear();
  const { ms, failures } = await recover();
  t.diagnostic(`recovered in ${ms.toFixed(0)} ms after the token came back (${failures} more 500s)`);
  assert.equal(await health(), 'ACTIVE');
});

test('no wrong answer: every ciphertext answered with 200 decrypts to its plaintext', async () => {
  // Enough to prove something: one per test above, at least.
  assert.ok(sealed.length >= 30, `${sealed.length} ciphertexts`);
  for (const s of [...sealed]) assertPlaintext(await decrypt(s), s);
});

test('the log names the HSM errors, and holds no PIN, secret, plaintext or AAD', async () => {
  const output = await proxy.settledOutput();
  for (const ckr of ['CKR_DEVICE_ERROR', 'CKR_DEVICE_REMOVED', 'CKR_TOKEN_NOT_PRESENT']) {
    assert.ok(output.includes(ckr), `${ckr} is logged`);
  }
  assert.match(output, /"errorName":"DependencyTimeoutException"/);
  assertNoLeaks(output, proxy.secrets, sensitive);
});
