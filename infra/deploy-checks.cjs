// A small Serverless plugin: before `sls deploy` changes anything, what the stack needs from the
// AWS account (region) is checked, and a deploy that would fail half-way, with a rollback, is
// refused with the numbers and the fix. Not run by `sls package` (offline, no credentials).
'use strict';

const { APIGatewayClient, GetAccountCommand } = require('@aws-sdk/client-api-gateway');
const {
  GetAccountSettingsCommand,
  GetFunctionConcurrencyCommand,
  LambdaClient,
} = require('@aws-sdk/client-lambda');
const { FUNCTIONS, checkParams } = require('./params.cjs');

/** Lambda keeps this much of an account's regional concurrency unreserved (Lambda quotas). */
const UNRESERVED_MINIMUM = 100;
/** Service Quotas' code of Lambda "Concurrent executions". */
const CONCURRENCY_QUOTA = 'L-B99A9384';

/**
 * Reserved concurrency: the four functions reserve 4 x reservedConcurrency, and what stays
 * unreserved must be UNRESERVED_MINIMUM or more ("decreases account's UnreservedConcurrentExecution
 * below its minimum value"). What this stage's functions reserve already is given back first.
 */
async function concurrencyProblem(p, service, lambda) {
  const { AccountLimit } = await lambda.send(new GetAccountSettingsCommand({}));
  const limit = AccountLimit.ConcurrentExecutions;
  let ours = 0;
  for (const fn of FUNCTIONS) {
    try {
      const answer = await lambda.send(
        new GetFunctionConcurrencyCommand({ FunctionName: `${service}-${p.stage}-${fn}` }),
      );
      ours += answer.ReservedConcurrentExecutions ?? 0;
    } catch (err) {
      if (err.name !== 'ResourceNotFoundException') throw err;
    }
  }
  const available = AccountLimit.UnreservedConcurrentExecutions + ours;
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

/** Access logs need the region's API Gateway CloudWatch role: without it the stage fails to create. */
async function cloudWatchRoleProblem(p, apiGateway) {
  if (p.createApiGatewayCloudWatchRole) return undefined;
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
async function accountProblems(p, service, clients) {
  const problems = [
    await concurrencyProblem(p, service, clients.lambda),
    await cloudWatchRoleProblem(p, clients.apiGateway),
  ];
  return problems.filter((problem) => problem !== undefined);
}

class DeployChecks {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'before:deploy:deploy': () => this.check() };
  }

  async check() {
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

module.exports = DeployChecks;
module.exports.accountProblems = accountProblems;
