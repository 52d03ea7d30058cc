// The init phase (functions/runtime.ts) ends only once the HSM has logged in and an AES-GCM round
// trip has gone through: provisioned concurrency runs it ahead of traffic, and whatever it leaves
// running can be frozen and paid for by the first request. Bounded by hsm.startTimeoutMs: an HSM
// that does not answer does not hold the start-up. On demand (a request waits for the init), the
// HSM's first calls run on the main thread, the init makes no round trip of its own (the request's
// calls follow at once), and the worker thread starts after the first response.
// The fault module (a PKCS#11 library over SoftHSM) slows, fails or blocks calls and traces them.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkerHsm } from '../../layers/pkcs11/worker-hsm.ts';
import { COUNT_WORKERS } from '../helpers/count-workers.ts';
import { signedEvent } from '../helpers/events.ts';
import { buildFaultModule, faultHsmInThisProcess } from '../helpers/fault-hsm.ts';
import { metadata, PREFIX, ROOT } from '../helpers/proxy.ts';

const { setup, control, dir } = faultHsmInThisProcess('xks-init-phase');
const modulePath = buildFaultModule();
/** A child's expression for the PKCS#11 calls traced so far (its script imports readFileSync). */
const READ_TRACE = `readFileSync(${JSON.stringify(control.tracePath)}, 'utf8').split('\\n').filter(Boolean)`;

/**
 * Imports the Encrypt handler in a fresh process, as Lambda's init phase does; the child reports,
 * the moment the import is done, how long it took and the PKCS#11 calls made by then.
 */
function init(
  startTimeoutMs: number,
  env: Record<string, string> = {},
): Promise<{ ms: number; trace: string[]; output: string }> {
  const configFile = configWith({ startTimeoutMs });
  const script = [
    "const { readFileSync } = await import('node:fs');",
    'const t0 = performance.now();',
    `await import(${JSON.stringify(join(ROOT, 'functions/encrypt.ts'))});`,
    'const ms = performance.now() - t0;',
    `const trace = ${READ_TRACE};`,
    "process.stderr.write('INIT ' + JSON.stringify({ ms, trace }) + '\\n');",
  ].join('\n');
  return report(script, { ...env, XKS_PROXY_CONFIG: configFile }, 'INIT ');
}

/**
 * A child's last statement, after its report: holds its main thread until the test ends it, so that
 * the HSM worker the first response starts never runs (its login would rewrite the token's files
 * as the child is ended).
 */
const HOLD = 'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);';

/** Lambda's variable for an environment made for a request that waits (functions/aws.ts). */
const ON_DEMAND = { AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand' };

/** A signed Encrypt event for the Lambda handler, of `text`. */
function encryptEvent(text: string) {
  return signedEvent({
    path: `${PREFIX}/kms/xks/v1/keys/foo/encrypt`,
    body: {
      requestMetadata: metadata('Encrypt'),
      plaintext: Buffer.from(text).toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
    },
    credential: setup.credentials[0] as NonNullable<Parameters<typeof signedEvent>[0]['credential']>,
  });
}

/**
 * On demand: imports the Encrypt handler in a fresh process and calls it once, as Lambda does for
 * the request that made the environment. Reports the PKCS#11 calls made by the end of the import
 * (`atInit`) and by the response, its status, and the time from the import's start to the response.
 */
async function firstRequest(
  startTimeoutMs: number,
): Promise<{ status: number; ms: number; atInit: string[]; trace: string[]; output: string }> {
  const event = await encryptEvent('first request');
  const script = [
    "const { readFileSync } = await import('node:fs');",
    'const t0 = performance.now();',
    `const { handler } = await import(${JSON.stringify(join(ROOT, 'functions/encrypt.ts'))});`,
    `const atInit = ${READ_TRACE};`,
    "const context = { functionName: 'xks-test', awsRequestId: 'r', getRemainingTimeInMillis: () => 3000 };",
    'const response = await handler(JSON.parse(process.env.TEST_EVENT), context);',
    'const ms = performance.now() - t0;',
    `process.stderr.write('FIRST ' + JSON.stringify({ status: response.statusCode, ms, atInit, trace: ${READ_TRACE} }) + '\\n');`,
    HOLD,
  ].join('\n');
  return report(
    script,
    { ...ON_DEMAND, XKS_PROXY_CONFIG: configWith({ startTimeoutMs }), TEST_EVENT: JSON.stringify(event) },
    'FIRST ',
  );
}

/** A configuration file: the test token's, through the fault module, with `hsm` settings. */
function configWith(hsm: Record<string, number>): string {
  const configFile = join(dir, `config-${JSON.stringify(hsm).replace(/\W/g, '')}.json`);
  writeFileSync(
    configFile,
    JSON.stringify({ ...setup.config, hsm: { ...setup.config.hsm, modulePath, ...hsm } }),
  );
  return configFile;
}

/** Runs `script` in a fresh process; resolves with the JSON of its line starting with `prefix`. */
function report<T>(
  script: string,
  env: Record<string, string>,
  prefix: string,
): Promise<T & { output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let found: string | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const onData = (data: Buffer) => {
      output += data.toString();
      if (found !== undefined) return;
      found = output.split('\n').find((l) => l.startsWith(prefix));
      if (found === undefined) return;
      // Ended with any call the rules block still blocked in the fault module: released, it would
      // go on into SoftHSM, which rewrites the token's files at a login, and a child ended in the
      // middle of that leaves the token unreadable for the tests after it.
      child.kill('SIGTERM');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      // The next test starts once the child has gone (one still running could read its rules).
      control.clear();
      if (found !== undefined) resolve({ ...JSON.parse(found.slice(prefix.length)), output });
      else reject(new Error(`the child ended with ${code} and no report:\n${output}`));
    });
  });
}

test('a slow login: the init phase ends after it, and after an encrypt and a decrypt', async () => {
  control.resetTrace();
  control.set(['C_Login delay 300']);
  const { ms, trace, output } = await init(5000);
  const login = trace.indexOf('C_Login');
  assert.ok(login >= 0, `no C_Login before the end of the init phase: ${trace.join(' ')}\n${output}`);
  for (const call of ['C_Encrypt', 'C_Decrypt']) {
    assert.ok(
      trace.indexOf(call) > login,
      `no ${call} after C_Login by the end of the init phase: ${trace.join(' ')}`,
    );
  }
  assert.ok(ms >= 300, `the init phase took ${ms} ms, less than the login alone`);
});

test('an HSM that never logs in holds the init phase for startTimeoutMs, then lets it end', async () => {
  control.resetTrace();
  control.set(['C_Login hang']);
  const { ms, trace, output } = await init(500);
  assert.ok(ms >= 500, `the init phase took ${ms} ms: it did not wait for the login`);
  assert.ok(!trace.includes('C_Encrypt'), trace.join(' '));
  assert.match(output, /HSM not ready at the end of the init phase/);
});

test('on demand: the login, the init and the first request run on the main thread; the worker starts after the response and gives later calls their deadline', async () => {
  control.resetTrace();
  const events = await Promise.all([1, 2, 3].map(() => encryptEvent('on demand')));
  const script = [
    "import { renameSync, utimesSync, writeFileSync } from 'node:fs';",
    ...COUNT_WORKERS,
    `const { handler } = await import(${JSON.stringify(join(ROOT, 'functions/encrypt.ts'))});`,
    'const atInit = workers;',
    'const events = JSON.parse(process.env.TEST_EVENTS);',
    "const context = { functionName: 'xks-test', awsRequestId: 'r', getRemainingTimeInMillis: () => 3000 };",
    'const first = await handler(events[0], context);',
    'const atResponse = workers;',
    // Long enough for the worker to start and log in, on a busy machine too.
    'await new Promise((r) => setTimeout(r, 2000));',
    'const later = workers;',
    // The rules file as test/helpers/fault-hsm.ts writes it.
    `const rules = ${JSON.stringify(control.controlPath)};`,
    'const setRules = (text, ahead) => {',
    "  writeFileSync(rules + '.child', text);",
    '  const mtime = Date.now() / 1000 + ahead;',
    "  utimesSync(rules + '.child', mtime, mtime);",
    "  renameSync(rules + '.child', rules);",
    '};',
    // The next C_Encrypt hangs.
    "setRules('C_Encrypt hang\\n', 5);",
    'const t = performance.now();',
    'const slow = await handler(events[1], context);',
    'const slowMs = performance.now() - t;',
    // Then the worker that replaced the abandoned one serves a request, once it has started and
    // logged in: a request sooner waits for it until its deadline (300 ms here), which a worker's
    // start can take on a machine busy with the other test files.
    "setRules('', 10);",
    'await new Promise((r) => setTimeout(r, 2000));',
    'const next = await handler(events[2], context);',
    "process.stderr.write('REPORT ' + JSON.stringify({ atInit, atResponse, later, first: first.statusCode, slow: { statusCode: slow.statusCode, body: slow.body, ms: slowMs }, next: next.statusCode }) + '\\n');",
    HOLD,
  ].join('\n');
  const result = await report<{
    atInit: number;
    atResponse: number;
    later: number;
    first: number;
    slow: { statusCode: number; body: string; ms: number };
    next: number;
  }>(
    script,
    {
      ...ON_DEMAND,
      XKS_PROXY_CONFIG: configWith({ callTimeoutMs: 300 }),
      TEST_EVENTS: JSON.stringify(events),
    },
    'REPORT ',
  );
  assert.equal(result.first, 200, result.output);
  assert.equal(result.atInit, 0, 'a worker thread started in the init phase');
  assert.equal(result.atResponse, 0, 'a worker thread started before the first response');
  assert.equal(result.later, 1, `no worker thread after the first response:\n${result.output}`);
  // Answered by the worker: a call on the main thread would have hung with it.
  assert.equal(result.slow.statusCode, 503, result.slow.body);
  assert.equal(JSON.parse(result.slow.body).errorName, 'DependencyTimeoutException');
  assert.ok(result.slow.ms < 2000, `the hung call was answered after ${result.slow.ms} ms`);
  assert.equal(result.next, 200, `the replacement worker did not serve the next request:\n${result.output}`);
});

test("on demand: the init makes no round trip; the first request's calls follow the login", async () => {
  control.resetTrace();
  const { status, atInit, trace, output } = await firstRequest(5000);
  assert.equal(status, 200, output);
  for (const call of ['C_Encrypt', 'C_Decrypt']) {
    assert.ok(!atInit.includes(call), `${call} in the init phase: ${atInit.join(' ')}`);
  }
  // The request's Encrypt, and no health-check round trip (its Decrypt) at all.
  assert.equal(trace.filter((call) => call === 'C_Encrypt').length, 1, trace.join(' '));
  assert.ok(!trace.includes('C_Decrypt'), trace.join(' '));
  assert.ok(trace.indexOf('C_Encrypt') > trace.indexOf('C_Login'), trace.join(' '));
});

test('on demand: a PIN the token refused on the main thread is not tried again by a worker', async () => {
  control.resetTrace();
  control.set(['C_Login fail CKR_PIN_INCORRECT']);
  const { status, trace, output } = await firstRequest(1000);
  assert.notEqual(status, 200, output);
  assert.equal(trace.filter((call) => call === 'C_Login').length, 1, trace.join(' '));
  assert.match(output, /refused the PIN/);
});

test('on demand: after a PIN refused on the main thread, the worker is not started to try it again', async () => {
  control.resetTrace();
  control.set(['C_Login fail CKR_PIN_INCORRECT']);
  const hsm = new WorkerHsm({
    pkcs11: {
      modulePath,
      libraryParameters: setup.config.hsm.libraryParameters,
      tokenLabel: setup.config.hsm.tokenLabel,
      pin: setup.config.hsm.pin as string,
    },
    callTimeoutMs: 1000,
    startTimeoutMs: 1000,
    firstCallsHere: true,
  });
  try {
    await assert.rejects(hsm.findKey('foo'), /refused the PIN/);
    hsm.startWorker(); // as after the first response
    await sleep(1000);
    await assert.rejects(hsm.findKey('foo'), /refused the PIN/);
    assert.equal(control.calls('C_Login'), 1, control.trace().join(' '));
  } finally {
    hsm.close();
    control.clear();
  }
});

test('on demand: a login that fails on the main thread is made again by a worker, which serves the first request', async () => {
  control.resetTrace();
  control.set(['C_Login fail CKR_DEVICE_ERROR count=1']);
  const { status, trace, output } = await firstRequest(5000);
  assert.equal(status, 200, output);
  const logins = trace.flatMap((call, index) => (call === 'C_Login' ? [index] : []));
  assert.equal(logins.length, 2, `${trace.join(' ')}\n${output}`);
  assert.ok(trace.indexOf('C_Encrypt') > (logins[1] as number), trace.join(' '));
});

test('on demand: the first request waits for a slow login past startTimeoutMs (no deadline on the main thread)', async () => {
  control.resetTrace();
  control.set(['C_Login delay 800']);
  const { status, ms, trace, output } = await firstRequest(200);
  assert.equal(status, 200, output);
  assert.ok(ms >= 800, `the init and the first request took ${ms} ms, less than the login`);
  assert.ok(trace.includes('C_Encrypt'), trace.join(' '));
});
