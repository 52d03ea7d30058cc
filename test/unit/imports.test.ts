// Importing a module does nothing: no configuration read, no line printed, no HSM worker started,
// no audit chain begun. Only the four Lambda entry files act when loaded (they make their runtime
// in the init phase). Checked in a fresh process with no configuration in its environment.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { COUNT_WORKERS } from '../helpers/count-workers.ts';
import { ROOT } from '../helpers/proxy.ts';

const ACTING = new Set([
  'functions/getHealthStatus.ts',
  'functions/getKeyMetadata.ts',
  'functions/encrypt.ts',
  'functions/decrypt.ts',
  // The local server's program (npm start), not a module.
  'local/main.ts',
]);

/** Imports `files` in a fresh process; what it printed, and how many worker threads it started. */
function importAll(files: string[]): { status: number | null; stdout: string; stderr: string } {
  const script = [
    ...COUNT_WORKERS,
    `for (const file of ${JSON.stringify(files)}) await import(file);`,
    // Long enough for anything started in the background to print.
    'await new Promise((r) => setTimeout(r, 300));',
    "process.stdout.write('workers: ' + workers + '\\n');",
  ].join('\n');
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('XKS_')) env[name] = value;
  }
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: ROOT,
    env,
    encoding: 'utf8',
  });
}

test('every module of functions/ and local/ but the entry files imports without acting', () => {
  const files = execFileSync('git', ['ls-files', 'functions/', 'local/'], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => f.endsWith('.ts') && !ACTING.has(f));
  assert.ok(files.includes('functions/runtime.ts') && files.includes('functions/middleware.ts'));
  const run = importAll(files.map((f) => join(ROOT, f)));
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stderr, '');
  assert.equal(run.stdout, 'workers: 0\n');
});

test('the checks see what acting modules do', () => {
  // A module that starts an HSM worker is seen doing so.
  const worker = join(ROOT, 'layers/pkcs11/worker-hsm.ts');
  const starting = importAll([
    `data:text/javascript,import { WorkerHsm } from ${JSON.stringify(pathToFileURL(worker).href)}; new WorkerHsm({ pkcs11: { modulePath: '/nonexistent', pin: '' }, callTimeoutMs: 100, startTimeoutMs: 100 }).close();`,
  ]);
  assert.equal(starting.stdout, 'workers: 1\n', starting.stderr);
  // An entry file reads its configuration, which is missing here: its init fails, saying so.
  const entry = importAll([join(ROOT, 'functions/encrypt.ts')]);
  assert.notEqual(entry.status, 0);
  assert.match(entry.stderr, /set XKS_PROXY_CONFIG/);
});
