// The AWS resources beyond the functions, computed from the stage's parameter file, for
// serverless.yml (through index.cjs): `${file(./infra/index.cjs):resources}` and friends. The
// framework calls each export with ({ resolveVariable }).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { alb } from './alb/index.ts';
import { apiGateway } from './apigateway/index.ts';
import type { Fragment } from './cfn.ts';
import { roles } from './iam.ts';
import { alarms, dashboard } from './observability.ts';
import { checkParams, configPath, type Params, ParamsError, packagedFiles } from './params.ts';
import { secretsManagerEndpoint } from './vpc.ts';

/** What the framework hands a `${file(...)}` function: the value of another variable. */
interface Variables {
  resolveVariable(address: string): Promise<unknown>;
}

/** The checked parameters of each stage, once: every export below needs them. */
const checked = new Map<string, Promise<Params>>();

async function params(resolveVariable: Variables['resolveVariable']): Promise<Params> {
  const stage = String(await resolveVariable('sls:stage'));
  let p = checked.get(stage);
  if (p === undefined) {
    p = resolveVariable('self:custom.xks').then((raw) => {
      try {
        return checkParams(raw, stage);
      } catch (err) {
        if (!(err instanceof ParamsError)) throw err;
        // The framework would print the error once per variable that needs the parameters, each
        // with a stack trace: a mistake in the stage file gets its one line instead.
        process.stderr.write(`Error: ${err.message}\n`);
        process.exit(1);
      }
    });
    checked.set(stage, p);
  }
  return p;
}

/** CloudFormation Resources and Outputs for this stage's front door and connectivity mode, only theirs. */
export async function resources({ resolveVariable }: Variables): Promise<Fragment> {
  const p = await params(resolveVariable);
  const service = String(await resolveVariable('self:service'));
  const frontDoor = p.frontDoor === 'alb' ? alb(p) : apiGateway(p);
  return {
    Resources: {
      ...roles(p, service),
      ...frontDoor.Resources,
      ...secretsManagerEndpoint(p),
      ...dashboard(p, service),
      ...alarms(p, service),
    },
    Outputs: {
      ...frontDoor.Outputs,
      XksProxyUriPaths: {
        Description: 'XksProxyUriPath of each key store, for KMS CreateCustomKeyStore',
        Value: p.keystores.map((ks) => `${ks.name}=${ks.pathPrefix}/kms/xks/v1`).join(' '),
      },
    },
  };
}

/**
 * XKS_PROXY_CONFIG: writes the proxy configuration (no secrets: their ARNs only) to the file every
 * function's package holds, and gives its path in Lambda. A file, not the JSON in the environment:
 * Lambda allows 4 KB of environment variables, a few dozen keys.
 */
export async function config({ resolveVariable }: Variables): Promise<string> {
  const p = await params(resolveVariable);
  const file = join(import.meta.dirname, '..', configPath(p.stage));
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(p.proxyConfig, null, 2)}\n`);
  // Lambda runs the function in /var/task, where its package is unpacked.
  return `/var/task/${configPath(p.stage)}`;
}

/** package.patterns: the configuration file and the files it names (Cedar policies). */
export async function packagePatterns({ resolveVariable }: Variables): Promise<string[]> {
  return packagedFiles(await params(resolveVariable));
}
