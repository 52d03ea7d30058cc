// The credentials CLI (spec: Appendix A credential rules; "SigV4 credentials rotation"; "XKS proxy
// configuration in AWS KMS console"): generation, the file and Secrets Manager stores, the console
// file, and the command line run as a child process, which must never print a secret unasked.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  ResourceExistsException,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { CliError } from '../../bin/cli.ts';
import {
  ACCESS_KEY_ID_ALPHABET,
  ACCESS_KEY_ID_LENGTH,
  addCredential,
  type ConsoleConfig,
  type CredentialStore,
  consoleConfig,
  FileStore,
  generateCredential,
  listCredentials,
  openStore,
  removeCredential,
  SecretsManagerStore,
  type StoreOptions,
  writeConsoleFile,
} from '../../bin/credentials.ts';
import { type Credential, DEMO_CREDENTIAL, parseCredentialsSecret } from '../../functions/config.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin', 'xks-proxy.ts');

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'xks-credentials-cli-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

let fileCount = 0;
function freshPath(name: string): string {
  fileCount += 1;
  return join(dir, `${fileCount}-${name}`);
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

/** The file parses as JSON and with the proxy's own parser; mode 0600. */
function readStoreFile(path: string): Credential[] {
  assert.equal(mode(path), 0o600, `${path} has mode ${mode(path).toString(8)}`);
  return parseCredentialsSecret('test', readFileSync(path, 'utf8'), {});
}

async function assertCliError(promise: Promise<unknown>, pattern: RegExp, hidden: readonly string[] = []) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CliError, `expected a CliError, got ${String(error)}`);
    assert.match(error.message, pattern);
    for (const secret of hidden) assert.ok(!error.message.includes(secret), 'the message holds a secret');
    return true;
  });
}

/** Pearson's chi-square statistic of the access key id characters, all positions pooled. */
function chiSquare(ids: readonly string[]): number {
  const counts = new Map<string, number>([...ACCESS_KEY_ID_ALPHABET].map((c) => [c, 0]));
  let total = 0;
  for (const id of ids) {
    for (const c of id) {
      const n = counts.get(c);
      assert.ok(n !== undefined, `character ${c} is outside the alphabet`);
      counts.set(c, n + 1);
      total += 1;
    }
  }
  const expected = total / ACCESS_KEY_ID_ALPHABET.length;
  let statistic = 0;
  for (const n of counts.values()) statistic += (n - expected) ** 2 / expected;
  return statistic;
}

// 31 degrees of freedom: the statistic exceeds 90 by chance with a probability near 1e-7.
const CHI_SQUARE_LIMIT = 90;
const UNIFORMITY_SAMPLES = 4000;

describe('generateCredential', () => {
  const generated = Array.from({ length: 200 }, () => generateCredential());

  test('access key ids: 26 characters of A-Z2-7; secrets: Base64 of 32 bytes, 44 characters', () => {
    for (const { accessKeyId, secretAccessKey } of generated) {
      assert.equal(accessKeyId.length, ACCESS_KEY_ID_LENGTH);
      assert.match(accessKeyId, /^[A-Z2-7]{26}$/);
      assert.equal(secretAccessKey.length, 44);
      assert.match(secretAccessKey, /^[A-Za-z0-9+/]{43}=$/);
      const bytes = Buffer.from(secretAccessKey, 'base64');
      assert.equal(bytes.length, 32);
      assert.equal(bytes.toString('base64'), secretAccessKey);
    }
  });

  test('every generated credential passes the proxy parser (functions/config.ts)', () => {
    const parsed = parseCredentialsSecret('test', JSON.stringify({ credentials: generated }), {});
    assert.deepEqual(parsed, generated);
  });

  test('ids and secrets are all distinct, and never the demo credential', () => {
    assert.equal(new Set(generated.map((c) => c.accessKeyId)).size, generated.length);
    assert.equal(new Set(generated.map((c) => c.secretAccessKey)).size, generated.length);
    for (const c of generated) {
      assert.notEqual(c.accessKeyId, DEMO_CREDENTIAL.accessKeyId);
      assert.notEqual(c.secretAccessKey, DEMO_CREDENTIAL.secretAccessKey);
    }
  });

  test('access key id characters are uniform (chi-square), and the check catches a biased generator', () => {
    const ids = Array.from({ length: UNIFORMITY_SAMPLES }, () => generateCredential().accessKeyId);
    const statistic = chiSquare(ids);
    assert.ok(statistic < CHI_SQUARE_LIMIT, `chi-square ${statistic.toFixed(1)} over 31 degrees of freedom`);

    // The classic modulo bias, milder than a byte % 32 would give with a non-power-of-two range:
    // values 0-199 reduced mod 32 make the first 8 characters 7/200 likely instead of 6.25/200.
    const biased = Array.from({ length: UNIFORMITY_SAMPLES }, () =>
      Array.from({ length: ACCESS_KEY_ID_LENGTH }, () => ACCESS_KEY_ID_ALPHABET[randomInt(200) % 32]).join(
        '',
      ),
    );
    const biasedStatistic = chiSquare(biased);
    assert.ok(
      biasedStatistic > CHI_SQUARE_LIMIT,
      `a biased generator scored only ${biasedStatistic.toFixed(1)}`,
    );
  });

  test('every character appears at every position over many samples', () => {
    const seen = Array.from({ length: ACCESS_KEY_ID_LENGTH }, () => new Set<string>());
    for (let i = 0; i < 2000; i++) {
      [...generateCredential().accessKeyId].forEach((c, position) => {
        seen[position]?.add(c);
      });
    }
    for (const [position, chars] of seen.entries()) {
      assert.equal(chars.size, 32, `position ${position} used only ${chars.size} characters`);
    }
  });
});

describe('file store', () => {
  test('create, add a second, list, remove; refuses the last and duplicates; 0600 after every write', async () => {
    const path = freshPath('credentials.json');
    const store = openStore(`file:${path}`);
    assert.ok(store instanceof FileStore);
    assert.equal(store.local, true);

    const first = generateCredential();
    assert.deepEqual(await addCredential(store, first), [first]);
    assert.deepEqual(readStoreFile(path), [first]);

    const second = generateCredential();
    assert.deepEqual(await addCredential(store, second), [first, second]);
    assert.deepEqual(readStoreFile(path), [first, second]);
    assert.deepEqual(await listCredentials(store), [first.accessKeyId, second.accessKeyId]);

    // Duplicates: the same id (with another secret), the same secret (with another id).
    await assertCliError(
      addCredential(store, { ...generateCredential(), accessKeyId: first.accessKeyId }),
      /already in/,
      [first.secretAccessKey],
    );
    await assertCliError(
      addCredential(store, { ...generateCredential(), secretAccessKey: second.secretAccessKey }),
      /already in/,
      [second.secretAccessKey],
    );
    assert.deepEqual(readStoreFile(path), [first, second]);

    assert.deepEqual(await removeCredential(store, first.accessKeyId), [second]);
    assert.deepEqual(readStoreFile(path), [second]);
    await assertCliError(removeCredential(store, first.accessKeyId), /not in/);
    await assertCliError(removeCredential(store, second.accessKeyId), /last credential/);
    assert.deepEqual(readStoreFile(path), [second]);

    assert.deepEqual(await removeCredential(store, second.accessKeyId, true), []);
    assert.equal(mode(path), 0o600);
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { credentials: [] });
    // An emptied store can be filled again.
    const third = generateCredential();
    assert.deepEqual(await addCredential(store, third), [third]);
    assert.deepEqual(readStoreFile(path), [third]);
  });

  test('an existing file readable by others becomes 0600; its other fields are kept', async () => {
    const path = freshPath('wide.json');
    const existing = generateCredential();
    writeFileSync(path, JSON.stringify({ comment: 'kept', credentials: [existing] }));
    chmodSync(path, 0o644);
    const store = new FileStore(path);
    const added = generateCredential();
    await addCredential(store, added);
    assert.equal(store.widePermissions, true);
    assert.deepEqual(readStoreFile(path), [existing, added]);
    assert.equal(JSON.parse(readFileSync(path, 'utf8')).comment, 'kept');
  });

  test('mode 0600 even under a permissive umask', async () => {
    const previous = process.umask(0);
    try {
      const path = freshPath('umask.json');
      await addCredential(new FileStore(path), generateCredential());
      assert.equal(mode(path), 0o600);
    } finally {
      process.umask(previous);
    }
  });

  test('refuses a file that is not a valid credentials document, and names no secret', async () => {
    const secret = generateCredential().secretAccessKey;
    const path = freshPath('invalid.json');
    writeFileSync(path, `{"credentials":[{"accessKeyId":"lowercase","secretAccessKey":"${secret}"}]}`);
    await assertCliError(addCredential(new FileStore(path), generateCredential()), /accessKeyId/, [secret]);
    writeFileSync(path, `{"credentials": [${secret}`);
    await assertCliError(listCredentials(new FileStore(path)), /not JSON/, [secret]);
  });

  test('refuses invalid credentials; accepts the demo credential (local use only)', async () => {
    const store = new FileStore(freshPath('demo.json'));
    await assertCliError(
      addCredential(store, { ...generateCredential(), accessKeyId: 'SHORT' }),
      /access key id/,
    );
    await assertCliError(
      addCredential(store, { ...generateCredential(), secretAccessKey: 'short' }),
      /secret/,
    );
    assert.deepEqual(await addCredential(store, DEMO_CREDENTIAL), [DEMO_CREDENTIAL]);
  });

  test('list and remove name a missing file', async () => {
    const store = new FileStore(freshPath('missing.json'));
    await assertCliError(listCredentials(store), /does not exist/);
    await assertCliError(removeCredential(store, 'A'.repeat(26)), /does not exist/);
  });

  test('openStore refuses other forms', () => {
    for (const spec of ['credentials.json', 'file:', 's3:bucket/key', 'secretsmanager:']) {
      assert.throws(() => openStore(spec), CliError, spec);
    }
  });
});

describe('KMS console file', () => {
  test('content as the spec shows it, mode 0600, replacing a wider file', () => {
    const credential = generateCredential();
    const config = consoleConfig('/keystores/payments', credential);
    assert.deepEqual(config, {
      XksProxyUriPath: '/keystores/payments/kms/xks/v1',
      XksProxyAuthenticationCredential: {
        AccessKeyId: credential.accessKeyId,
        RawSecretAccessKey: credential.secretAccessKey,
      },
    });
    assert.equal(consoleConfig('', credential).XksProxyUriPath, '/kms/xks/v1');

    const path = freshPath('console.json');
    writeFileSync(path, 'old');
    chmodSync(path, 0o644);
    writeConsoleFile(path, config);
    assert.equal(mode(path), 0o600);
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')) as ConsoleConfig, config);
  });

  test('refuses path prefixes KMS would refuse', () => {
    const credential = generateCredential();
    for (const prefix of ['keystores', '/a/', '/a b', '/a/../b', `/${'a'.repeat(120)}`]) {
      assert.throws(() => consoleConfig(prefix, credential), CliError, prefix);
    }
  });
});

describe('Secrets Manager store', () => {
  const sm = mockClient(SecretsManagerClient);
  const NAME = 'xks/test/payments';
  const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:xks/test/payments-AbCdEf';
  const notFound = () =>
    new ResourceNotFoundException({
      message: "Secrets Manager can't find the specified secret.",
      $metadata: {},
    });

  beforeEach(() => {
    sm.reset();
  });
  after(() => {
    sm.restore();
  });

  function store(id = NAME): CredentialStore {
    return openStore(`secretsmanager:${id}`, { region: 'eu-west-1' });
  }

  function written(command: typeof CreateSecretCommand | typeof PutSecretValueCommand): Credential[] {
    const calls =
      command === CreateSecretCommand
        ? sm.commandCalls(CreateSecretCommand)
        : sm.commandCalls(PutSecretValueCommand);
    assert.equal(calls.length, 1);
    const text = calls[0]?.args[0].input.SecretString;
    assert.equal(typeof text, 'string');
    return parseCredentialsSecret('test', text as string, {});
  }

  test('creates the secret when it is missing', async () => {
    sm.on(GetSecretValueCommand).rejects(notFound());
    sm.on(CreateSecretCommand).resolves({ ARN, Name: NAME });
    const s = store();
    const credential = generateCredential();
    assert.deepEqual(await addCredential(s, credential), [credential]);
    assert.equal(sm.commandCalls(CreateSecretCommand)[0]?.args[0].input.Name, NAME);
    assert.deepEqual(written(CreateSecretCommand), [credential]);
    assert.equal(sm.commandCalls(PutSecretValueCommand).length, 0);
    assert.equal((s as { createdArn?: string }).createdArn, ARN);
  });

  test('gives a value to a secret that exists without one', async () => {
    sm.on(GetSecretValueCommand).rejects(notFound());
    sm.on(CreateSecretCommand).rejects(new ResourceExistsException({ message: 'exists', $metadata: {} }));
    sm.on(PutSecretValueCommand).resolves({});
    const credential = generateCredential();
    await addCredential(store(), credential);
    assert.deepEqual(written(PutSecretValueCommand), [credential]);
  });

  test('refuses to create a secret named by an ARN', async () => {
    sm.on(GetSecretValueCommand).rejects(notFound());
    await assertCliError(addCredential(store(ARN), generateCredential()), /give its name/);
    assert.equal(sm.commandCalls(CreateSecretCommand).length, 0);
  });

  test('appends to an existing secret, keeping the old credential and other fields (rotation step 1)', async () => {
    const old = generateCredential();
    sm.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({ note: 'x', credentials: [old] }),
    });
    sm.on(PutSecretValueCommand).resolves({});
    const added = generateCredential();
    assert.deepEqual(await addCredential(store(ARN), added), [old, added]);
    assert.equal(sm.commandCalls(PutSecretValueCommand)[0]?.args[0].input.SecretId, ARN);
    const text = sm.commandCalls(PutSecretValueCommand)[0]?.args[0].input.SecretString ?? '';
    assert.ok(text.includes(old.secretAccessKey) && text.includes(added.secretAccessKey));
    assert.deepEqual(written(PutSecretValueCommand), [old, added]);
    assert.equal(JSON.parse(text).note, 'x');
    assert.equal(sm.commandCalls(CreateSecretCommand).length, 0);
  });

  test('refuses a duplicate access key id', async () => {
    const old = generateCredential();
    sm.on(GetSecretValueCommand).resolves({ SecretString: JSON.stringify({ credentials: [old] }) });
    await assertCliError(
      addCredential(store(), { ...generateCredential(), accessKeyId: old.accessKeyId }),
      /already/,
    );
    assert.equal(sm.commandCalls(PutSecretValueCommand).length, 0);
  });

  test('lists and removes (rotation step 4); refuses the last unless forced', async () => {
    const old = generateCredential();
    const current = generateCredential();
    sm.on(GetSecretValueCommand).resolves({ SecretString: JSON.stringify({ credentials: [old, current] }) });
    sm.on(PutSecretValueCommand).resolves({});
    assert.deepEqual(await listCredentials(store()), [old.accessKeyId, current.accessKeyId]);
    assert.deepEqual(await removeCredential(store(), old.accessKeyId), [current]);
    assert.deepEqual(written(PutSecretValueCommand), [current]);

    sm.reset();
    sm.on(GetSecretValueCommand).resolves({ SecretString: JSON.stringify({ credentials: [current] }) });
    await assertCliError(removeCredential(store(), current.accessKeyId), /last credential/);
    assert.equal(sm.commandCalls(PutSecretValueCommand).length, 0);
  });

  test('refuses the public demo credential, writing nothing', async () => {
    sm.on(GetSecretValueCommand).rejects(notFound());
    for (const credential of [
      DEMO_CREDENTIAL,
      { ...generateCredential(), accessKeyId: DEMO_CREDENTIAL.accessKeyId },
      { ...generateCredential(), secretAccessKey: DEMO_CREDENTIAL.secretAccessKey },
    ]) {
      await assertCliError(addCredential(store(), credential), /demo/, [DEMO_CREDENTIAL.secretAccessKey]);
    }
    assert.equal(sm.commandCalls(CreateSecretCommand).length, 0);
    assert.equal(sm.commandCalls(PutSecretValueCommand).length, 0);
  });

  test('AWS errors are reported without the secret', async () => {
    sm.on(GetSecretValueCommand).rejects(
      Object.assign(new Error('User is not authorized'), { name: 'AccessDeniedException' }),
    );
    await assertCliError(listCredentials(store()), /AccessDeniedException/);
  });

  test('the region comes from --region, else the ARN, else AWS_REGION, else AWS_DEFAULT_REGION', async () => {
    const region = (spec: string, options: StoreOptions) => {
      const s = openStore(spec, options);
      assert.ok(s instanceof SecretsManagerStore);
      return s.client.config.region();
    };
    const env = { AWS_REGION: 'ap-south-1', AWS_DEFAULT_REGION: 'sa-east-1' };
    assert.equal(await region(`secretsmanager:${NAME}`, { region: 'us-east-2', env }), 'us-east-2');
    assert.equal(await region(`secretsmanager:${ARN}`, { env }), 'eu-west-1');
    assert.equal(await region(`secretsmanager:${NAME}`, { env }), 'ap-south-1');
    assert.equal(
      await region(`secretsmanager:${NAME}`, { env: { AWS_DEFAULT_REGION: 'sa-east-1' } }),
      'sa-east-1',
    );
    assert.throws(() => openStore(`secretsmanager:${ARN}`, { region: 'us-east-1' }), /differs/);
  });
});

describe('the command line (child process)', () => {
  function run(...args: string[]) {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir };
    const result = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, env, encoding: 'utf8' });
    return {
      status: result.status,
      stdout: result.stdout,
      stderr: result.stderr,
      output: result.stdout + result.stderr,
    };
  }

  test('create prints the access key id and where things went, never the secret', () => {
    const path = freshPath('cli.json');
    const consoleFile = freshPath('cli-console.json');
    const result = run(
      'credentials',
      'create',
      '--store',
      `file:${path}`,
      '--keystore-path',
      '/keystores/payments',
      '--console-file',
      consoleFile,
    );
    assert.equal(result.status, 0, result.stderr);
    const [credential] = readStoreFile(path);
    assert.ok(credential);
    assert.ok(result.stdout.includes(credential.accessKeyId));
    assert.ok(result.stdout.includes(path));
    assert.ok(result.stdout.includes(consoleFile));
    assert.ok(result.stdout.includes('/keystores/payments/kms/xks/v1'));
    assert.ok(!result.output.includes(credential.secretAccessKey), 'the secret was printed');

    assert.equal(mode(consoleFile), 0o600);
    assert.deepEqual(
      JSON.parse(readFileSync(consoleFile, 'utf8')),
      consoleConfig('/keystores/payments', credential),
    );

    // A second one, listed; the first removed.
    const second = run('credentials', 'create', '--store', `file:${path}`);
    assert.equal(second.status, 0, second.stderr);
    const credentials = readStoreFile(path);
    assert.equal(credentials.length, 2);
    for (const c of credentials)
      assert.ok(!second.output.includes(c.secretAccessKey), 'a secret was printed');

    const listed = run('credentials', 'list', '--store', `file:${path}`);
    assert.equal(listed.status, 0, listed.stderr);
    assert.deepEqual(
      listed.stdout.trim().split('\n'),
      credentials.map((c) => c.accessKeyId),
    );
    for (const c of credentials)
      assert.ok(!listed.output.includes(c.secretAccessKey), 'list printed a secret');

    const removed = run(
      'credentials',
      'remove',
      '--store',
      `file:${path}`,
      '--access-key-id',
      credential.accessKeyId,
    );
    assert.equal(removed.status, 0, removed.stderr);
    const left = readStoreFile(path);
    assert.equal(left.length, 1);
    const last = left[0]?.accessKeyId ?? '';
    const refused = run('credentials', 'remove', '--store', `file:${path}`, '--access-key-id', last);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /last credential/);
    assert.equal(readStoreFile(path).length, 1);
    const forced = run(
      'credentials',
      'remove',
      '--store',
      `file:${path}`,
      '--access-key-id',
      last,
      '--force',
    );
    assert.equal(forced.status, 0, forced.stderr);
  });

  test('--print-secret prints it', () => {
    const path = freshPath('cli-print.json');
    const result = run('credentials', 'create', '--store', `file:${path}`, '--print-secret');
    assert.equal(result.status, 0, result.stderr);
    const [credential] = readStoreFile(path);
    assert.ok(credential);
    assert.ok(result.stdout.includes(credential.secretAccessKey));
  });

  test('usage errors: unknown option, missing --store, console file without key store path, nowhere to go', () => {
    assert.equal(run('credentials', 'create', '--bogus').status, 2);
    assert.equal(run('credentials', 'list').status, 2);
    assert.equal(run('credentials', 'remove', '--store', `file:${freshPath('x.json')}`).status, 2);
    assert.equal(run('credentials', 'create', '--console-file', freshPath('c.json')).status, 2);
    assert.equal(run('credentials', 'create').status, 2);
    assert.equal(run('keys').status, 2);
  });

  test('--help for every command', () => {
    for (const args of [
      [],
      ['credentials'],
      ['credentials', 'create'],
      ['credentials', 'list'],
      ['credentials', 'remove'],
    ]) {
      const result = run(...args, '--help');
      assert.equal(result.status, 0, args.join(' '));
      assert.match(result.stdout, /^Usage: xks-proxy/);
    }
    assert.match(run('credentials', 'create', '--help').stdout, /--print-secret/);
    assert.match(run('credentials', 'remove', '--help').stdout, /--access-key-id/);
  });
});
