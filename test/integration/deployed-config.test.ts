// The handlers with the configuration a deployment gives them: secrets by ARN only, the PIN and the
// SigV4 credentials read from Secrets Manager, here moto_server over HTTP with the real SDK client;
// a credential rotation picked up after secrets.cacheSeconds without restart or failed request; a
// missing or unreadable secret stopping the start-up with an error that names the secret, never its
// value; the mTLS client certificate check, behind API Gateway and behind an ALB, whose subject
// header a client cannot forge. Real SoftHSM underneath.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  PutSecretValueCommand,
  RestoreSecretCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { inLambda } from '../../functions/aws.ts';
import { parseConfig } from '../../functions/config.ts';
import { createXksApi, type LambdaHandler } from '../../functions/handlers.ts';
import { createRuntime, type Runtime } from '../../functions/runtime.ts';
import { lambdaContext, signedAlbEvent, signedEvent } from '../helpers/events.ts';
import { assertNoLeaks, captureLogs } from '../helpers/leaks.ts';
import { createTestSetup, metadata, ROOT, randomCredential, type TestSetup } from '../helpers/proxy.ts';
import type { Credential } from '../helpers/sign.ts';
import { type Moto, startMoto } from '../helpers/tools.ts';

const REGION = 'eu-west-1';
const PREFIX = '/keystores/payments';
const KMS_CN = 'cks.kms.eu-west-1.amazonaws.com';
/** The SDK's standard settings, pointed at moto (which checks no signature). */
const AWS_ENV = {
  AWS_REGION: REGION,
  AWS_ACCESS_KEY_ID: 'AKIDMOTOTEST',
  AWS_SECRET_ACCESS_KEY: 'moto-does-not-check-this',
};

let moto: Moto;
let secretsManager: SecretsManagerClient;
let setup: TestSetup;
let runtime: Runtime;
let encrypt: LambdaHandler;
let logs: ReturnType<typeof captureLogs>;
let pinArn: string;
let credentialsArn: string;

const oldCredential = randomCredential();
const newCredential = randomCredential();

async function createSecret(name: string, value: string | Uint8Array): Promise<string> {
  const answer = await secretsManager.send(
    new CreateSecretCommand(
      typeof value === 'string' ? { Name: name, SecretString: value } : { Name: name, SecretBinary: value },
    ),
  );
  return answer.ARN as string;
}

const putSecret = (arn: string, value: string) =>
  secretsManager.send(new PutSecretValueCommand({ SecretId: arn, SecretString: value }));

/** The proxy configuration a deployment packages: ARNs, no secret. */
function deployedConfig(pinSecretArn: string, credentialsSecretArn: string) {
  return {
    hsm: {
      modulePath: setup.config.hsm.modulePath,
      libraryParameters: setup.config.hsm.libraryParameters,
      tokenLabel: 'xks-test',
      pinSecretArn,
    },
    secrets: { cacheSeconds: 1 },
    clientCertificate: { allowedCommonNames: [KMS_CN] },
    keystores: [{ name: 'payments', pathPrefix: PREFIX, credentialsSecretArn, keys: ['foo'] }],
  };
}

before(async () => {
  moto = await startMoto();
  Object.assign(process.env, AWS_ENV, { AWS_ENDPOINT_URL_SECRETS_MANAGER: moto.endpoint });
  secretsManager = new SecretsManagerClient({});
  setup = createTestSetup();
  pinArn = await createSecret('xks/test/hsm-pin', JSON.stringify({ pin: setup.pin }));
  credentialsArn = await createSecret('xks/test/payments', JSON.stringify({ credentials: [oldCredential] }));
  // The token's own environment (SoftHSM's configuration file), which the PKCS#11 library reads.
  Object.assign(process.env, setup.env);
  logs = captureLogs();
  const lambda = { AWS_LAMBDA_FUNCTION_NAME: 'xks-proxy-test-encrypt' };
  runtime = await createRuntime(parseConfig(deployedConfig(pinArn, credentialsArn), lambda), {
    inLambda: inLambda(lambda),
  });
  encrypt = createXksApi(runtime).handlers.Encrypt;
});

after(async () => {
  runtime?.close();
  logs?.restore();
  await moto?.stop();
  rmSync(setup.dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function call(credential: Credential, subjectDN: string | null = `CN=${KMS_CN}`) {
  const plaintext = randomBytes(32).toString('base64');
  const event = await signedEvent({
    path: `${PREFIX}/kms/xks/v1/keys/foo/encrypt`,
    body: { requestMetadata: metadata('Encrypt'), plaintext, encryptionAlgorithm: 'AES_GCM' },
    credential,
  });
  if (subjectDN !== null) {
    event.requestContext.identity.clientCert = {
      clientCertPem: '',
      subjectDN,
      issuerDN: 'CN=Amazon RSA 2048 M01,O=Amazon,C=US',
      serialNumber: '1',
      validity: { notBefore: '', notAfter: '' },
    };
  }
  const res = await encrypt(event, lambdaContext());
  return { status: res.statusCode, body: JSON.parse(res.body) };
}

/** An Encrypt behind an ALB, with these X-Amzn-Mtls-Clientcert-Subject headers (name: values). */
async function callViaAlb(credential: Credential, subjects: Record<string, string[]>) {
  const plaintext = randomBytes(32).toString('base64');
  const event = await signedAlbEvent({
    path: `${PREFIX}/kms/xks/v1/keys/foo/encrypt`,
    body: { requestMetadata: metadata('Encrypt'), plaintext, encryptionAlgorithm: 'AES_GCM' },
    credential,
    extraHeaders: subjects,
  });
  const res = await encrypt(event, lambdaContext());
  return { status: res.statusCode, body: JSON.parse(res.body) };
}

describe('a running function', () => {
  test('the PIN and the credentials come from Secrets Manager at init', async () => {
    // The configuration holds neither: the HSM login and the SigV4 check both need the secrets.
    const res = await call(oldCredential);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal((await call(newCredential)).status, 401, 'a credential the secret does not hold');
  });

  test('mTLS: only a client certificate with an allowed CN gets through', async () => {
    assert.equal((await call(oldCredential, `CN=${KMS_CN},O=Amazon`)).status, 200);
    for (const subject of [
      null,
      'CN=cks.kms.us-east-1.amazonaws.com',
      'CN=attacker.example.com',
      'O=Amazon',
    ]) {
      const res = await call(oldCredential, subject);
      assert.equal(res.status, 401, String(subject));
      assert.equal(res.body.errorName, 'AuthenticationFailedException');
    }
  });

  test('mTLS behind an ALB: the subject from exactly one X-Amzn-Mtls-Clientcert-Subject value', async () => {
    const header = 'x-amzn-mtls-clientcert-subject';
    assert.equal((await callViaAlb(oldCredential, { [header]: [`CN=${KMS_CN},O=Amazon`] })).status, 200);
    const refused: Array<[string, Record<string, string[]>]> = [
      ['no header', {}],
      ['another CN', { [header]: ['CN=attacker.example.com'] }],
      // What a client would send beside ALB's own value, in either order, under either spelling.
      ['two values', { [header]: [`CN=${KMS_CN}`, 'CN=attacker.example.com'] }],
      ['the allowed subject twice', { [header]: [`CN=${KMS_CN}`, `CN=${KMS_CN}`] }],
      ['two spellings', { [header]: [`CN=${KMS_CN}`], 'X-Amzn-Mtls-Clientcert-Subject': [`CN=${KMS_CN}`] }],
      // RFC 2253: an escaped comma is part of a value, so this subject has no CN of its own.
      ['a CN inside another value', { [header]: [`O=x\\,CN=${KMS_CN}`] }],
    ];
    for (const [why, subjects] of refused) {
      const res = await callViaAlb(oldCredential, subjects);
      assert.equal(res.status, 401, why);
      assert.equal(res.body.errorName, 'AuthenticationFailedException', why);
    }
  });

  test('mTLS behind API Gateway: a header of that name is just a header', async () => {
    const event = await signedEvent({
      path: `${PREFIX}/kms/xks/v1/keys/foo/encrypt`,
      body: { requestMetadata: metadata('Encrypt'), plaintext: 'AAAA', encryptionAlgorithm: 'AES_GCM' },
      credential: oldCredential,
    });
    event.multiValueHeaders['X-Amzn-Mtls-Clientcert-Subject'] = [`CN=${KMS_CN}`];
    const res = await encrypt(event, lambdaContext());
    assert.equal(res.statusCode, 401, res.body);
  });

  test('rotation: add the new credential, both work, remove the old one: no restart, no failed request', async () => {
    await putSecret(credentialsArn, JSON.stringify({ credentials: [oldCredential, newCredential] }));
    // Requests keep flowing while the cache (1 s) runs out: every one with the old credential works.
    for (let i = 0; i < 12; i++) {
      assert.equal((await call(oldCredential)).status, 200);
      await sleep(100);
    }
    assert.equal((await call(newCredential)).status, 200, 'the new credential after secrets.cacheSeconds');
    assert.equal((await call(oldCredential)).status, 200, 'the old one still, during the overlap');

    await putSecret(credentialsArn, JSON.stringify({ credentials: [newCredential] }));
    await sleep(1100);
    assert.equal((await call(newCredential)).status, 200);
    const old = await call(oldCredential);
    assert.equal(old.status, 401);
    assert.equal(old.body.errorName, 'AuthenticationFailedException');
  });

  test('Secrets Manager failing later: the proxy keeps the credentials it has', async () => {
    // Scheduled for deletion: GetSecretValue fails until it is restored.
    await secretsManager.send(new DeleteSecretCommand({ SecretId: credentialsArn, RecoveryWindowInDays: 7 }));
    await sleep(1100);
    assert.equal((await call(newCredential)).status, 200);
    assert.match(logs.text(), /keeping the previous ones/);
    assert.ok(logs.text().includes(credentialsArn), 'the warning names the secret');
    await secretsManager.send(new RestoreSecretCommand({ SecretId: credentialsArn }));
  });

  test('a secret holding the public demo credentials is refused in Lambda', async () => {
    logs.clear();
    await putSecret(
      credentialsArn,
      JSON.stringify({
        credentials: [
          newCredential,
          {
            accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS',
            secretAccessKey: 'PleaseReplaceThisWithSomeSecretOfLength43To64',
          },
        ],
      }),
    );
    await sleep(1100);
    // The refresh is refused as a whole; the valid credentials known before stay in force.
    assert.equal((await call(newCredential)).status, 200);
    assert.match(logs.text(), /public demo credentials are for local use only/);
  });

  test('no PIN and no SigV4 secret in the logs', () => {
    assertNoLeaks(logs.text(), [setup.pin, oldCredential.secretAccessKey, newCredential.secretAccessKey], []);
  });
});

describe('a function that cannot read its secrets does not start', () => {
  /** Imports the Encrypt handler in a fresh process, as Lambda's init phase does; its exit and output. */
  async function start(config: unknown): Promise<{ code: number; output: string }> {
    const script = `await import(${JSON.stringify(join(ROOT, 'functions/encrypt.ts'))});`;
    try {
      const { stdout, stderr } = await promisify(execFile)(
        process.execPath,
        ['--input-type=module', '-e', script],
        {
          env: {
            PATH: process.env.PATH,
            ...AWS_ENV,
            AWS_ENDPOINT_URL_SECRETS_MANAGER: moto.endpoint,
            AWS_LAMBDA_FUNCTION_NAME: 'xks-proxy-test-encrypt',
            ...setup.env,
            XKS_PROXY_CONFIG_JSON: JSON.stringify(config),
          },
          timeout: 30_000,
        },
      );
      return { code: 0, output: stdout + stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, output: e.stdout + e.stderr };
    }
  }

  const missing = `arn:aws:secretsmanager:${REGION}:123456789012:secret:xks/test/none-AbCdEf`;
  let goodCredentials: string;
  before(async () => {
    goodCredentials = await createSecret(
      'xks/test/start-up',
      JSON.stringify({ credentials: [randomCredential()] }),
    );
  });

  test('the checks below start the function when the secrets are there', async () => {
    const { code, output } = await start(deployedConfig(pinArn, goodCredentials));
    assert.equal(code, 0, output);
  });

  test('a missing PIN secret: the start-up error names it', async () => {
    const { code, output } = await start(deployedConfig(missing, goodCredentials));
    assert.notEqual(code, 0);
    assert.match(output, new RegExp(`Cannot read the secret ${missing}: ResourceNotFoundException`));
  });

  test('a missing credentials secret: the start-up error names it', async () => {
    const { code, output } = await start(deployedConfig(pinArn, missing));
    assert.notEqual(code, 0);
    assert.match(output, new RegExp(`Cannot read the secret ${missing}: ResourceNotFoundException`));
    assertNoLeaks(output, [setup.pin], []);
  });

  test('an unreadable secret (not the expected JSON, or binary): the error names it, never its value', async () => {
    const value = `not json, but secret: ${randomBytes(16).toString('hex')}`;
    const garbled = await createSecret('xks/test/garbled', value);
    const garbledRun = await start(deployedConfig(pinArn, garbled));
    assert.notEqual(garbledRun.code, 0);
    assert.match(
      garbledRun.output,
      new RegExp(`The secret ${garbled}: .*keystore payments: its credentials secret is not JSON`),
    );
    assertNoLeaks(garbledRun.output, [value, setup.pin], []);

    const binary = await createSecret('xks/test/binary-pin', Buffer.from(setup.pin));
    const binaryRun = await start(deployedConfig(binary, goodCredentials));
    assert.notEqual(binaryRun.code, 0);
    assert.match(binaryRun.output, new RegExp(`The secret ${binary} has no SecretString`));
    assertNoLeaks(binaryRun.output, [setup.pin], []);
  });
});
