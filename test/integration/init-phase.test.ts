// The init phase (functions/runtime.ts) ends only once the HSM has logged in and an AES-GCM round
// trip has gone through: provisioned concurrency runs it ahead of traffic, and whatever it leaves
// running can be frozen and paid for by the first request. Bounded by hsm.startTimeoutMs: an HSM
// that does not answer does not hold the start-up. The fault module (a PKCS#11 library over
// SoftHSM) slows or blocks C_Login and traces every call.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildFaultModule, faultHsmInThisProcess } from '../helpers/fault-hsm.ts';
import { ROOT } from '../helpers/proxy.ts';

const { setup, control, dir } = faultHsmInThisProcess('xks-init-phase');
const modulePath = buildFaultModule();

/**
 * Imports the Encrypt handler in a fresh process, as Lambda's init phase does; the child reports,
 * the moment the import is done, how long it took and the PKCS#11 calls made by then.
 */
function init(startTimeoutMs: number): Promise<{ ms: number; trace: string[]; output: string }> {
  const configFile = join(dir, `config-${startTimeoutMs}.json`);
  writeFileSync(
    configFile,
    JSON.stringify({ ...setup.config, hsm: { ...setup.config.hsm, modulePath, startTimeoutMs } }),
  );
  const script = [
    "const { readFileSync } = await import('node:fs');",
    'const t0 = performance.now();',
    `await import(${JSON.stringify(join(ROOT, 'functions/encrypt.ts'))});`,
    'const ms = performance.now() - t0;',
    `const trace = readFileSync(${JSON.stringify(control.tracePath)}, 'utf8').split('\\n').filter(Boolean);`,
    "process.stderr.write('INIT ' + JSON.stringify({ ms, trace }) + '\\n');",
  ].join('\n');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, XKS_PROXY_CONFIG: configFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const onData = (data: Buffer) => {
      output += data.toString();
      const line = output.split('\n').find((l) => l.startsWith('INIT '));
      if (line === undefined) return;
      // Lets a C_Login blocked by the rules return, so that the child can end.
      control.clear();
      child.kill('SIGTERM');
      resolve({ ...JSON.parse(line.slice('INIT '.length)), output });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the init phase ended with ${code} and no report:\n${output}`));
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
