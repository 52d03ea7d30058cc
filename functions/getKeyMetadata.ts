// The GetKeyMetadata Lambda function: the runtime, made in the init phase from the function's
// configuration, and GetKeyMetadata's steps (operations/getKeyMetadata.ts) behind the middleware chain.
import { lambdaRuntimeOptions } from './aws.ts';
import { loadConfig } from './config.ts';
import { xksHandler } from './middleware.ts';
import { getKeyMetadata } from './operations/getKeyMetadata.ts';
import { createRuntime } from './runtime.ts';

const runtime = await createRuntime(loadConfig(process.env), lambdaRuntimeOptions(process.env));
export const handler = xksHandler(runtime, 'GetKeyMetadata', getKeyMetadata);
