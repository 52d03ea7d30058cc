// A fleet of two HSMs with the same keys: two SoftHSM tokens holding the same imported key
// values, one reached through the fault-injecting module, the other through a pass-through copy of
// it (not directly: a worker alone on SoftHSM's own path would C_Finalize it under the faulty
// copy's sessions). The two copies are two libraries to the proxy with one SoftHSM underneath, whose
// C_Initialize must not run on two threads at once (the layer's process-wide lock). Requests keep being
// served while one HSM fails (failover on 'unavailable'), the log line names the HSM that served each
// request, GetHealthStatus reports each HSM, a ciphertext made by one HSM decrypts on the other, and
// a failed HSM gets its traffic back once it recovers, without a restart.
//
// The module reads its control file from the proxy's environment when it is loaded, so a process
// can only have one faulty HSM: one suite has the first HSM faulty (failover exercised), the
// mirror suite the second. Both tokens live in the proxy's one SoftHSM folder (one SOFTHSM2_CONF per
// process), with different labels.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { ensureSoftHsmToken, HEALTH_CHECK_KEY, tokenSerial } from '../../scripts/softhsm.ts';
import { buildFaultModule, FaultControl } from '../helpers/fault-hsm.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { type RunningProxy, startProxy } from '../helpers/proxy.ts';
import { type Answer, decryptSealed, encryptFresh, type Sealed } from '../helpers/sealed.ts';

const LABELS = ['hsm-a', 'hsm-b'] as const;
/** Roomier than the default 100 ms: a slow (not timed-out) HSM is part of this file. */
const DEADLINE_MS = 250;
/** A deep health check slower than this is DEGRADED. */
const DEGRADED_ABOVE_MS = 100;
/** The C_EncryptInit delay that makes an HSM slow but not timed out. */
const SLOW_MS = 150;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface MadeBy extends Sealed {
  /** The serial of the HSM that made it. */
  madeBy: string;
}

/** One proxy over a two-HSM fleet, and what the tests do with it. */
class Fleet {
  proxy!: RunningProxy;
  readonly control: FaultControl;
  readonly controlDir: string;
  /** Token serials, in fleet order: the HSMs' ids in ekmFleetDetails and in the log. */
  serials: string[] = [];
  readonly sealed: MadeBy[] = [];
  readonly sensitive: Buffer[] = [];
  readonly soPins: string[] = LABELS.map(() => randomBytes(12).toString('base64url'));

  /** The labels of the HSMs reached through the fault module. */
  readonly faulty: ReadonlyArray<(typeof LABELS)[number]>;

  constructor(faulty: ReadonlyArray<(typeof LABELS)[number]>) {
    this.faulty = faulty;
    this.controlDir = mkdtempSync(join(tmpdir(), 'hsm-fleet-'));
    this.control = new FaultControl(this.controlDir);
  }

  async start(): Promise<void> {
    // The same key material in both tokens: imported values, never generated inside one token.
    const keys = [
      { label: 'foo', encrypt: true, decrypt: true, value: randomBytes(32) },
      { label: HEALTH_CHECK_KEY, encrypt: true, decrypt: true, value: randomBytes(32) },
    ];
    const faultModule = buildFaultModule();
    const passThrough = buildFaultModule('passthrough');
    // Both HSMs connect in the init phase; wait until both answer (a slow start is not under test).
    // Only then read the serials here: a login rewrites the token's files, and SoftHSM in this
    // process fails (CKR_GENERAL_ERROR) reading one that the proxy is writing.
    this.proxy = await startProxy({
      configure: (config, dir) => {
        LABELS.forEach((label, i) => {
          const soPin = this.soPins[i] as string;
          ensureSoftHsmToken({ dir, label, pin: config.hsm.pin as string, soPin, keys });
        });
        config.hsm.fleet = LABELS.map((label) => ({
          name: label,
          tokenLabel: label,
          modulePath: this.faulty.includes(label) ? faultModule : passThrough,
        }));
        config.hsm.callTimeoutMs = DEADLINE_MS;
        // Every health check asks each HSM: no cached ACTIVE hides a fault.
        config.healthCheck.cacheSeconds = 0;
        config.healthCheck.degradedAboveMs = DEGRADED_ABOVE_MS;
      },
      env: this.control.env(),
    });
    let health: string[] = [];
    await this.until(
      async () => {
        health = await this.health(false);
        return health.every((s) => s === 'ACTIVE');
      },
      10_000,
      () => `health ${health.join(', ')}`,
    );
    // SOFTHSM2_CONF in this process points at the proxy's token folder (ensureSoftHsmToken set it).
    this.serials = LABELS.map(tokenSerial);
    assert.notEqual(this.serials[0], this.serials[1]);
    assert.deepEqual(await this.health(), ['ACTIVE', 'ACTIVE']);
    this.control.clear();
  }

  async stop(): Promise<void> {
    this.control.clear();
    await this.proxy?.stop();
    rmSync(this.controlDir, { recursive: true, force: true });
  }

  async encrypt(): Promise<Answer & { sealed?: MadeBy; servedBy?: string }> {
    const { sealed: made, ...answer } = await encryptFresh(this.proxy, this.sensitive);
    if (made === undefined) return answer;
    const servedBy = await this.servedBy(answer.kmsRequestId);
    const sealed = { ...made, madeBy: servedBy };
    this.sealed.push(sealed);
    return { ...answer, sealed, servedBy };
  }

  decrypt(s: Sealed): Promise<Answer> {
    return decryptSealed(this.proxy, s);
  }

  /** Decrypts `s`: 200 with its plaintext, served by the HSM `serial` when given. */
  async assertDecrypts(s: Sealed, serial?: string): Promise<void> {
    const dec = await this.decrypt(s);
    assert.equal(dec.res.status, 200, dec.res.text);
    assert.ok(Buffer.from(dec.res.json.plaintext, 'base64').equals(s.plaintext), 'decrypts to the plaintext');
    if (serial !== undefined) assert.equal(await this.servedBy(dec.kmsRequestId), serial);
  }

  /** healthStatus of each HSM, in fleet order; the ids are the token serials (checked unless told). */
  async health(checkIds = true): Promise<string[]> {
    const res = await this.proxy.xks('health', {
      requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
    });
    assert.equal(res.status, 200, res.text);
    const details = res.json.ekmFleetDetails as Array<{ id: string; healthStatus: string }>;
    if (checkIds) {
      assert.deepEqual(
        details.map((d) => d.id),
        this.serials,
      );
    }
    return details.map((d) => d.healthStatus);
  }

  /** The `hsm` field of a request's log line: which HSM served it. */
  async servedBy(kmsRequestId: string): Promise<string> {
    const needle = `"kmsRequestId":"${kmsRequestId}"`;
    const output = await this.proxy.waitForOutput(
      new RegExp(`"XKS request".*${needle}|${needle}.*"XKS request"`),
    );
    const line = output.split('\n').find((l) => l.includes(needle) && l.includes('"XKS request"'));
    return JSON.parse(line as string).hsm;
  }

  async until(condition: () => Promise<boolean>, withinMs: number, state?: () => string): Promise<number> {
    const started = performance.now();
    while (!(await condition())) {
      assert.ok(
        performance.now() - started < withinMs,
        `not within ${withinMs} ms${state ? `: ${state()}` : ''}; the proxy's last output:\n${this.proxy.output().slice(-3000)}`,
      );
      await sleep(100);
    }
    return performance.now() - started;
  }
}

describe('the first HSM fails: the second serves', () => {
  const fleet = new Fleet(['hsm-a']);
  let first: string;
  let second: string;
  /** Made by the first HSM while it was healthy. */
  let madeByFirst: Sealed;
  /** Made by the second HSM while the first was down. */
  let madeBySecond: Sealed;

  before(async () => {
    await fleet.start();
    [first, second] = fleet.serials as [string, string];
  });
  afterEach(() => fleet.control.clear());
  after(() => fleet.stop());

  test('healthy: both ACTIVE, and requests go to the first HSM', async () => {
    assert.deepEqual(await fleet.health(), ['ACTIVE', 'ACTIVE']);
    const enc = await fleet.encrypt();
    assert.equal(enc.res.status, 200, enc.res.text);
    assert.equal(enc.servedBy, first);
    madeByFirst = enc.sealed as Sealed;
    await fleet.assertDecrypts(madeByFirst, first);
  });

  test('a slow first HSM (past degradedAboveMs, within the deadline): DEGRADED, and still serving', async (t) => {
    fleet.control.set([`C_EncryptInit delay ${SLOW_MS}`]);
    assert.deepEqual(await fleet.health(), ['DEGRADED', 'ACTIVE']);
    const enc = await fleet.encrypt();
    assert.equal(enc.res.status, 200, enc.res.text);
    assert.equal(enc.servedBy, first, 'slow is not down: no failover');
    t.diagnostic(`an Encrypt on the slow HSM took ${enc.ms.toFixed(0)} ms`);
    fleet.control.clear();
    assert.deepEqual(await fleet.health(), ['ACTIVE', 'ACTIVE']);
  });

  test('the first HSM dead: every request succeeds on the second, ciphertexts of the first included', async (t) => {
    fleet.control.set(['* fail CKR_DEVICE_REMOVED']);
    for (let i = 0; i < 5; i++) {
      const enc = await fleet.encrypt();
      assert.equal(enc.res.status, 200, enc.res.text);
      assert.equal(enc.servedBy, second);
      if (i === 0) t.diagnostic(`first failed-over Encrypt: ${enc.ms.toFixed(1)} ms at the client`);
      madeBySecond = enc.sealed as Sealed;
    }
    // Made by the first HSM, decrypted by the second: the same key material.
    await fleet.assertDecrypts(madeByFirst, second);
    await fleet.assertDecrypts(madeBySecond, second);
  });

  test('GetHealthStatus: the dead HSM UNAVAILABLE, the other ACTIVE', async () => {
    fleet.control.set(['* fail CKR_DEVICE_REMOVED']);
    assert.deepEqual(await fleet.health(), ['UNAVAILABLE', 'ACTIVE']);
  });

  test('the open breaker keeps requests away from the dead HSM', async () => {
    fleet.control.set(['* fail CKR_DEVICE_REMOVED']);
    for (let i = 0; i < 3; i++) assert.equal((await fleet.encrypt()).servedBy, second);
    fleet.control.resetTrace();
    // Longer than the layer's reconnect interval (1 s), shorter than the breaker's pause (2 s).
    for (const end = performance.now() + 1500; performance.now() < end; ) {
      assert.equal((await fleet.encrypt()).servedBy, second);
      await sleep(100);
    }
    assert.deepEqual(fleet.control.trace(), [], 'no call reached the dead HSM');
  });

  test('a hung first HSM: 503 at the deadline (a timeout is not failed over), then the second serves', async (t) => {
    // From a healthy first HSM (the previous tests left it failed).
    await fleet.until(async () => (await fleet.encrypt()).servedBy === first, 15_000);
    fleet.control.set(['C_EncryptInit hang']);
    const first503 = await fleet.encrypt();
    assert.equal(first503.res.status, 503, first503.res.text);
    assert.equal(first503.res.json.errorName, 'DependencyTimeoutException');
    t.diagnostic(`503 after ${first503.ms.toFixed(0)} ms at the client (deadline ${DEADLINE_MS} ms)`);
    assert.ok(first503.ms < DEADLINE_MS + 200, `${first503.ms} ms`);
    // Each hung call holds a worker; once the first HSM is shut off, requests go to the second.
    let timeouts = 1;
    for (;;) {
      const enc = await fleet.encrypt();
      if (enc.res.status === 200) {
        assert.equal(enc.servedBy, second);
        break;
      }
      assert.equal(enc.res.json.errorName, 'DependencyTimeoutException', enc.res.text);
      timeouts++;
      // The breaker opens at 3; the layer's cap on stuck workers (4) also ends it.
      assert.ok(timeouts <= 3, `${timeouts} timeouts before failing over`);
    }
    t.diagnostic(`${timeouts} requests got 503 before the second HSM took over`);
    for (let i = 0; i < 3; i++) assert.equal((await fleet.encrypt()).servedBy, second);
  });

  test('the fault cleared: the first HSM gets its traffic back without a restart, and decrypts the second’s ciphertexts', async (t) => {
    fleet.control.clear(); // also releases the hung calls
    const ms = await fleet.until(async () => (await fleet.encrypt()).servedBy === first, 15_000);
    t.diagnostic(`traffic back on the first HSM ${ms.toFixed(0)} ms after the fault cleared`);
    await fleet.assertDecrypts(madeBySecond, first);
    assert.deepEqual(await fleet.health(), ['ACTIVE', 'ACTIVE']);
  });

  test('no wrong answer: every ciphertext answered decrypts to its plaintext on each HSM', async () => {
    const all = [...fleet.sealed];
    assert.ok(all.some((s) => s.madeBy === first) && all.some((s) => s.madeBy === second));
    for (const s of all) await fleet.assertDecrypts(s, first);
    fleet.control.set(['* fail CKR_DEVICE_REMOVED']);
    for (const s of all) await fleet.assertDecrypts(s, second);
  });

  test('the log holds no PIN, secret, plaintext or AAD', async () => {
    const output = await fleet.proxy.settledOutput();
    assert.match(output, /CKR_DEVICE_REMOVED/);
    assertNoLeaks(output, [...fleet.proxy.secrets, ...fleet.soPins], fleet.sensitive);
  });
});

describe('the second HSM fails: the first keeps serving, health tells', () => {
  const fleet = new Fleet(['hsm-b']);
  let first: string;

  before(async () => {
    await fleet.start();
    [first] = fleet.serials as [string];
  });
  afterEach(() => fleet.control.clear());
  after(() => fleet.stop());

  test('the second HSM dead: requests served by the first, which they never leave', async () => {
    fleet.control.set(['* fail CKR_DEVICE_REMOVED']);
    fleet.control.resetTrace();
    for (let i = 0; i < 5; i++) {
      const enc = await fleet.encrypt();
      assert.equal(enc.res.status, 200, enc.res.text);
      assert.equal(enc.servedBy, first);
      await fleet.assertDecrypts(enc.sealed as Sealed, first);
    }
    assert.deepEqual(fleet.control.trace(), [], 'no request went to the second HSM');
  });

  test('GetHealthStatus: the first ACTIVE, the dead second UNAVAILABLE', async () => {
    fleet.control.set(['* fail CKR_DEVICE_REMOVED']);
    assert.deepEqual(await fleet.health(), ['ACTIVE', 'UNAVAILABLE']);
    // The deep check did ask it (the health check is the only traffic a standby HSM gets).
    assert.ok(fleet.control.calls() > 0);
  });

  test('the fault cleared: the second HSM is ACTIVE again without a restart', async (t) => {
    fleet.control.clear();
    const ms = await fleet.until(async () => (await fleet.health())[1] === 'ACTIVE', 10_000);
    t.diagnostic(`ACTIVE again ${ms.toFixed(0)} ms after the fault cleared`);
    assert.deepEqual(await fleet.health(), ['ACTIVE', 'ACTIVE']);
  });

  test('the log holds no PIN, secret, plaintext or AAD', async () => {
    assertNoLeaks(
      await fleet.proxy.settledOutput(),
      [...fleet.proxy.secrets, ...fleet.soPins],
      fleet.sensitive,
    );
  });
});

describe('two HSMs behind one PKCS#11 library', () => {
  // Both through the fault module: one library instance, as with two partitions of one vendor's HSM.
  const fleet = new Fleet(['hsm-a', 'hsm-b']);

  before(() => fleet.start());
  after(() => fleet.stop());

  test('one HSM re-initialising does not keep the other re-initialising', async () => {
    fleet.control.set(['C_Encrypt fail CKR_DEVICE_ERROR count=1']);
    const enc = await fleet.encrypt();
    assert.equal(enc.res.status, 200, enc.res.text);
    fleet.control.resetTrace();
    for (let i = 0; i < 5; i++) {
      assert.equal((await fleet.encrypt()).res.status, 200);
      assert.deepEqual(await fleet.health(), ['ACTIVE', 'ACTIVE']);
    }
    // Each HSM may notice once that its session went; no more.
    assert.ok(
      fleet.control.calls('C_Initialize') <= 2,
      `${fleet.control.calls('C_Initialize')} re-initialisations`,
    );
  });
});
