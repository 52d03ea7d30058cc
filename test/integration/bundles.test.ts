// The esbuild bundles, which are what deploys: each runs in a fresh Node process from a folder with
// nothing but itself, finding pkcs11js only where the Lambda layer puts it (NODE_PATH), and answers a
// signed request. What a cold start loads is one file, bounded (300 KiB); the Secrets Manager client
// is in a file of its own, loaded on demand; ajv's validators are compiled at build time.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import { isBuiltin } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { XksError } from '../../functions/errors.ts';
import { validatorFor } from '../../functions/schemas.ts';
import { buildHsmWorker } from '../../layers/build.ts';
import { type Bundle, buildFunctions, FUNCTIONS, SECRETS_FILE } from '../../scripts/build.ts';
import { importsOf } from '../helpers/bundle-imports.ts';
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

/** Runs a bundle's handler on one signed request in a fresh process; its result and output. */
async function runBundle(
  name: string,
  route: string,
  body: unknown,
  extra: { configFile?: string; env?: Record<string, string> } = {},
) {
  const event = await signedEvent({
    path: `${PREFIX}/kms/xks/v1/${route}`,
    body,
    credential: setup.credentials[0] as { accessKeyId: string; secretAccessKey: string },
  });
  const eventFile = join(work, `${name}.event.json`);
  writeFileSync(eventFile, JSON.stringify(event));
  const script = [
    `const { handler } = await import(${JSON.stringify(join(work, 'task', name, 'index.mjs'))});`,
    // Not `import('node:fs')`: its ES module wrapper would load fs/promises (the cold start's modules are checked).
    "const { readFileSync } = process.getBuiltinModule('node:fs');",
    `const event = JSON.parse(readFileSync(${JSON.stringify(eventFile)}, 'utf8'));`,
    "const context = { functionName: 'f', awsRequestId: 'r', getRemainingTimeInMillis: () => 3000 };",
    'const result = await handler(event, context);',
    "process.stderr.write('MODULES ' + JSON.stringify(process.moduleLoadList) + '\\n');",
    "process.stderr.write('RESULT ' + JSON.stringify(result) + '\\n');",
  ].join('\n');
  const { stderr, stdout } = await promisify(execFile)(
    process.execPath,
    ['--input-type=module', '-e', script],
    {
      cwd: work,
      env: {
        PATH: process.env.PATH,
        NODE_PATH: join(work, 'opt/nodejs/node_modules'),
        XKS_PROXY_CONFIG: extra.configFile ?? setup.configFile,
        XKS_HSM_WORKER: join(work, 'opt/nodejs/hsm-worker.mjs'),
        ...setup.env,
        ...extra.env,
      },
    },
  );
  const line = stderr.split('\n').find((l) => l.startsWith('RESULT '));
  assert.ok(line, stderr);
  const modules = stderr.split('\n').find((l) => l.startsWith('MODULES ')) ?? 'MODULES []';
  return {
    result: JSON.parse(line.slice(7)) as { statusCode: number; body: string },
    /** Node's internal modules loaded when the first response was made (process.moduleLoadList). */
    modules: JSON.parse(modules.slice(8)) as string[],
    output: stdout + stderr.replace(/^MODULES .*$/m, ''),
  };
}

for (const name of FUNCTIONS) {
  test(`${name}: the bundle answers a signed request in a fresh process`, async () => {
    const [route, body] = ROUTES[name];
    const { result, output } = await runBundle(name, route, body);
    assert.equal(result.statusCode, EXPECTED_STATUS[name], result.body);
    if (name === 'decrypt') assert.equal(JSON.parse(result.body).errorName, 'InvalidCiphertextException');
    assertNoLeaks(output, setup.secrets, []);
  });
}

test("a cold start loads none of Node's modules the function does not use", async () => {
  // On demand, as a Lambda environment made for a waiting request: the HSM worker starts after the
  // first response. Each of these costs a cold start milliseconds: node:http (the front door reads
  // status texts only), undici (node:http's lazy fetch), fs/promises and fs.Dir (node:fs's lazy
  // exports), WebCrypto (node:crypto's), the worker thread's module.
  const [route, body] = ROUTES.encrypt;
  const { result, modules } = await runBundle('encrypt', route, body, {
    env: { AWS_LAMBDA_FUNCTION_NAME: 'f', AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand' },
  });
  assert.equal(result.statusCode, 200, result.body);
  assert.ok(modules.includes('NativeModule crypto'), 'the list is the real one');
  const unused = [
    'NativeModule http',
    'NativeModule internal/deps/undici/undici',
    'NativeModule internal/fs/promises',
    'NativeModule internal/fs/dir',
    'NativeModule internal/crypto/webcrypto',
    'NativeModule readline',
    'NativeModule worker_threads',
  ];
  assert.deepEqual(
    modules.filter((m) => unused.includes(m)),
    [],
  );
});

test('the validators compiled at build time refuse what ajv refuses at run time, with the same message', async () => {
  const [route, valid] = ROUTES.encrypt;
  const body = { ...(valid as Record<string, unknown>), encryptionAlgorithm: 'AES_GCM_256' };
  let expected = '';
  try {
    validatorFor('Encrypt')(body);
  } catch (err) {
    assert.ok(err instanceof XksError);
    expected = err.message;
  }
  assert.ok(expected.length > 0, 'the source refuses the body');
  const { result } = await runBundle('encrypt', route, body);
  assert.equal(result.statusCode, 400, result.body);
  assert.deepEqual(JSON.parse(result.body), { errorName: 'ValidationException', errorMessage: expected });
});

test("with the PIN and the credentials in Secrets Manager, the bundle loads the SDK's file and answers", async () => {
  // A local stand-in for Secrets Manager's GetSecretValue (JSON 1.1 protocol), reached through the
  // SDK's standard endpoint override: the file with the SDK client must load from the bundle folder.
  const secrets: Record<string, string> = {
    'arn:aws:secretsmanager:us-east-1:123456789012:secret:xks-pin': JSON.stringify({
      pin: setup.config.hsm.pin,
    }),
    'arn:aws:secretsmanager:us-east-1:123456789012:secret:xks-credentials': JSON.stringify({
      credentials: setup.config.keystores[0]?.credentials,
    }),
  };
  const asked: string[] = [];
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => {
      text += d.toString();
    });
    req.on('end', () => {
      const id = (JSON.parse(text) as { SecretId: string }).SecretId;
      asked.push(`${req.headers['x-amz-target']} ${id}`);
      const value = secrets[id];
      res.writeHead(value === undefined ? 400 : 200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(
        JSON.stringify(
          value === undefined
            ? { __type: 'ResourceNotFoundException', message: 'no such secret' }
            : { ARN: id, Name: id.split(':').pop(), SecretString: value, VersionId: 'v1' },
        ),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const config = structuredClone(setup.config);
    delete config.hsm.pin;
    config.hsm.pinSecretArn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:xks-pin';
    const keystore = config.keystores[0] as (typeof config.keystores)[number];
    delete keystore.credentials;
    keystore.credentialsSecretArn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:xks-credentials';
    const configFile = join(work, 'secrets-config.json');
    writeFileSync(configFile, JSON.stringify(config));
    const [route, body] = ROUTES.encrypt;
    const { result, output } = await runBundle('encrypt', route, body, {
      configFile,
      env: {
        AWS_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: 'AKIDEXAMPLEEXAMPLE12',
        AWS_SECRET_ACCESS_KEY: 'not-a-real-secret-access-key-for-the-test',
        AWS_ENDPOINT_URL_SECRETS_MANAGER: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      },
    });
    assert.equal(result.statusCode, 200, result.body);
    assert.deepEqual(asked.sort(), [
      'secretsmanager.GetSecretValue arn:aws:secretsmanager:us-east-1:123456789012:secret:xks-credentials',
      'secretsmanager.GetSecretValue arn:aws:secretsmanager:us-east-1:123456789012:secret:xks-pin',
    ]);
    assertNoLeaks(output, setup.secrets, []);
  } finally {
    server.close();
  }
});

test('what a cold start loads is one file under 300 KiB; the AWS SDK only in the file loaded on demand; no ajv compiler', () => {
  // The lockfile marks every package only the development tree needs with "dev": true.
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
  const devOnly = Object.entries(lock.packages as Record<string, { dev?: boolean }>)
    .filter(([path, info]) => path.startsWith('node_modules/') && info.dev === true)
    .map(([path]) => path.slice('node_modules/'.length))
    .filter((name) => !name.includes('/node_modules/'));
  assert.ok(devOnly.includes('esbuild') && devOnly.includes('aws4'), 'the dev-only list is the real one');
  // node_modules/<package>/..., or @scope/<package>: what follows the last node_modules/.
  const packageOf = (input: string) => {
    const at = input.lastIndexOf('node_modules/');
    if (at < 0) return undefined;
    const parts = input.slice(at + 'node_modules/'.length).split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  };
  const packagesOf = (inputs: string[]) =>
    new Set(inputs.map(packageOf).filter((p): p is string => p !== undefined));
  for (const [name, bundle] of Object.entries(bundles)) {
    assert.deepEqual(readdirSync(join(work, 'task', name)).sort(), [
      'index.mjs',
      'index.mjs.map',
      SECRETS_FILE,
      `${SECRETS_FILE}.map`,
    ]);
    // Each further ES module would cost the cold start a load in Node's module loader.
    const { statements, dynamic } = importsOf(readFileSync(bundle.file, 'utf8'));
    const own = (specifier: string) => specifier.startsWith('.');
    assert.deepEqual(statements.filter(own), [], `${name} imports another file of its own`);
    assert.deepEqual(dynamic.filter(own), [`./${SECRETS_FILE}`], name);
    assert.ok(bundle.bytes < 300 * 1024, `${name}: ${bundle.bytes} bytes at cold start`);
    assert.ok(bundle.bytes + bundle.lazyBytes < 700_000, `${name}: ${bundle.lazyBytes} bytes on demand`);
    const eager = packagesOf(bundle.inputs);
    const lazy = packagesOf(bundle.lazyInputs);
    assert.ok(eager.has('@middy/core'), `${name}: ${[...eager]}`);
    assert.ok(lazy.has('@aws-sdk/client-secrets-manager'), `${name}: the Secrets Manager client is bundled`);
    assert.ok(
      ![...eager].some((p) => p.startsWith('@aws-sdk/') || p.startsWith('@smithy/')),
      `${name} loads the AWS SDK at cold start: ${[...eager]}`,
    );
    // Only ajv's small runtime helpers, which the precompiled validators call.
    assert.ok(
      bundle.inputs.every(
        (i) => !i.startsWith('node_modules/ajv/') || i.startsWith('node_modules/ajv/dist/runtime/'),
      ),
      `${name} bundles ajv's compiler`,
    );
    for (const dev of [...devOnly]) {
      assert.ok(!eager.has(dev) && !lazy.has(dev), `${name} bundles the dev dependency ${dev}`);
    }
    assert.ok(!eager.has('pkcs11js') && !lazy.has('pkcs11js'), 'pkcs11js ships in the layer');
    assert.ok(
      ![...bundle.inputs, ...bundle.lazyInputs].some((i) => i.startsWith('test/')),
      `${name} bundles test code`,
    );
  }
});

test("the bundles load Node's built-ins with require(), never with an import statement", () => {
  // Node answers `import ... from 'node:http'` with a module that copies every export, loading the
  // lazy ones: node:http's load undici, tens of ms at cold start (scripts/build.ts builtinsByRequire).
  // The banner's `import { createRequire } from 'node:module'` is what require() is made of.
  const banner = "import { createRequire as __cr } from 'node:module';";
  for (const name of FUNCTIONS) {
    const dir = join(work, 'task', name);
    const files = readdirSync(dir).filter((f) => f.endsWith('.mjs'));
    assert.ok(files.includes('index.mjs'), `${name}: ${files}`);
    for (const file of files) {
      const code = readFileSync(join(dir, file), 'utf8');
      assert.ok(code.startsWith(banner), `${name}/${file} starts with the banner`);
      const imported = importsOf(code.slice(banner.length)).statements.filter((s) => isBuiltin(s));
      assert.deepEqual(imported, [], `${name}/${file} imports built-ins as ES modules`);
    }
  }
});
