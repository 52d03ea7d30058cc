// The handlers with the configuration a deployment gives them (XKS_PROXY_CONFIG_JSON): the PIN and
// the SigV4 credentials read from Secrets Manager (faked at the SDK boundary with
// aws-sdk-client-mock), a credential rotation without restart or failed request, and the mTLS
// client certificate check. Real SoftHSM underneath.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { lambdaContext, signedEvent } from '../helpers/events.ts';
import { assertNoLeaks, captureLogs } from '../helpers/leaks.ts';
import { createTestSetup, metadata, randomCredential, type TestSetup } from '../helpers/proxy.ts';
import type { Credential } from '../helpers/sign.ts';

type Handler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;

const PIN_ARN = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:xks/pin-AbCdEf';
const CREDENTIALS_ARN = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:xks/payments-AbCdEf';
const PREFIX = '/keystores/payments';
const KMS_CN = 'cks.kms.eu-west-1.amazonaws.com';

const secretsManager = mockClient(SecretsManagerClient);
let setup: TestSetup;
let encrypt: Handler;
let logs: ReturnType<typeof captureLogs>;
const secretValues = new Map<string, string>();

const oldCredential = randomCredential();
const newCredential = randomCredential();

before(async () => {
  setup = createTestSetup();
  secretValues.set(PIN_ARN, JSON.stringify({ pin: setup.pin }));
  secretValues.set(CREDENTIALS_ARN, JSON.stringify({ credentials: [oldCredential] }));
  secretsManager.on(GetSecretValueCommand).callsFake((input: { SecretId: string }) => {
    const value = secretValues.get(input.SecretId);
    if (value === undefined) throw new Error('ResourceNotFoundException');
    return { SecretString: value, ARN: input.SecretId };
  });
  process.env.AWS_REGION = 'eu-west-1';
  process.env.AWS_LAMBDA_FUNCTION_NAME = 'xks-proxy-test-encrypt';
  Object.assign(process.env, setup.env);
  process.env.XKS_PROXY_CONFIG_JSON = JSON.stringify({
    hsm: { modulePath: setup.config.hsm.modulePath, tokenLabel: 'xks-test', pinSecretArn: PIN_ARN },
    secrets: { cacheSeconds: 1 },
    clientCertificate: { allowedCommonNames: [KMS_CN] },
    keystores: [
      { name: 'payments', pathPrefix: PREFIX, credentialsSecretArn: CREDENTIALS_ARN, keys: ['foo'] },
    ],
  });
  logs = captureLogs();
  encrypt = (await import('../../functions/encrypt.ts')).handler as unknown as Handler;
});

after(() => {
  logs.restore();
  secretsManager.restore();
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

test('the PIN and the credentials come from Secrets Manager at init', async () => {
  const res = await call(oldCredential);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const asked = secretsManager.commandCalls(GetSecretValueCommand).map((c) => c.args[0].input.SecretId);
  assert.ok(asked.includes(PIN_ARN) && asked.includes(CREDENTIALS_ARN), asked.join());
});

test('mTLS: only a client certificate with an allowed CN gets through', async () => {
  assert.equal((await call(oldCredential, `CN=${KMS_CN},O=Amazon`)).status, 200);
  for (const subject of [null, 'CN=cks.kms.us-east-1.amazonaws.com', 'CN=attacker.example.com', 'O=Amazon']) {
    const res = await call(oldCredential, subject);
    assert.equal(res.status, 401, String(subject));
    assert.equal(res.body.errorName, 'AuthenticationFailedException');
  }
});

test('rotation: add the new credential, both work, remove the old one: no restart, no failed request', async () => {
  secretValues.set(CREDENTIALS_ARN, JSON.stringify({ credentials: [oldCredential, newCredential] }));
  // Requests keep flowing while the cache (1 s) runs out: every one with the old credential works.
  for (let i = 0; i < 12; i++) {
    assert.equal((await call(oldCredential)).status, 200);
    await sleep(100);
  }
  assert.equal((await call(newCredential)).status, 200, 'the new credential after the refresh');
  assert.equal((await call(oldCredential)).status, 200, 'the old one still, during the overlap');

  secretValues.set(CREDENTIALS_ARN, JSON.stringify({ credentials: [newCredential] }));
  await sleep(1100);
  assert.equal((await call(newCredential)).status, 200);
  const old = await call(oldCredential);
  assert.equal(old.status, 401);
  assert.equal(old.body.errorName, 'AuthenticationFailedException');
});

test('Secrets Manager failing later: the proxy keeps the credentials it has', async () => {
  secretValues.delete(CREDENTIALS_ARN);
  await sleep(1100);
  assert.equal((await call(newCredential)).status, 200);
  assert.match(logs.text(), /keeping the previous ones/);
  secretValues.set(CREDENTIALS_ARN, JSON.stringify({ credentials: [newCredential] }));
});

test('a secret holding the public demo credentials is refused in Lambda', async () => {
  secretValues.set(
    CREDENTIALS_ARN,
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
