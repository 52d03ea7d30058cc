// The proxy's one boundary with AWS besides infra/ and serverless.yml: the Lambda environment's
// variables and Secrets Manager. Nothing else under functions/, local/ or layers/ names either
// (test/unit/dependencies.test.ts holds the rule).

import type { FrontDoor } from './front-door.ts';

type Env = Readonly<Record<string, string | undefined>>;

/** Whether `env` is a Lambda function's environment (set by the Lambda runtime). */
export function inLambda(env: Env): boolean {
  return env.AWS_LAMBDA_FUNCTION_NAME !== undefined;
}

/** The deployed function's front door: XKS_FRONT_DOOR, which serverless.yml sets from the stage. */
export function frontDoorOf(env: Env): FrontDoor {
  const value = env.XKS_FRONT_DOOR ?? 'apigateway';
  if (value !== 'apigateway' && value !== 'alb') {
    throw new Error(`XKS_FRONT_DOOR is apigateway or alb, not '${value}'`);
  }
  return value;
}

/**
 * What a Lambda entry file makes its runtime with (functions/runtime.ts RuntimeOptions).
 * AWS_LAMBDA_INITIALIZATION_TYPE 'on-demand': the environment is made for a request that waits for
 * its init phase (not 'provisioned-concurrency').
 */
export function lambdaRuntimeOptions(env: Env): {
  inLambda: boolean;
  frontDoor: FrontDoor;
  initOnRequestPath: boolean;
} {
  return {
    inLambda: inLambda(env),
    frontDoor: frontDoorOf(env),
    initOnRequestPath: env.AWS_LAMBDA_INITIALIZATION_TYPE === 'on-demand',
  };
}

/** The Lambda function's memory in MB, which sets its CPU share; NaN outside Lambda. */
export function lambdaMemoryMb(env: Env): number {
  return Number(env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE);
}

/**
 * A Secrets Manager secret's SecretString. What fails names the secret and why (the SDK's error),
 * never its value: at start-up it is the error of the init phase.
 */
export async function readSecret(id: string): Promise<string> {
  // Loaded only when a secret is configured: local runs never load the AWS SDK.
  const { getSecret } = await import('@aws-lambda-powertools/parameters/secrets');
  let value: unknown;
  try {
    value = await getSecret(id, { forceFetch: true });
  } catch (error) {
    const sdkError = ((error as Error).cause ?? error) as Error;
    throw new Error(`Cannot read the secret ${id}: ${sdkError.name}: ${sdkError.message}`, { cause: error });
  }
  if (typeof value !== 'string') throw new Error(`The secret ${id} has no SecretString`);
  return value;
}
