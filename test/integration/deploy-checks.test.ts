// The checks `sls deploy` runs against the account before it changes anything (infra/deploy-checks.ts):
// Lambda's reserved concurrency against the account's quota, and API Gateway's CloudWatch role. API
// Gateway's account settings come from moto_server through the real SDK client; Lambda's
// GetAccountSettings, which moto does not serve, is faked at the SDK boundary (aws-sdk-client-mock).
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { APIGatewayClient, UpdateAccountCommand } from '@aws-sdk/client-api-gateway';
import {
  GetAccountSettingsCommand,
  GetFunctionConcurrencyCommand,
  LambdaClient,
  ResourceNotFoundException,
} from '@aws-sdk/client-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import DeployChecks, { accountProblems, type Clients } from '../../infra/deploy-checks.ts';
import { checkParams } from '../../infra/params.ts';
import { type Moto, startMoto } from '../helpers/tools.ts';

// biome-ignore lint/suspicious/noExplicitAny: parameter files are free-form YAML
type Params = Record<string, any>;

const REGION = 'eu-west-1';
const arn = (name: string) => `arn:aws:secretsmanager:${REGION}:111122223333:secret:${name}`;
const stageFile = (extra: Params = {}): Params => ({
  region: REGION,
  layerZip: 'layers/dist/pkcs11-layer-x86_64.zip',
  vpc: { vpcId: 'vpc-1', subnetIds: ['subnet-1'], securityGroupIds: ['sg-1'] },
  hsm: { modulePath: '/opt/lib/libvendor.so', tokenLabel: 'xks', pinSecretArn: arn('pin') },
  keystores: [{ name: 'a', pathPrefix: '', credentialsSecretArn: arn('a'), keys: [] }],
  connectivity: 'public',
  public: { domainName: 'xks.example.com', certificateArn: 'arn:aws:acm:eu-west-1:1:certificate/1' },
  ...extra,
});

let moto: Moto;
let clients: Clients;
const lambda = mockClient(LambdaClient);
/** The account as GetAccountSettings and GetFunctionConcurrency tell it. */
const account = { limit: 1000, unreserved: 1000, reservedByStage: new Map<string, number>() };

before(async () => {
  moto = await startMoto();
  const config = {
    region: REGION,
    endpoint: moto.endpoint,
    credentials: { accessKeyId: 'AKIDMOTOTEST', secretAccessKey: 'moto-does-not-check-this' },
  };
  clients = { lambda: new LambdaClient(config), apiGateway: new APIGatewayClient(config) };
});
after(async () => {
  lambda.restore();
  await moto?.stop();
});
beforeEach(() => {
  lambda.reset();
  lambda.on(GetAccountSettingsCommand).callsFake(() => ({
    AccountLimit: { ConcurrentExecutions: account.limit, UnreservedConcurrentExecutions: account.unreserved },
  }));
  lambda.on(GetFunctionConcurrencyCommand).callsFake(({ FunctionName }: { FunctionName: string }) => {
    const reserved = account.reservedByStage.get(FunctionName);
    if (reserved === undefined) {
      throw new ResourceNotFoundException({ message: `Function not found: ${FunctionName}`, $metadata: {} });
    }
    return { ReservedConcurrentExecutions: reserved };
  });
});

const setAccount = (limit: number, unreserved: number, ours = 0) => {
  account.limit = limit;
  account.unreserved = unreserved;
  account.reservedByStage = new Map(
    ours === 0
      ? []
      : ['getHealthStatus', 'getKeyMetadata', 'encrypt', 'decrypt'].map((fn) => [
          `xks-proxy-prod-${fn}`,
          ours,
        ]),
  );
};
const problems = (extra: Params = {}) =>
  accountProblems(checkParams(stageFile(extra), 'prod'), 'xks-proxy', clients);
const setCloudWatchRole = (value: string) =>
  clients.apiGateway.send(
    new UpdateAccountCommand({ patchOperations: [{ op: 'replace', path: '/cloudwatchRoleArn', value }] }),
  );

test('no CloudWatch role for API Gateway in the region: refused with what to run, unless the stack creates it', async () => {
  setAccount(1000, 1000);
  const [problem, ...rest] = await problems();
  assert.equal(rest.length, 0);
  assert.match(problem ?? '', /API Gateway has no CloudWatch Logs role in eu-west-1/);
  assert.match(problem ?? '', /createApiGatewayCloudWatchRole: true in deploy\/params\.prod\.yml/);
  assert.match(
    problem ?? '',
    /aws apigateway update-account --region eu-west-1 --patch-operations op=replace,path=\/cloudwatchRoleArn,value=/,
  );
  assert.deepEqual(await problems({ createApiGatewayCloudWatchRole: true }), []);
  // Behind an ALB there is no API Gateway stage to log: its access logs go to S3.
  const alb = { subnetIds: ['subnet-p1', 'subnet-p2'], accessLogBucket: 'xks-logs' };
  assert.deepEqual(await problems({ frontDoor: 'alb', alb }), []);
  await setCloudWatchRole('arn:aws:iam::123456789012:role/apigateway-cloudwatch');
  assert.deepEqual(await problems(), []);
});

test('reserved concurrency within the quota: 4 x 40 with 1000 unreserved passes', async () => {
  setAccount(1000, 1000);
  assert.deepEqual(await problems(), []);
  assert.deepEqual(
    lambda.commandCalls(GetFunctionConcurrencyCommand).map((c) => c.args[0].input.FunctionName),
    ['getHealthStatus', 'getKeyMetadata', 'encrypt', 'decrypt'].map((fn) => `xks-proxy-prod-${fn}`),
  );
});

test('a new account (limit 50): refused with both numbers and the quota increase to ask for', async () => {
  setAccount(50, 50);
  const [problem] = await problems();
  assert.match(problem ?? '', /reservedConcurrency 40 reserves 160 \(4 functions\)/);
  assert.match(problem ?? '', /whose limit is 50 \(50 not reserved/);
  assert.match(problem ?? '', /keeps 100 unreserved: it needs a limit of 260\./);
  assert.match(problem ?? '', /Ask for a higher limit: aws service-quotas request-service-quota-increase/);
  assert.match(problem ?? '', /--quota-code L-B99A9384 --desired-value 260 --region eu-west-1$/);
});

test('other functions reserve part of the quota: the largest reservedConcurrency that fits is named', async () => {
  // 400 in all, 150 reserved by others: 250 left, 100 of which stay unreserved.
  setAccount(400, 250);
  const [problem] = await problems();
  assert.match(problem ?? '', /it needs a limit of 410\. Set reservedConcurrency to 37 or less, or ask/);
  assert.deepEqual(await problems({ reservedConcurrency: 37 }), []);
});

test("a redeploy counts the concurrency the stage's functions reserve already", async () => {
  // 260 in all, the stage's four functions reserve 40 each: 100 unreserved, as Lambda requires.
  setAccount(260, 100, 40);
  assert.deepEqual(await problems(), []);
  assert.match((await problems({ reservedConcurrency: 41 }))[0] ?? '', /needs a limit of 264/);
});

test('the plugin runs before `sls deploy` deploys (never on `sls package`) and stops it with the problems', async () => {
  setAccount(50, 50);
  class ServerlessError extends Error {}
  const plugin = new DeployChecks({
    service: { service: 'xks-proxy', custom: { xks: stageFile() } },
    classes: { Error: ServerlessError },
    getProvider: () => ({
      getStage: () => 'prod',
      getAwsSdkV3Config: async () => ({
        region: REGION,
        endpoint: moto.endpoint,
        credentials: { accessKeyId: 'AKIDMOTOTEST', secretAccessKey: 'moto-does-not-check-this' },
      }),
    }),
  });
  assert.deepEqual(Object.keys(plugin.hooks), ['before:deploy:deploy']);
  await assert.rejects(plugin.hooks['before:deploy:deploy'] as () => Promise<void>, (err: Error) => {
    assert.ok(err instanceof ServerlessError);
    assert.match(err.message, /needs a limit of 260/);
    return true;
  });
});
