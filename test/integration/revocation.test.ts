// The revocation switch end to end, through the real local proxy on SoftHSM: revoked with the CLI,
// as the runbook in docs/security.md does it, from a local file and from Secrets Manager (moto_server,
// the real AWS SDK over HTTP). Revoked keys report DISABLED and answer InvalidStateException,
// GetHealthStatus still reports the HSM, other key stores are untouched, each change is logged with
// its audit record, and the chain still verifies.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { auditRecordsIn } from '../../functions/audit.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { metadata, ROOT, type RunningProxy, startProxy } from '../helpers/proxy.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cli(args: string[], env: Record<string, string> = {}) {
  const run = spawnSync(process.execPath, [join(ROOT, 'bin/xks-proxy.ts'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return { status: run.status, out: run.stdout + run.stderr };
}

const encrypt = (proxy: RunningProxy, key = 'foo', prefix?: string) =>
  proxy.xks(
    `keys/${key}/encrypt`,
    {
      requestMetadata: metadata('Encrypt'),
      plaintext: randomBytes(32).toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
    },
    prefix === undefined ? {} : { prefix, credential: proxy.credentials[2], region: 'eu-west-1' },
  );
const keyStatus = async (proxy: RunningProxy, key: string) =>
  (await proxy.xks(`keys/${key}/metadata`, { requestMetadata: metadata('DescribeKey') })).json.keyStatus;
const health = (proxy: RunningProxy) =>
  proxy.xks('health', { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } });

/** Milliseconds until `check` holds (polled every 25 ms), failing after `limitMs`. */
async function msUntil(check: () => Promise<boolean>, limitMs: number): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > limitMs) throw new Error(`not within ${limitMs} ms`);
    await sleep(25);
  }
  return Date.now() - started;
}

const isRevoked = async (proxy: RunningProxy, key = 'foo') => {
  const res = await encrypt(proxy, key);
  if (res.status === 200) return false;
  assert.equal(res.status, 400, res.text);
  assert.equal(res.json.errorName, 'InvalidStateException');
  return true;
};

describe('a local file (npm start): the runbook commands, key and key store', () => {
  let proxy: RunningProxy;
  let store: string;
  let sealed: { body: Record<string, unknown> };
  before(async () => {
    proxy = await startProxy({
      configure: (config, dir) => {
        const file = join(dir, 'revocation.json');
        writeFileSync(file, '{"revoked":[]}\n', { mode: 0o600 });
        config.revocation = { file, cacheSeconds: 1 };
      },
    });
    store = `file:${join(proxy.dir, 'revocation.json')}`;
    const enc = await encrypt(proxy);
    assert.equal(enc.status, 200, enc.text);
    sealed = { body: enc.json };
  });
  after(() => proxy?.stop());

  test('one key revoked: DISABLED, InvalidStateException for Encrypt and Decrypt; the other keys work', async (t) => {
    const run = cli(['revocation', 'revoke', '--store', store, '--keystore', 'test', '--key', 'foo']);
    assert.equal(run.status, 0, run.out);
    const ms = await msUntil(() => isRevoked(proxy), 10_000);
    t.diagnostic(`key revoked after ${ms} ms (file, looked at once a second)`);
    assert.ok(ms < 3000, `${ms} ms`);
    assert.equal(await keyStatus(proxy, 'foo'), 'DISABLED');
    const dec = await proxy.xks('keys/foo/decrypt', {
      requestMetadata: metadata('Decrypt'),
      encryptionAlgorithm: 'AES_GCM',
      ...sealed.body,
    });
    assert.equal(dec.status, 400, dec.text);
    assert.equal(dec.json.errorName, 'InvalidStateException');
    assert.equal(dec.json.errorMessage, 'The external key is revoked');
    assert.equal(await keyStatus(proxy, 'encrypt_only_key'), 'ENABLED');
    assert.equal((await encrypt(proxy, 'encrypt_only_key')).status, 200);
    assert.equal((await health(proxy)).status, 200);
  });

  test('the whole key store: every key, until restored; GetHealthStatus still reports the HSM; other key stores work', async (t) => {
    // The runbook's one command, as docs/security.md gives it for the local proxy.
    const run = cli(['revocation', 'revoke', '--store', store, '--keystore', 'test']);
    assert.equal(run.status, 0, run.out);
    const ms = await msUntil(() => isRevoked(proxy, 'encrypt_only_key'), 10_000);
    t.diagnostic(`key store revoked after ${ms} ms`);
    for (const key of ['foo', 'encrypt_only_key', 'decrypt_only_key']) {
      assert.equal(await keyStatus(proxy, key), 'DISABLED', key);
    }
    const res = await encrypt(proxy, 'encrypt_only_key');
    assert.equal(res.json.errorMessage, 'The external key store is revoked');
    const h = await health(proxy);
    assert.equal(h.status, 200, h.text);
    assert.equal(h.json.ekmFleetDetails[0].healthStatus, 'ACTIVE');
    // The other key store (path prefix '') is not cut off.
    assert.equal((await encrypt(proxy, 'foo', '')).status, 200);
    // The health line says the key store is revoked.
    const output = await proxy.settledOutput();
    assert.ok(
      output
        .split('\n')
        .some((l) => l.includes('"operation":"GetHealthStatus"') && l.includes('"revoked":true')),
    );

    assert.equal(cli(['revocation', 'restore', '--store', store, '--keystore', 'test']).status, 0);
    assert.equal(
      cli(['revocation', 'restore', '--store', store, '--keystore', 'test', '--key', 'foo']).status,
      0,
    );
    const back = await msUntil(async () => !(await isRevoked(proxy)), 10_000);
    t.diagnostic(`restored after ${back} ms`);
    assert.equal(await keyStatus(proxy, 'foo'), 'ENABLED');
  });

  test('each change is logged with its audit record; the chain verifies with the audit key', async () => {
    const output = await proxy.settledOutput();
    const changes = [...auditRecordsIn(output)].filter((r) => r.type === 'revocation');
    const seen = changes.map((r) => `${r.keystore}/${r.keyId ?? ''}:${r.revoked ? 'on' : 'off'}`);
    assert.deepEqual(seen.slice(0, 2), ['test/foo:on', 'test/:on']);
    // The two restores can land in one read of the file: either order.
    assert.deepEqual(seen.slice(2).sort(), ['test/:off', 'test/foo:off']);
    assert.ok(changes.every((r) => r.source === store));
    assert.match(output, /"message":"Revocation on: foo"/);
    const log = join(proxy.dir, 'proxy.log');
    writeFileSync(log, output);
    const verify = cli(['audit', 'verify', '--key-file', proxy.auditKeyFile, log]);
    assert.equal(verify.status, 0, verify.out);
    assertNoLeaks(output, proxy.secrets, []);
  });
});

/** A free TCP port on loopback. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const hasMoto = spawnSync('moto_server', ['--help'], { stdio: 'ignore' }).status === 0;

describe('Secrets Manager (moto_server): within cacheSeconds, no restart', {
  skip: !hasMoto && 'moto_server is not installed (pip install "moto[server]")',
}, () => {
  let moto: ChildProcess;
  let proxy: RunningProxy;
  let arn: string;
  let aws: Record<string, string>;
  let client: SecretsManagerClient;
  const cacheSeconds = 2;

  before(async () => {
    const port = await freePort();
    moto = spawn('moto_server', ['-p', String(port)], { stdio: 'ignore' });
    const endpoint = `http://127.0.0.1:${port}`;
    aws = {
      AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'eu-west-1',
    };
    client = new SecretsManagerClient({
      endpoint,
      region: 'eu-west-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    });
    for (const deadline = Date.now() + 20_000; ; await sleep(200)) {
      try {
        const created = await client.send(
          new CreateSecretCommand({ Name: 'xks/revocation', SecretString: '{"revoked":[]}' }),
        );
        arn = created.ARN as string;
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
      }
    }
    proxy = await startProxy({
      env: aws,
      configure: (config) => {
        config.revocation = { secretArn: arn, cacheSeconds };
      },
    });
  });
  after(async () => {
    await proxy?.stop();
    client?.destroy();
    moto?.kill();
  });

  test(`revoke and restore with the CLI: each takes effect within cacheSeconds (${cacheSeconds} s)`, async (t) => {
    assert.equal((await encrypt(proxy)).status, 200);
    const run = cli(['revocation', 'revoke', '--store', `secretsmanager:${arn}`, '--keystore', 'test'], aws);
    assert.equal(run.status, 0, run.out);
    const ms = await msUntil(() => isRevoked(proxy), 10_000);
    t.diagnostic(`Secrets Manager: revoked after ${ms} ms (cacheSeconds ${cacheSeconds})`);
    assert.ok(ms <= cacheSeconds * 1000 + 1500, `${ms} ms`);
    assert.equal(await keyStatus(proxy, 'foo'), 'DISABLED');
    assert.equal((await health(proxy)).status, 200);

    assert.equal(
      cli(['revocation', 'restore', '--store', `secretsmanager:${arn}`, '--keystore', 'test'], aws).status,
      0,
    );
    const back = await msUntil(async () => !(await isRevoked(proxy)), 10_000);
    t.diagnostic(`Secrets Manager: restored after ${back} ms`);
    assert.ok(back <= cacheSeconds * 1000 + 1500, `${back} ms`);
  });

  test('the secret unreadable later: the proxy keeps what it said and keeps serving, with a warning', async () => {
    assert.equal(
      cli(
        ['revocation', 'revoke', '--store', `secretsmanager:${arn}`, '--keystore', 'test', '--key', 'foo'],
        aws,
      ).status,
      0,
    );
    await msUntil(() => isRevoked(proxy), 10_000);
    await client.send(new DeleteSecretCommand({ SecretId: arn, ForceDeleteWithoutRecovery: true }));
    await sleep(cacheSeconds * 1000 + 200);
    assert.equal(await isRevoked(proxy), true, 'still revoked');
    assert.equal((await encrypt(proxy, 'encrypt_only_key')).status, 200);
    await proxy.waitForOutput(/Could not read the revocation switch again; keeping what it said last/);
    const output = await proxy.settledOutput();
    const log = join(proxy.dir, 'proxy.log');
    writeFileSync(log, output);
    assert.equal(cli(['audit', 'verify', '--key-file', proxy.auditKeyFile, log]).status, 0);
  });
});
