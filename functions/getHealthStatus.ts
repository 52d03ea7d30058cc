// The GetHealthStatus Lambda function: the runtime, made in the init phase from the function's
// configuration, and GetHealthStatus's steps (operations/getHealthStatus.ts) behind the middleware chain.
import { lambdaRuntimeOptions } from './aws.ts';
import { loadConfig } from './config.ts';
import { xksHandler } from './middleware.ts';
import { getHealthStatus } from './operations/getHealthStatus.ts';
import { createRuntime } from './runtime.ts';

const runtime = await createRuntime(loadConfig(process.env), lambdaRuntimeOptions(process.env));
export const handler = xksHandler(runtime, 'GetHealthStatus', getHealthStatus(runtime.config));
