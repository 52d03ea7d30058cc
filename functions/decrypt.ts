// The Decrypt Lambda function: the runtime, made in the init phase from the function's
// configuration, and Decrypt's steps (operations/decrypt.ts) behind the middleware chain.
import { lambdaRuntimeOptions } from './aws.ts';
import { loadConfig } from './config.ts';
import { xksHandler } from './middleware.ts';
import { decrypt } from './operations/decrypt.ts';
import { createRuntime } from './runtime.ts';

const runtime = await createRuntime(loadConfig(process.env), lambdaRuntimeOptions(process.env));
export const handler = xksHandler(runtime, 'Decrypt', decrypt);
