// The AWS resources beyond the functions, computed from the stage's parameter file, for
// serverless.yml: `${file(./infra/index.cjs):resources}` and friends. Loaded by the Serverless
// Framework (osls, v3 or v4) with require(); each export gets ({ resolveVariable }).
'use strict';

const { mkdirSync, writeFileSync } = require('node:fs');
const { dirname, join } = require('node:path');
const { api } = require('./api.cjs');
const { connectivity } = require('./connectivity.cjs');
const { roles } = require('./iam.cjs');
const { alarms, dashboard } = require('./observability.cjs');
const { checkParams, configPath, packagedFiles, ParamsError } = require('./params.cjs');

/** The checked parameters of each stage, once: every export below needs them. */
const checked = new Map();

async function params(resolveVariable) {
  const stage = await resolveVariable('sls:stage');
  if (!checked.has(stage)) {
    checked.set(
      stage,
      resolveVariable('self:custom.xks').then((raw) => {
        try {
          return checkParams(raw, stage);
        } catch (err) {
          if (!(err instanceof ParamsError)) throw err;
          // The framework would print the error once per variable that needs the parameters, each
          // with a stack trace: a mistake in the stage file gets its one line instead.
          process.stderr.write(`Error: ${err.message}\n`);
          process.exit(1);
        }
      }),
    );
  }
  return checked.get(stage);
}

/** CloudFormation Resources and Outputs for this stage's connectivity mode, only that mode's. */
async function resources({ resolveVariable }) {
  const p = await params(resolveVariable);
  const service = await resolveVariable('self:service');
  const mode = connectivity(p);
  return {
    Resources: {
      ...roles(p, service),
      ...api(p, mode.restApi),
      ...mode.resources,
      ...dashboard(p, service),
      ...alarms(p, service),
    },
    Outputs: {
      ...mode.outputs,
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
async function config({ resolveVariable }) {
  const p = await params(resolveVariable);
  const file = join(__dirname, '..', configPath(p.stage));
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(p.proxyConfig, null, 2)}\n`);
  // Lambda runs the function in /var/task, where its package is unpacked.
  return `/var/task/${configPath(p.stage)}`;
}

/** package.patterns: the configuration file and the files it names (Cedar policies). */
async function packagePatterns({ resolveVariable }) {
  return packagedFiles(await params(resolveVariable));
}

module.exports = { resources, config, packagePatterns };
