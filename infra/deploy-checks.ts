// A small Serverless plugin: before `sls deploy` changes anything, what the stack needs from the
// AWS account (region) is checked, and a deploy that would fail half-way, with a rollback, is
// refused with the numbers and the fix. Not run by `sls package` (offline, no credentials).
import { APIGatewayClient, GetAccountCommand } from '@aws-sdk/client-api-gateway';
import {
  GetAccountSettingsCommand,
  GetFunctionConcurrencyCommand,
  LambdaClient,
} from '@aws-sdk/client-lambda';
import { checkParams, FUNCTIONS, type Params } from './params.ts';
import type { Serverless } from './serverless.ts';

/** The AWS clients the checks ask, in the stage's region with the deploying credentials. */
export interface Clients {
  lambda: LambdaClient;
  apiGateway: APIGatewayClient;
}

/** Lambda keeps this much of an account's regional concurrency unreserved (Lambda quotas). */
const UNRESERVED_MINIMUM = 100;
/** Service Quotas' code of Lambda "Concurrent executions". */
const CONCURRENCY_QUOTA = 'L-B99A9384';

/**
 * Reserved concurrency: the four functions reserve 4 x reservedConcurrency, and what stays
 * unreserved must be UNRESERVED_MINIMUM or more ("decreases account's UnreservedConcurrentExecution
 * below its minimum value"). What this stage's functions reserve already is given back first.
 */
async function concurrencyProblem(p: Params, service: string, lambda: LambdaClient) {
  const { AccountLimit } = await lambda.send(new GetAccountSettingsCommand({}));
  const limit = AccountLimit?.ConcurrentExecutions;
  const unreserved = AccountLimit?.UnreservedConcurrentExecutions;
  // Lambda always gives both; the SDK's types make every field optional.
  if (limit === undefined || unreserved === undefined)
    throw new Error('Lambda GetAccountSettings: no AccountLimit');
  let ours = 0;
  for (const fn of FUNCTIONS) {
    try {
      const answer = await lambda.send(
        new GetFunctionConcurrencyCommand({ FunctionName: `${service}-${p.stage}-${fn}` }),
      );
      ours += answer.ReservedConcurrentExecutions ?? 0;
    } catch (err) {
      if (!(err instanceof Error) || err.name !== 'ResourceNotFoundException') throw err;
    }
  }
  const available = unreserved + ours;
  const wanted = FUNCTIONS.length * p.reservedConcurrency;
  const short = UNRESERVED_MINIMUM - (available - wanted);
  if (short <= 0) return undefined;
  const fits = Math.floor((available - UNRESERVED_MINIMUM) / FUNCTIONS.length);
  const needed = limit + short;
  return (
    `reservedConcurrency ${p.reservedConcurrency} reserves ${wanted} (${FUNCTIONS.length} functions) of ` +
    `this account's Lambda concurrency in ${p.region}, whose limit is ${limit} (${available} not reserved by ` +
    `other functions), and Lambda keeps ${UNRESERVED_MINIMUM} unreserved: it needs a limit of ${needed}. ` +
    (fits >= 1 ? `Set reservedConcurrency to ${fits} or less, or ask` : 'Ask') +
    ` for a higher limit: aws service-quotas request-service-quota-increase --service-code lambda ` +
    `--quota-code ${CONCURRENCY_QUOTA} --desired-value ${needed} --region ${p.region}`
  );
}

/**
 * API Gateway's access logs need the region's API Gateway CloudWatch role: without it the stage
 * fails to create. An ALB logs to S3 instead.
 */
async function cloudWatchRoleProblem(p: Params, apiGateway: APIGatewayClient) {
  if (p.frontDoor === 'alb' || p.createApiGatewayCloudWatchRole) return undefined;
  const account = await apiGateway.send(new GetAccountCommand({}));
  if (account.cloudwatchRoleArn) return undefined;
  return (
    `API Gateway has no CloudWatch Logs role in ${p.region}, and the stage's access logs need one: ` +
    `set createApiGatewayCloudWatchRole: true in deploy/params.${p.stage}.yml, or give API Gateway a role ` +
    `with the policy AmazonAPIGatewayPushToCloudWatchLogs: aws apigateway update-account --region ${p.region} ` +
    `--patch-operations op=replace,path=/cloudwatchRoleArn,value=<role ARN> (docs/deploy.md, section 5)`
  );
}

/** What stands in the way of deploying stage `p` of `service`: one message per problem. */
export async function accountProblems(p: Params, service: string, clients: Clients): Promise<string[]> {
  const problems = [
    await concurrencyProblem(p, service, clients.lambda),
    await cloudWatchRoleProblem(p, clients.apiGateway),
  ];
  return problems.filter((problem) => problem !== undefined);
}

/** What the checks read of the framework: the stage file, the stage, the deploy's credentials. */
type Checked = Pick<Serverless, 'service' | 'classes' | 'getProvider'>;

/** The plugin serverless.yml names; the framework loads it with require() and runs its hooks. */
export default class DeployChecks {
  readonly serverless: Checked;
  readonly hooks: Record<string, () => Promise<void>>;

  constructor(serverless: Checked) {
    this.serverless = serverless;
    this.hooks = { 'before:deploy:deploy': () => this.check() };
  }

  async check(): Promise<void> {
    const { service, classes } = this.serverless;
    const provider = this.serverless.getProvider('aws');
    const p = checkParams(service.custom.xks, provider.getStage());
    const config = await provider.getAwsSdkV3Config();
    const problems = await accountProblems(p, service.service, {
      lambda: new LambdaClient(config),
      apiGateway: new APIGatewayClient(config),
    });
    if (problems.length > 0) throw new classes.Error(problems.join('\n'));
  }
}
