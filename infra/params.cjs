// The stage's parameter file (deploy/params.<stage>.yml), checked once, with defaults filled in.
// CommonJS: the Serverless Framework (v3, osls and v4) loads ${file(...)} JavaScript with require().
'use strict';

const FUNCTIONS = ['getHealthStatus', 'getKeyMetadata', 'encrypt', 'decrypt'];

/** Serverless's logical id of a function: getKeyMetadata -> GetKeyMetadataLambdaFunction. */
const functionLogicalId = (name) => `${name[0].toUpperCase()}${name.slice(1)}LambdaFunction`;
/** The alias Serverless creates for provisioned concurrency. */
const aliasLogicalId = (name) => `${name[0].toUpperCase()}${name.slice(1)}ProvConcLambdaAlias`;
const roleLogicalId = (name) => `${name[0].toUpperCase()}${name.slice(1)}Role`;

class ParamsError extends Error {}

function fail(message) {
  throw new ParamsError(`deploy/params: ${message}`);
}

function need(value, name) {
  if (value === undefined || value === null || value === '') fail(`${name} is required`);
  return value;
}

function list(value, name, min = 1) {
  if (!Array.isArray(value) || value.length < min) fail(`${name} must list at least ${min}`);
  return value;
}

/** A policy set that does not parse fails the packaging, not the functions' start-up. */
function checkPolicies(file, i) {
  const cedar = require('@cedar-policy/cedar-wasm/nodejs');
  const text = require('node:fs').readFileSync(require('node:path').join(__dirname, '..', file), 'utf8');
  const answer = cedar.checkParsePolicySet({ staticPolicies: text });
  if (answer.type !== 'success') {
    fail(
      `keystores[${i}].policyFile ${file} does not parse: ${answer.errors.map((e) => e.message).join('; ')}`,
    );
  }
}

/** The parameters with defaults, or a clear error naming what is missing. */
function checkParams(raw, stage) {
  const p = { ...raw };
  need(p.region, 'region');
  p.runtime = p.runtime ?? 'nodejs24.x';
  if (!['nodejs24.x', 'nodejs22.x'].includes(p.runtime)) fail('runtime must be nodejs24.x or nodejs22.x');
  p.architecture = p.architecture ?? 'x86_64';
  if (!['x86_64', 'arm64'].includes(p.architecture)) fail('architecture must be x86_64 or arm64');
  p.memorySize = p.memorySize ?? 1024;
  p.timeout = p.timeout ?? 5;
  p.reservedConcurrency = p.reservedConcurrency ?? 40;
  p.provisionedConcurrency = p.provisionedConcurrency ?? 0;
  p.logRetentionInDays = p.logRetentionInDays ?? 365;
  p.secretsCacheSeconds = p.secretsCacheSeconds ?? 300;
  need(p.layerZip, 'layerZip');
  p.vpc = need(p.vpc, 'vpc');
  need(p.vpc.vpcId, 'vpc.vpcId');
  list(p.vpc.subnetIds, 'vpc.subnetIds');
  list(p.vpc.securityGroupIds, 'vpc.securityGroupIds');
  p.hsm = need(p.hsm, 'hsm');
  need(p.hsm.modulePath, 'hsm.modulePath');
  need(p.hsm.tokenLabel, 'hsm.tokenLabel');
  need(p.hsm.pinSecretArn, 'hsm.pinSecretArn (the PIN lives in Secrets Manager, never in the template)');
  if (p.hsm.pin !== undefined) fail('hsm.pin: put the PIN in Secrets Manager and give hsm.pinSecretArn');
  p.hsm.healthCheckKeyLabel = p.hsm.healthCheckKeyLabel ?? 'xks-health-check';
  p.hsm.environment = p.hsm.environment ?? {};
  for (const name of Object.keys(p.hsm.environment)) {
    // The vendor library's own variables only: never the proxy's, Powertools' (LOG_EVENT would log
    // bodies, i.e. plaintext) or the platform's.
    if (/^(XKS_|POWERTOOLS_|AWS_|LAMBDA_|NODE_OPTIONS$)/.test(name))
      fail(`hsm.environment.${name} is reserved`);
  }
  list(p.keystores, 'keystores');
  for (const [i, ks] of p.keystores.entries()) {
    need(ks.name, `keystores[${i}].name`);
    if (ks.pathPrefix === undefined) fail(`keystores[${i}].pathPrefix is required ('' for none)`);
    if (ks.credentials !== undefined) {
      fail(`keystores[${i}].credentials: put them in Secrets Manager and give credentialsSecretArn`);
    }
    need(ks.credentialsSecretArn, `keystores[${i}].credentialsSecretArn`);
    ks.keys = ks.keys ?? [];
    if (ks.throttle !== undefined) {
      const { rateLimit, burstLimit } = ks.throttle;
      if (!(rateLimit > 0) || !Number.isInteger(burstLimit) || burstLimit < 1) {
        fail(`keystores[${i}].throttle needs rateLimit > 0 and an integer burstLimit >= 1`);
      }
    }
    if (ks.policyFile !== undefined && !/^policies\/[\w.-]+\.cedar$/.test(ks.policyFile)) {
      fail(
        `keystores[${i}].policyFile must be a policies/<name>.cedar file (it is packaged with the functions)`,
      );
    }
    if (
      ks.policyFile !== undefined &&
      !require('node:fs').existsSync(require('node:path').join(__dirname, '..', ks.policyFile))
    ) {
      fail(`keystores[${i}].policyFile ${ks.policyFile} does not exist`);
    }
    if (ks.policyFile !== undefined) checkPolicies(ks.policyFile, i);
  }
  p.throttling = { rateLimit: 2000, burstLimit: 1000, ...p.throttling };
  if (!['vpc-endpoint-service', 'public'].includes(p.connectivity)) {
    fail('connectivity must be vpc-endpoint-service or public');
  }
  if (p.connectivity === 'public') {
    p.public = need(p.public, 'public');
    need(p.public.domainName, 'public.domainName');
    need(p.public.certificateArn, 'public.certificateArn');
  } else {
    // KMS needs its own VPC endpoint service (and private DNS name) for each external key store.
    if (p.keystores.length !== 1)
      fail('connectivity vpc-endpoint-service serves exactly one key store per stage');
    p.vpcEndpointService = need(p.vpcEndpointService, 'vpcEndpointService');
    need(p.vpcEndpointService.privateDnsName, 'vpcEndpointService.privateDnsName');
    need(p.vpcEndpointService.certificateArn, 'vpcEndpointService.certificateArn');
    list(p.vpcEndpointService.nlbSubnetIds, 'vpcEndpointService.nlbSubnetIds (two AZs at least)', 2);
  }
  p.alarms = p.alarms ?? {};
  if (p.provisionedConcurrency > p.reservedConcurrency) {
    fail('provisionedConcurrency cannot exceed reservedConcurrency');
  }
  p.stage = stage;
  return p;
}

/**
 * The proxy's configuration (functions/config.ts) for the XKS_PROXY_CONFIG_JSON variable: no
 * secret in it, only where the secrets are.
 */
function proxyConfig(p) {
  const mtls = p.connectivity === 'public' ? p.public.mtls : undefined;
  const config = {
    hsm: {
      modulePath: p.hsm.modulePath,
      ...(p.hsm.libraryParameters ? { libraryParameters: p.hsm.libraryParameters } : {}),
      tokenLabel: p.hsm.tokenLabel,
      pinSecretArn: p.hsm.pinSecretArn,
      healthCheckKeyLabel: p.hsm.healthCheckKeyLabel,
    },
    secrets: { cacheSeconds: p.secretsCacheSeconds },
    proxy: { fleetSize: Math.max(1, p.provisionedConcurrency) },
    keystores: p.keystores.map((ks) => ({
      name: ks.name,
      pathPrefix: ks.pathPrefix,
      credentialsSecretArn: ks.credentialsSecretArn,
      keys: ks.keys,
      ...(ks.keyPattern ? { keyPattern: ks.keyPattern } : {}),
      ...(ks.allowedRegions ? { allowedRegions: ks.allowedRegions } : {}),
      // Relative to the function's working directory, /var/task, where the policies are packaged.
      ...(ks.policyFile ? { policyFile: ks.policyFile } : {}),
    })),
  };
  if (mtls) {
    config.clientCertificate = {
      allowedCommonNames: mtls.allowedCommonNames ?? [`cks.kms.${p.region}.amazonaws.com`],
    };
  }
  const json = JSON.stringify(config);
  // Lambda allows 4 KB of environment variables in all.
  if (json.length > 3500) {
    fail(`the proxy configuration is ${json.length} characters; use keyPattern instead of long key lists`);
  }
  return json;
}

module.exports = {
  FUNCTIONS,
  functionLogicalId,
  aliasLogicalId,
  roleLogicalId,
  checkParams,
  proxyConfig,
  ParamsError,
};
