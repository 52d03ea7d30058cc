// The AWS resources beyond the functions, computed from the stage's parameter file, for
// serverless.yml: `${file(./infra/index.cjs):resources}` and friends. Loaded by the Serverless
// Framework (osls, v3 or v4) with require(); each export gets ({ resolveVariable }).
'use strict';

const { api } = require('./api.cjs');
const { connectivity } = require('./connectivity.cjs');
const { roles } = require('./iam.cjs');
const { alarms, dashboard } = require('./observability.cjs');
const { checkParams, proxyConfig } = require('./params.cjs');

async function params(resolveVariable) {
  const [raw, stage] = await Promise.all([resolveVariable('self:custom.xks'), resolveVariable('sls:stage')]);
  return checkParams(raw, stage);
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

/** The proxy configuration for XKS_PROXY_CONFIG_JSON (no secrets: their ARNs only). */
async function config({ resolveVariable }) {
  return proxyConfig(await params(resolveVariable));
}

module.exports = { resources, config };
