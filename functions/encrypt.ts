// The Encrypt Lambda function: the runtime, made in the init phase from the function's
// configuration, and Encrypt's steps (operations/encrypt.ts) behind the middleware chain.
import { lambdaRuntimeOptions } from './aws.ts';
import { loadConfig } from './config.ts';
import { xksHandler } from './middleware.ts';
import { encrypt } from './operations/encrypt.ts';
import { createRuntime } from './runtime.ts';

const runtime = await createRuntime(loadConfig(process.env), lambdaRuntimeOptions(process.env));
export const handler = xksHandler(runtime, 'Encrypt', encrypt);
