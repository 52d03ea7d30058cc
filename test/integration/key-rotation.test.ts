// Key rotation end to end: the real local proxy on the test HSM (SoftHSM, or NSS softoken), and
// `xks-proxy keys` run as a child process beside it (the operator's view). The proxy encrypts with the newest version and names it
// in the ciphertextMetadata, which the AAD covers (spec: Encrypt, ciphertextMetadata: "an external
// key manager may implement automatic key rotation and use the extra bytes to encode versioning");
// every version keeps decrypting what it made; metadata naming another or a missing version is
// InvalidCiphertextException (spec: Decrypt; Error codes). Then the CLI's refusals, none of which
// (nor anything else it prints) may show the PIN.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type * as pkcs11 from 'pkcs11js';
import { keysMain } from '../../bin/keys.ts';
import { initialize } from '../../layers/pkcs11/session.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { HSM_FACTS, metadata, ROOT, type RunningProxy, startProxy } from '../helpers/proxy.ts';

const P: typeof import('pkcs11js') = createRequire(import.meta.url)('pkcs11js');
const CLI = join(ROOT, 'bin', 'xks-proxy.ts');
const TOKEN = 'xks-test';
/** Keys `keys create` makes: label, --usage, and the keyUsage GetKeyMetadata then reports. */
const NEW_KEYS: Array<[string, string, string[]]> = [
  ['new_both', 'encrypt,decrypt', ['ENCRYPT', 'DECRYPT']],
  ['new_encrypt', 'encrypt', ['ENCRYPT']],
  ['new_decrypt', 'decrypt', ['DECRYPT']],
  ['new_none', 'none', []],
];

let proxy: RunningProxy;
const sensitive: Buffer[] = [];

before(async () => {
  proxy = await startProxy({
    configure(config) {
      // A new version is seen by the next request (the default cache would hide it for 60 s).
      config.hsm.keyCacheSeconds = 0;
      config.keystores[0]?.keys.push('fresh', 'dup', 'stale', ...NEW_KEYS.map(([key]) => key));
    },
  });
});
after(async () => {
  await proxy?.stop();
});

/** This proxy's ciphertextMetadata, written out here from its definition (0x01; 0x02 || uint32 BE). */
function versionMetadata(version: number): string {
  if (version === 1) return 'AQ==';
  const out = Buffer.alloc(5);
  out[0] = 0x02;
  out.writeUInt32BE(version, 1);
  return out.toString('base64');
}

function secretBytes(n: number): Buffer {
  const bytes = randomBytes(n);
  sensitive.push(bytes);
  return bytes;
}

interface Encrypted {
  plaintext: Buffer;
  aad: Buffer;
  fields: Record<string, string>;
}

async function encrypt(key = 'foo'): Promise<Encrypted> {
  const plaintext = secretBytes(32);
  const aad = secretBytes(24);
  const res = await proxy.xks(`keys/${key}/encrypt`, {
    requestMetadata: metadata('Encrypt'),
    plaintext: plaintext.toString('base64'),
    additionalAuthenticatedData: aad.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  });
  assert.equal(res.status, 200, res.text);
  return { plaintext, aad, fields: res.json };
}

async function decrypt(e: Encrypted, change: Record<string, string | undefined> = {}, key = 'foo') {
  const body: Record<string, unknown> = {
    requestMetadata: metadata('Decrypt'),
    encryptionAlgorithm: 'AES_GCM',
    ciphertext: e.fields.ciphertext,
    ciphertextMetadata: e.fields.ciphertextMetadata,
    initializationVector: e.fields.initializationVector,
    authenticationTag: e.fields.authenticationTag,
    additionalAuthenticatedData: e.aad.toString('base64'),
    ...change,
  };
  return proxy.xks(`keys/${key}/decrypt`, JSON.parse(JSON.stringify(body)));
}

async function assertDecrypts(e: Encrypted, what: string) {
  const res = await decrypt(e);
  assert.equal(res.status, 200, `${what}: ${res.text}`);
  assert.ok(Buffer.from(res.json.plaintext, 'base64').equals(e.plaintext), `${what}: wrong plaintext`);
}

async function assertError(
  res: { status: number; json: { errorName?: string }; text: string },
  name: string,
) {
  assert.equal(res.status, 400, res.text);
  assert.equal(res.json.errorName, name, res.text);
}

async function keyMetadata(key = 'foo') {
  return proxy.xks(`keys/${key}/metadata`, { requestMetadata: metadata('DescribeKey') });
}

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `xks-proxy keys ...` as the operator would, the PIN in XKS_HSM_PIN (unless `env` says
 * otherwise), and checks that the PIN is nowhere in what it printed.
 */
function keys(args: string[], env: Record<string, string | undefined> = {}): CliResult {
  const childEnv: Record<string, string | undefined> = {
    ...process.env,
    ...proxy.env,
    XKS_HSM_PIN: proxy.pin,
    ...env,
  };
  for (const [name, value] of Object.entries(childEnv)) if (value === undefined) delete childEnv[name];
  const run = spawnSync(process.execPath, [CLI, 'keys', ...args], { env: childEnv, encoding: 'utf8' });
  const result = { status: run.status, stdout: run.stdout, stderr: run.stderr };
  for (const secret of proxy.secrets) {
    assert.ok(!`${result.stdout}${result.stderr}`.includes(secret), 'the CLI printed the PIN or a secret');
  }
  return result;
}

/** The same in this process (keysMain): quicker, for the refusals that need no process of their own. */
async function keysHere(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  Object.assign(process.env, proxy.env);
  const out: string[] = [];
  const err: string[] = [];
  const status = await keysMain(
    args,
    { out: (line) => out.push(`${line}\n`), err: (line) => err.push(`${line}\n`) },
    { XKS_HSM_PIN: proxy.pin, ...env },
  );
  const result = { status, stdout: out.join(''), stderr: err.join('') };
  for (const secret of proxy.secrets) {
    assert.ok(!`${result.stdout}${result.stderr}`.includes(secret), 'the CLI printed the PIN or a secret');
  }
  return result;
}

function connection(): string[] {
  const parameters = proxy.config.hsm.libraryParameters;
  return [
    '--module',
    proxy.config.hsm.modulePath,
    ...(parameters === undefined ? [] : ['--library-parameters', parameters]),
    '--token',
    TOKEN,
  ];
}

describe('rotation through the proxy', () => {
  const made: Encrypted[] = [];

  test('version 1: Encrypt names it with ciphertextMetadata 0x01', async () => {
    const e = await encrypt();
    assert.equal(e.fields.ciphertextMetadata, 'AQ==');
    made[1] = e;
    await assertDecrypts(e, 'v1');
    const listed = keys(['list-versions', ...connection(), '--key', 'foo', '--json']);
    assert.equal(listed.status, 0, listed.stderr);
    const json = JSON.parse(listed.stdout);
    assert.deepEqual(
      json.versions.map((v: { version: number; current: boolean }) => [v.version, v.current]),
      [[1, true]],
    );
  });

  test('create-version makes version 2; the next Encrypt uses it', async () => {
    const run = keys(['create-version', ...connection(), '--key', 'foo']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^Created version 2 of key 'foo' in token 'xks-test':$/m);
    assert.match(run.stdout, /^ {2}CKA_ID +xks-v2:foo$/m);
    assert.match(run.stdout, /^ {2}key spec +AES_256$/m);
    assert.match(run.stdout, /^ {2}usage +ENCRYPT, DECRYPT$/m);
    assert.match(run.stdout, /^ {2}sensitive +true$/m);
    assert.match(run.stdout, /^ {2}extractable +false$/m);
    assert.match(run.stdout, new RegExp(`^ {2}generated in HSM +${HSM_FACTS[proxy.hsm].local}$`, 'm'));

    const e = await encrypt();
    assert.equal(e.fields.ciphertextMetadata, versionMetadata(2));
    assert.equal(e.fields.ciphertextMetadata, 'AgAAAAI=');
    made[2] = e;
    const meta = await keyMetadata();
    assert.equal(meta.status, 200, meta.text);
    assert.deepEqual(meta.json, {
      keySpec: 'AES_256',
      keyUsage: ['ENCRYPT', 'DECRYPT'],
      keyStatus: 'ENABLED',
    });
  });

  test('both versions decrypt their own ciphertexts', async () => {
    await assertDecrypts(made[1] as Encrypted, 'v1 after rotation');
    await assertDecrypts(made[2] as Encrypted, 'v2');
  });

  test('metadata naming the other version is InvalidCiphertextException (the versions are different keys)', async () => {
    const v1 = made[1] as Encrypted;
    const v2 = made[2] as Encrypted;
    await assertError(
      await decrypt(v1, { ciphertextMetadata: versionMetadata(2) }),
      'InvalidCiphertextException',
    );
    await assertError(
      await decrypt(v2, { ciphertextMetadata: versionMetadata(1) }),
      'InvalidCiphertextException',
    );
    await assertError(await decrypt(v2, { ciphertextMetadata: undefined }), 'InvalidCiphertextException');
  });

  test('metadata naming a version the HSM does not have, or not of this proxy, is InvalidCiphertextException', async () => {
    const v2 = made[2] as Encrypted;
    for (const bad of [
      versionMetadata(3), // the next version, not made yet
      versionMetadata(99),
      versionMetadata(0xffffffff),
      Buffer.from([0x02, 0, 0, 0, 1]).toString('base64'), // version 1 is 0x01 alone
      Buffer.from([0x02, 0, 0, 0, 0]).toString('base64'),
      Buffer.from([0x02, 0, 0, 2]).toString('base64'), // truncated
      Buffer.from([0x02, 0, 0, 0, 2, 0]).toString('base64'), // one byte too many
      Buffer.from([0x03, 0, 0, 0, 2]).toString('base64'),
    ]) {
      await assertError(await decrypt(v2, { ciphertextMetadata: bad }), 'InvalidCiphertextException');
    }
  });

  test('a decrypt-only version 3: the current version is the key: no Encrypt, every older version still decrypts', async () => {
    const run = keys(['create-version', ...connection(), '--key', 'foo', '--usage', 'decrypt']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^Created version 3 of key 'foo'/m);
    assert.match(run.stdout, /^ {2}usage +DECRYPT$/m);
    assert.match(run.stderr, /cannot encrypt: Encrypt fails with InvalidKeyUsageException/);

    // GetKeyMetadata describes the current version (spec: GetKeyMetadata keyUsage), and Encrypt
    // agrees with it: 400 InvalidKeyUsageException (spec: Error codes), not a fallback to v2.
    const meta = await keyMetadata();
    assert.equal(meta.status, 200, meta.text);
    assert.deepEqual(meta.json, { keySpec: 'AES_256', keyUsage: ['DECRYPT'], keyStatus: 'ENABLED' });
    const res = await proxy.xks('keys/foo/encrypt', {
      requestMetadata: metadata('Encrypt'),
      plaintext: secretBytes(16).toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
    });
    await assertError(res, 'InvalidKeyUsageException');
    await assertDecrypts(made[1] as Encrypted, 'v1 with a decrypt-only v3');
    await assertDecrypts(made[2] as Encrypted, 'v2 with a decrypt-only v3');
  });

  test('version 4 encrypts again; ciphertexts of every version decrypt', async () => {
    const run = keys(['create-version', ...connection(), '--key', 'foo', '--usage', 'encrypt,decrypt']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^Created version 4 of key 'foo'/m);
    const e = await encrypt();
    assert.equal(e.fields.ciphertextMetadata, versionMetadata(4));
    made[4] = e;
    for (const version of [1, 2, 4]) await assertDecrypts(made[version] as Encrypted, `v${version}`);
    // v4 ciphertext named as v3 (which exists, and decrypts): a different key, the tag fails.
    await assertError(
      await decrypt(e, { ciphertextMetadata: versionMetadata(3) }),
      'InvalidCiphertextException',
    );
  });

  test('list-versions shows every version, its usage and the current one', () => {
    const run = keys(['list-versions', ...connection(), '--key', 'foo']);
    assert.equal(run.status, 0, run.stderr);
    const lines = run.stdout.trimEnd().split('\n');
    assert.equal(lines[0], "Key 'foo' in token 'xks-test': 4 versions");
    assert.match(lines[1] ?? '', /^VERSION +CKA_ID +KEY SPEC +USAGE +SENSITIVE +EXTRACTABLE +CURRENT$/);
    assert.match(lines[2] ?? '', /^1 +- +AES_256 +ENCRYPT,DECRYPT +true +false$/);
    assert.match(lines[3] ?? '', /^2 +xks-v2:foo +AES_256 +ENCRYPT,DECRYPT +true +false$/);
    assert.match(lines[4] ?? '', /^3 +xks-v3:foo +AES_256 +DECRYPT +true +false$/);
    assert.match(lines[5] ?? '', /^4 +xks-v4:foo +AES_256 +ENCRYPT,DECRYPT +true +false +yes$/);
    assert.equal(lines.length, 6);

    const json = JSON.parse(keys(['list-versions', ...connection(), '--key', 'foo', '--json']).stdout);
    assert.equal(json.current, 4);
    assert.deepEqual(json.ambiguous, []);
    assert.deepEqual(
      json.versions.map((v: { version: number; id: string | null; usage: string[]; current: boolean }) => [
        v.version,
        v.id,
        v.usage.join(','),
        v.current,
      ]),
      [
        [1, null, 'ENCRYPT,DECRYPT', false],
        [2, 'xks-v2:foo', 'ENCRYPT,DECRYPT', false],
        [3, 'xks-v3:foo', 'DECRYPT', false],
        [4, 'xks-v4:foo', 'ENCRYPT,DECRYPT', true],
      ],
    );
    for (const v of json.versions) {
      assert.equal(v.sensitive, true);
      assert.equal(v.extractable, false);
      assert.equal(v.neverExtractable, true);
      assert.ok(!('value' in v), 'no key material');
    }
  });

  test('--config: the connection and PIN from the proxy configuration file', () => {
    const run = keys(['list-versions', '--config', join(proxy.dir, 'config.json'), '--key', 'foo'], {
      XKS_HSM_PIN: undefined,
    });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^Key 'foo' in token 'xks-test': 4 versions$/m);
    // The PIN variable overrides the file's pin, as in the proxy: a wrong one is refused.
    const wrong = keys(['list-versions', '--config', join(proxy.dir, 'config.json'), '--key', 'foo'], {
      XKS_HSM_PIN: 'wrong-pin-123',
    });
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /the token refused the PIN \(CKR_PIN_INCORRECT\)/);
    assert.ok(!wrong.stderr.includes('wrong-pin-123'));
  });
});

/** A logged-in session on the proxy's token in this process, to set up states the CLI must refuse. */
function withToken<T>(fn: (lib: pkcs11.PKCS11, session: Buffer) => T): T {
  Object.assign(process.env, proxy.env);
  const lib = new P.PKCS11();
  lib.load(proxy.config.hsm.modulePath);
  initialize(lib, proxy.config.hsm.libraryParameters);
  try {
    const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === TOKEN);
    assert.ok(slot, 'the proxy token');
    const session = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
    lib.C_Login(session, P.CKU_USER, proxy.pin);
    return fn(lib, session);
  } finally {
    lib.C_Finalize();
  }
}

function generate(lib: pkcs11.PKCS11, session: Buffer, label: string, id?: string): void {
  lib.C_GenerateKey(session, { mechanism: P.CKM_AES_KEY_GEN }, [
    { type: P.CKA_CLASS, value: P.CKO_SECRET_KEY },
    { type: P.CKA_KEY_TYPE, value: P.CKK_AES },
    { type: P.CKA_VALUE_LEN, value: 32 },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    { type: P.CKA_SENSITIVE, value: true },
    { type: P.CKA_EXTRACTABLE, value: false },
    { type: P.CKA_LABEL, value: label },
    { type: P.CKA_ENCRYPT, value: true },
    { type: P.CKA_DECRYPT, value: true },
    ...(id === undefined ? [] : [{ type: P.CKA_ID, value: Buffer.from(id) }]),
  ]);
}

describe('the CLI refuses', () => {
  test('a key that does not exist, unless --allow-new (then version 1, which the proxy serves)', async () => {
    assert.equal((await keyMetadata('fresh')).status, 404);
    const refused = await keysHere(['create-version', ...connection(), '--key', 'fresh']);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /has no secret key labelled 'fresh': --allow-new creates its version 1/);
    assert.equal((await keysHere(['list-versions', ...connection(), '--key', 'fresh'])).status, 1);

    const made = await keysHere(['create-version', ...connection(), '--key', 'fresh', '--allow-new']);
    assert.equal(made.status, 0, made.stderr);
    assert.match(made.stdout, /^Created version 1 of key 'fresh'/m);
    assert.match(made.stdout, /^ {2}CKA_ID +\(none\)$/m);
    const meta = await keyMetadata('fresh');
    assert.equal(meta.status, 200, meta.text);
    assert.deepEqual(meta.json.keyUsage, ['ENCRYPT', 'DECRYPT']);
    const e = await encrypt('fresh');
    assert.equal(e.fields.ciphertextMetadata, 'AQ==');
  });

  test('two objects claiming one version (and so does the proxy)', async () => {
    withToken((lib, session) => {
      generate(lib, session, 'dup');
      // Two ids: NSS keeps one secret key per CKA_ID, so one id twice would be one object there.
      generate(lib, session, 'dup', 'xks-v2');
      generate(lib, session, 'dup', 'xks-v2:dup');
    });
    const listed = await keysHere(['list-versions', ...connection(), '--key', 'dup']);
    assert.equal(listed.status, 1);
    assert.equal(listed.stdout.trimEnd().split('\n').length, 5, 'every object listed');
    assert.match(listed.stderr, /more than one object of 'dup' claims version 2/);
    const refused = await keysHere(['create-version', ...connection(), '--key', 'dup']);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /claims version 2: the proxy refuses this key/);
    const again = await keysHere(['list-versions', ...connection(), '--key', 'dup']);
    assert.equal(again.stdout, listed.stdout, 'nothing made');
    const meta = await keyMetadata('dup');
    assert.equal(meta.status, 500, meta.text);
  });

  test('a version beyond what the proxy looks at (MAX_VERSIONS = 64)', async () => {
    withToken((lib, session) => {
      generate(lib, session, 'many');
      for (let v = 2; v <= 63; v++) generate(lib, session, 'many', `xks-v${v}:many`);
    });
    const last = await keysHere(['create-version', ...connection(), '--key', 'many']);
    assert.equal(last.status, 0, last.stderr);
    assert.match(last.stdout, /^Created version 64 of key 'many'/m);
    const refused = await keysHere(['create-version', ...connection(), '--key', 'many']);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /'many' has 64 versions: the proxy looks at 64 at most/);
    const json = JSON.parse(
      (await keysHere(['list-versions', ...connection(), '--key', 'many', '--json'])).stdout,
    );
    assert.equal(json.versions.length, 64);
    assert.equal(json.current, 64);
  });

  test('an encrypt-only version, an empty or unknown usage', async () => {
    for (const usage of ['encrypt', '', 'sign', 'encrypt,wrap']) {
      const run = await keysHere(['create-version', ...connection(), '--key', 'foo', '--usage', usage]);
      assert.equal(run.status, 2, `--usage '${usage}': ${run.stderr}`);
    }
    const encryptOnly = await keysHere([
      'create-version',
      ...connection(),
      '--key',
      'foo',
      '--usage',
      'encrypt',
    ]);
    assert.match(encryptOnly.stderr, /encrypts but cannot decrypt/);
    assert.equal(
      JSON.parse((await keysHere(['list-versions', ...connection(), '--key', 'foo', '--json'])).stdout)
        .current,
      4,
    );
  });

  test('a PIN on the command line, without repeating it', () => {
    const named = keys(['list-versions', ...connection(), '--key', 'foo', '--pin', proxy.pin]);
    assert.equal(named.status, 2);
    assert.match(named.stderr, /--pin is not an option/);
    for (const args of [
      [`--pin=${proxy.pin}`],
      [proxy.pin], // a stray positional: Node's parser would quote it
      ['--pin-env', proxy.pin], // the PIN where a variable name goes
    ]) {
      const run = keys(['list-versions', ...connection(), '--key', 'foo', ...args]);
      assert.notEqual(run.status, 0, `${args.length} argument(s) accepted`);
      assert.equal(run.stdout, '');
      // keys() already checked that the PIN is not in the output.
    }
  });

  test('no PIN, a wrong PIN, a missing token, a bad key id', async () => {
    const none = await keysHere(['list-versions', ...connection(), '--key', 'foo'], {
      XKS_HSM_PIN: undefined,
    });
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no PIN: XKS_HSM_PIN is not set/);
    const other = await keysHere(['list-versions', ...connection(), '--key', 'foo', '--pin-env', 'MY_PIN'], {
      MY_PIN: proxy.pin,
      XKS_HSM_PIN: undefined,
    });
    assert.equal(other.status, 0, other.stderr);
    const wrong = await keysHere(['create-version', ...connection(), '--key', 'foo'], {
      XKS_HSM_PIN: 'not-the-pin-42',
    });
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /the token refused the PIN/);
    assert.ok(!wrong.stderr.includes('not-the-pin-42'));
    const token = await keysHere(['list-versions', ...connection().slice(0, -1), 'nope', '--key', 'foo']);
    assert.equal(token.status, 1);
    assert.match(token.stderr, /no token labelled 'nope' is present/);
    const id = await keysHere(['list-versions', ...connection(), '--key', 'no/slash']);
    assert.equal(id.status, 2);
    assert.equal(
      JSON.parse((await keysHere(['list-versions', ...connection(), '--key', 'foo', '--json'])).stdout)
        .current,
      4,
    );
  });

  test('usage text: xks-proxy lists the keys commands', () => {
    const run = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    assert.equal(run.status, 0);
    assert.match(run.stdout, /keys create-version/);
    assert.match(run.stdout, /keys list-versions/);
    const help = keys(['create-version', '--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /There is no --pin/);
  });
});

describe('new keys: keys create (any usage) and keys create-test-keys', () => {
  test('keys create makes a key with exactly the usage asked for, none included; the proxy serves it so', async () => {
    for (const [key, usage, keyUsage] of NEW_KEYS) {
      const run = await keysHere(['create', ...connection(), '--key', key, '--usage', usage, '--json']);
      assert.equal(run.status, 0, run.stderr);
      const { created, token } = JSON.parse(run.stdout);
      assert.equal(token, TOKEN);
      assert.deepEqual(created.usage, keyUsage, key);
      assert.equal(created.version, 1);
      assert.equal(created.id, null);
      assert.equal(created.keySpec, 'AES_256');
      assert.equal(created.sensitive, true);
      assert.equal(created.extractable, false);
      assert.equal(created.local, HSM_FACTS[proxy.hsm].local, 'CKA_LOCAL');
      const meta = await keyMetadata(key);
      assert.equal(meta.status, 200, meta.text);
      assert.deepEqual(meta.json, { keySpec: 'AES_256', keyUsage, keyStatus: 'ENABLED' });
    }
    // What each can do, as the proxy (and behind it the HSM) allows it.
    const e = await encrypt('new_encrypt');
    await assertError(await decrypt(e, {}, 'new_encrypt'), 'InvalidKeyUsageException');
    const both = await encrypt('new_both');
    await assertError(await decrypt(both, {}, 'new_none'), 'InvalidKeyUsageException');
    assert.equal((await decrypt(both, {}, 'new_decrypt')).json.errorName, 'InvalidCiphertextException');
  });

  test('keys create refuses a label the token has, and an unknown usage', async () => {
    const again = await keysHere(['create', ...connection(), '--key', 'new_both']);
    assert.equal(again.status, 1);
    assert.match(
      again.stderr,
      /already has a secret key labelled 'new_both': create-version makes its next version/,
    );
    for (const usage of ['sign', 'encrypt,none', 'encrypt,wrap']) {
      const run = await keysHere(['create', ...connection(), '--key', 'never_made', '--usage', usage]);
      assert.equal(run.status, 2, `--usage '${usage}': ${run.stderr}`);
    }
    assert.equal((await keysHere(['list-versions', ...connection(), '--key', 'never_made'])).status, 1);
  });

  test('keys create-test-keys keeps the keys there, makes the missing ones, and refuses one with another usage', async () => {
    // The operator's view: a child process, the health-check key named on the command line.
    const run = keys(['create-test-keys', ...connection(), '--health-check-key', 'other-health-check']);
    assert.equal(run.status, 0, run.stderr);
    const lines = run.stdout.trimEnd().split('\n');
    assert.equal(lines[0], "The XKS test client's keys in token 'xks-test':");
    assert.match(lines[1] ?? '', /^ {2}foo +AES_256 ENCRYPT,DECRYPT +already there$/);
    assert.match(lines[2] ?? '', /^ {2}encrypt_only_key +AES_256 ENCRYPT +already there$/);
    assert.match(lines[3] ?? '', /^ {2}decrypt_only_key +AES_256 DECRYPT +already there$/);
    assert.match(lines[4] ?? '', /^ {2}impotent_key +AES_256 no usage +already there$/);
    assert.match(lines[5] ?? '', /^ {2}other-health-check +AES_256 ENCRYPT,DECRYPT +created$/);
    assert.equal(lines.length, 6);
    // impotent_key gets a version that can do both: no longer what the test client expects.
    assert.equal((await keysHere(['create-version', ...connection(), '--key', 'impotent_key'])).status, 0);
    const refused = await keysHere(['create-test-keys', ...connection(), '--json']);
    assert.equal(refused.status, 1);
    assert.match(
      refused.stderr,
      /'impotent_key' is there as AES_256 ENCRYPT,DECRYPT, not AES_256 without usage: the test client would fail on it/,
    );
  });
});

describe('a second proxy on the same token (another Lambda environment), its key cache warm', () => {
  test('decrypts a ciphertext of a version made after it cached the key', async () => {
    const made = await keysHere(['create-version', ...connection(), '--key', 'stale', '--allow-new']);
    assert.equal(made.status, 0, made.stderr);
    const other = await startProxy({
      configure(config, dir) {
        // The default cache (60 s), and the first proxy's token instead of a token of its own.
        config.hsm.keyCacheSeconds = 60;
        config.hsm.pin = proxy.pin;
        config.keystores[0]?.keys.push('stale');
        if (proxy.hsm === 'nss') {
          config.hsm.libraryParameters = proxy.config.hsm.libraryParameters;
        } else {
          writeFileSync(
            join(dir, 'softhsm2.conf'),
            `directories.tokendir = ${join(proxy.dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`,
          );
        }
      },
    });
    try {
      const warm = await other.xks('keys/stale/metadata', { requestMetadata: metadata('DescribeKey') });
      assert.equal(warm.status, 200, warm.text);
      assert.equal((await keysHere(['create-version', ...connection(), '--key', 'stale'])).status, 0);
      const e = await encrypt('stale'); // the first proxy (no cache) encrypts with version 2
      assert.equal(e.fields.ciphertextMetadata, versionMetadata(2));
      const res = await other.xks('keys/stale/decrypt', {
        requestMetadata: metadata('Decrypt'),
        encryptionAlgorithm: 'AES_GCM',
        ...e.fields,
        additionalAuthenticatedData: e.aad.toString('base64'),
      });
      assert.equal(res.status, 200, `${res.json?.errorName}: ${res.json?.errorMessage}`);
      assert.ok(Buffer.from(res.json.plaintext, 'base64').equals(e.plaintext));
    } finally {
      assertNoLeaks(await other.settledOutput(), [...other.secrets, proxy.pin], sensitive);
      await other.stop();
    }
  });
});

test('the proxy logged no PIN, secret, plaintext or AAD', async () => {
  assertNoLeaks(await proxy.settledOutput(), proxy.secrets, sensitive);
});
