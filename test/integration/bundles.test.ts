// The esbuild bundles, which are what deploys: each runs in a fresh Node process from a folder with
// nothing but itself, finding pkcs11js only where the Lambda layer puts it (NODE_PATH), and answers a
// signed request. Their size is bounded.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { buildHsmWorker } from '../../layers/build.ts';
import { type Bundle, buildFunctions, FUNCTIONS } from '../../scripts/build.ts';
import { signedEvent } from '../helpers/events.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { createTestSetup, metadata, PREFIX, ROOT, type TestSetup } from '../helpers/proxy.ts';

let setup: TestSetup;
let work: string;
let bundles: Record<string, Bundle>;

before(async () => {
  setup = createTestSetup();
  work = mkdtempSync(join(tmpdir(), 'xks-bundles-'));
  bundles = await buildFunctions(join(work, 'task'));
  // The layer's layout: /opt/nodejs/node_modules/pkcs11js.
  mkdirSync(join(work, 'opt/nodejs/node_modules'), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules/pkcs11js'), join(work, 'opt/nodejs/node_modules/pkcs11js'));
  // The HSM worker thread's code, bundled as the layer ships it.
  await buildHsmWorker(join(work, 'opt/nodejs/hsm-worker.mjs'));
});
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(setup.dir, { recursive: true, force: true });
});

const ROUTES: Record<(typeof FUNCTIONS)[number], [string, unknown]> = {
  getHealthStatus: ['health', { requestMetadata: { kmsRequestId: 'b-1', kmsOperation: 'KmsHealthCheck' } }],
  getKeyMetadata: ['keys/foo/metadata', { requestMetadata: metadata('CreateKey') }],
  encrypt: [
    'keys/foo/encrypt',
    { requestMetadata: metadata('Encrypt'), plaintext: 'SGVsbG8gV29ybGQh', encryptionAlgorithm: 'AES_GCM' },
  ],
  decrypt: [
    'keys/foo/decrypt',
    {
      requestMetadata: metadata('Decrypt'),
      ciphertext: 'ghxkK1txeDNn3q8Y',
      encryptionAlgorithm: 'AES_GCM',
      initializationVector: 'HMrlRw85cAJUd5Ax',
      authenticationTag: 'vBxN2ncH1oEkR8WVXpmyYQ==',
    },
  ],
};
const EXPECTED_STATUS = { getHealthStatus: 200, getKeyMetadata: 200, encrypt: 200, decrypt: 400 };

for (const name of FUNCTIONS) {
  test(`${name}: the bundle answers a signed request in a fresh process`, async () => {
    const [route, body] = ROUTES[name];
    const event = await signedEvent({
      path: `${PREFIX}/kms/xks/v1/${route}`,
      body,
      credential: setup.credentials[0] as { accessKeyId: string; secretAccessKey: string },
    });
    const eventFile = join(work, `${name}.event.json`);
    writeFileSync(eventFile, JSON.stringify(event));
    const script = [
      `const { handler } = await import(${JSON.stringify(join(work, 'task', name, 'index.mjs'))});`,
      "const { readFileSync } = await import('node:fs');",
      `const event = JSON.parse(readFileSync(${JSON.stringify(eventFile)}, 'utf8'));`,
      "const context = { functionName: 'f', awsRequestId: 'r', getRemainingTimeInMillis: () => 3000 };",
      "process.stderr.write('RESULT ' + JSON.stringify(await handler(event, context)) + '\\n');",
    ].join('\n');
    const { stderr, stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', script],
      {
        cwd: work,
        env: {
          PATH: process.env.PATH,
          NODE_PATH: join(work, 'opt/nodejs/node_modules'),
          XKS_PROXY_CONFIG: setup.configFile,
          XKS_HSM_WORKER: join(work, 'opt/nodejs/hsm-worker.mjs'),
          SOFTHSM2_CONF: setup.softhsmConf,
        },
      },
    );
    const line = stderr.split('\n').find((l) => l.startsWith('RESULT '));
    assert.ok(line, stderr);
    const result = JSON.parse(line.slice(7));
    assert.equal(result.statusCode, EXPECTED_STATUS[name], result.body);
    if (name === 'decrypt') assert.equal(JSON.parse(result.body).errorName, 'InvalidCiphertextException');
    assertNoLeaks(stdout + stderr, setup.secrets, []);
  });
}

test('each bundle is under 700 KB (the Secrets Manager client included) and holds production dependencies only', () => {
  // The lockfile marks every package only the development tree needs with "dev": true.
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
  const devOnly = Object.entries(lock.packages as Record<string, { dev?: boolean }>)
    .filter(([path, info]) => path.startsWith('node_modules/') && info.dev === true)
    .map(([path]) => path.slice('node_modules/'.length))
    .filter((name) => !name.includes('/node_modules/'));
  assert.ok(devOnly.includes('esbuild') && devOnly.includes('aws4'), 'the dev-only list is the real one');
  for (const [name, bundle] of Object.entries(bundles)) {
    assert.ok(bundle.bytes < 700_000, `${name}: ${bundle.bytes} bytes`);
    const packages = new Set(
      bundle.inputs
        .filter((i) => i.startsWith('node_modules/'))
        .map((i) =>
          i
            .split('/')
            .slice(1, i.split('/')[1]?.startsWith('@') ? 3 : 2)
            .join('/'),
        ),
    );
    assert.ok(packages.has('@middy/core') && packages.has('ajv'), `${name}: ${[...packages]}`);
    for (const dev of devOnly) assert.ok(!packages.has(dev), `${name} bundles the dev dependency ${dev}`);
    assert.ok(!packages.has('pkcs11js'), 'pkcs11js ships in the layer');
    assert.ok(!bundle.inputs.some((i) => i.startsWith('test/')), `${name} bundles test code`);
  }
});
