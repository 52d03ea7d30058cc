// The stage's parameter file (deploy/params.<stage>.yml), checked once, with defaults filled in.
// It has two parts: the deployment settings (DEPLOY_SCHEMA below: region, VPC, concurrency,
// connectivity, ...) and the proxy's own configuration (the top-level sections of
// functions/config.ts's SCHEMA: hsm, keystores, secrets, ...), which is checked by the parser the
// functions use at start-up and reaches them unchanged, as a JSON file packaged with each function.
// CommonJS: the Serverless Framework (v3, osls and v4) loads ${file(...)} JavaScript with require().
'use strict';

const { readFileSync, existsSync } = require('node:fs');
const { join } = require('node:path');
const { Ajv } = require('ajv');
const { SCHEMA, parseConfig, ConfigError } = require('../functions/config.ts');

const ROOT = join(__dirname, '..');
const FUNCTIONS = ['getHealthStatus', 'getKeyMetadata', 'encrypt', 'decrypt'];

/** Serverless's logical id of a function: getKeyMetadata -> GetKeyMetadataLambdaFunction. */
const functionLogicalId = (name) => `${name[0].toUpperCase()}${name.slice(1)}LambdaFunction`;
/** The alias Serverless creates for provisioned concurrency. */
const aliasLogicalId = (name) => `${name[0].toUpperCase()}${name.slice(1)}ProvConcLambdaAlias`;
const roleLogicalId = (name) => `${name[0].toUpperCase()}${name.slice(1)}Role`;

/** The sections of the stage file that are the proxy's configuration. */
const PROXY_SECTIONS = Object.keys(SCHEMA.properties);

/** Where the packaged configuration is, relative to the service folder and to /var/task. */
const configPath = (stage) => `dist/xks-proxy-config/${stage}.json`;

/** CloudWatch Logs retention periods (AWS::Logs::LogGroup RetentionInDays). */
const RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];
const text = { type: 'string', minLength: 1 };
const ids = { type: 'array', minItems: 1, items: text };

/** The deployment settings; the proxy's sections are checked by functions/config.ts. */
const DEPLOY_SCHEMA = {
  type: 'object',
  required: ['region', 'layerZip', 'vpc', 'connectivity', 'hsm', 'keystores'],
  additionalProperties: false,
  properties: {
    ...Object.fromEntries(PROXY_SECTIONS.map((name) => [name, true])),
    region: { type: 'string', pattern: '^[a-z]{2}(-[a-z]+)+-[0-9]$' },
    runtime: { enum: ['nodejs24.x', 'nodejs22.x'], default: 'nodejs24.x' },
    architecture: { enum: ['x86_64', 'arm64'], default: 'x86_64' },
    memorySize: { type: 'integer', minimum: 128, maximum: 10_240, default: 1024 },
    timeout: { type: 'integer', minimum: 1, maximum: 900, default: 5 },
    reservedConcurrency: { type: 'integer', minimum: 1, default: 40 },
    provisionedConcurrency: { type: 'integer', minimum: 0, default: 0 },
    logRetentionInDays: { enum: RETENTION_DAYS, default: 365 },
    layerZip: text,
    vpc: {
      type: 'object',
      required: ['vpcId', 'subnetIds', 'securityGroupIds'],
      additionalProperties: false,
      properties: {
        vpcId: text,
        subnetIds: ids,
        securityGroupIds: ids,
        secretsManagerEndpoint: { type: 'boolean' },
      },
    },
    secretsKmsKeyArn: text,
    createApiGatewayCloudWatchRole: { type: 'boolean', default: false },
    throttling: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        rateLimit: { type: 'number', exclusiveMinimum: 0, default: 2000 },
        burstLimit: { type: 'integer', minimum: 1, default: 1000 },
      },
    },
    connectivity: { enum: ['vpc-endpoint-service', 'public'] },
    vpcEndpointService: {
      type: 'object',
      required: ['privateDnsName', 'certificateArn', 'nlbSubnetIds'],
      additionalProperties: false,
      properties: {
        privateDnsName: text,
        certificateArn: text,
        nlbSubnetIds: { ...ids, minItems: 2 },
      },
    },
    public: {
      type: 'object',
      required: ['domainName', 'certificateArn'],
      additionalProperties: false,
      properties: {
        domainName: text,
        certificateArn: text,
        mtls: {
          type: 'object',
          required: ['truststoreUri'],
          additionalProperties: false,
          properties: { truststoreUri: { type: 'string', pattern: '^s3://.+/.+' }, truststoreVersion: text },
        },
      },
    },
    alarms: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { snsTopicArn: text, kmsCustomKeyStoreId: text },
    },
  },
};
const validateDeploy = new Ajv({ useDefaults: true, strict: true, strictRequired: false }).compile(
  DEPLOY_SCHEMA,
);

/** Names a stage file may use for a setting named otherwise: the "not a known setting" message says which. */
const MOVED = {
  secretsCacheSeconds: 'secrets.cacheSeconds',
  'public.mtls.allowedCommonNames': 'clientCertificate.allowedCommonNames',
};

/** IAM permissions the functions need for what the configuration names by ARN, by setting name. */
const READ_PERMISSIONS = [
  { suffix: 'SecretArn', action: 'secretsmanager:GetSecretValue' },
  { suffix: 'ParameterArn', action: 'ssm:GetParameter' },
];

class ParamsError extends Error {}

const isMapping = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

/** `a/0/b` (a JSON pointer) as the stage file reads it: `a[0].b`. */
function fieldOf(pointer) {
  return pointer
    .split('/')
    .filter(Boolean)
    .map((part, i) => (/^\d+$/.test(part) ? `[${part}]` : `${i === 0 ? '' : '.'}${part}`))
    .join('');
}

/** Every [field, value] of a configuration, depth first: `keystores[0].credentialsSecretArn`. */
function* fields(value, path = '') {
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) yield* fields(item, `${path}[${i}]`);
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      const field = path === '' ? key : `${path}.${key}`;
      yield [field, item];
      yield* fields(item, field);
    }
  }
}

/** The values of every setting whose name ends with `suffix` (e.g. every ...SecretArn). */
function valuesOf(config, suffix) {
  const found = [];
  for (const [field, value] of fields(config)) {
    if (field.endsWith(suffix) && typeof value === 'string') found.push(value);
  }
  return [...new Set(found)];
}

/** The actions on the resources the proxy configuration names: [{ action, resources }]. */
function readPermissions(config) {
  return READ_PERMISSIONS.map(({ suffix, action }) => ({
    action,
    resources: valuesOf(config, suffix),
  })).filter((p) => p.resources.length > 0);
}

/** A policy set that does not parse fails the packaging, not the functions' start-up. */
function checkPolicies(fail, field, file) {
  if (!/^policies\/[\w.-]+\.cedar$/.test(file)) {
    fail(`${field} must be a policies/<name>.cedar file (it is packaged with the functions)`);
  }
  if (!existsSync(join(ROOT, file))) fail(`${field} ${file} does not exist`);
  const cedar = require('@cedar-policy/cedar-wasm/nodejs');
  const answer = cedar.checkParsePolicySet({ staticPolicies: readFileSync(join(ROOT, file), 'utf8') });
  if (answer.type !== 'success') {
    fail(`${field} ${file} does not parse: ${answer.errors.map((e) => e.message).join('; ')}`);
  }
}

/** The only files a deployed proxy reads from its package (none holds a secret), with their checks. */
const PACKAGED_FILES = { policyFile: checkPolicies };

/** The proxy schema's part for a field, e.g. `keystores[0].credentialsSecretArn`; undefined if none. */
function schemaOf(field) {
  let schema = SCHEMA;
  for (const name of field.replace(/\[\d+\]/g, '').split('.')) {
    schema = (schema?.items ?? schema)?.properties?.[name];
  }
  return schema;
}

/**
 * What a deployed proxy may not have, whatever the proxy itself accepts: secrets inline (they would
 * sit in the template and the package), and files other than PACKAGED_FILES (the function's disk
 * holds only its package).
 */
function checkDeployable(fail, config) {
  for (const [field, value] of fields(config)) {
    const name = field.split('.').at(-1);
    if (name === 'pin') fail(`${field}: put the PIN in Secrets Manager and give pinSecretArn`);
    if (name === 'credentials') fail(`${field}: put them in Secrets Manager and give credentialsSecretArn`);
    if (Object.hasOwn(PACKAGED_FILES, name)) PACKAGED_FILES[name](fail, field, value);
    else if (/(^f|F)ile$/.test(name)) {
      const instead = field.replace(/(^|\.)file$/, '$1secretArn').replace(/File$/, 'SecretArn');
      const hint = schemaOf(instead)
        ? `give ${instead.split('.').at(-1)} (Secrets Manager) instead`
        : 'the setting is for the local proxy';
      fail(`${field}: a deployed function reads no file but its package; ${hint}`);
    }
  }
}

/**
 * The parameters with defaults, and the proxy configuration to package (`proxyConfig`), or a
 * ParamsError whose one-line message names the file and the field.
 */
function checkParams(raw, stage) {
  const file = `deploy/params.${stage}.yml`;
  const fail = (message) => {
    throw new ParamsError(`${file}: ${message}`);
  };
  if (!isMapping(raw)) fail('not a YAML mapping');
  const p = structuredClone(raw);
  const hsmEnvironment = p.hsm?.environment ?? {};
  if (isMapping(p.hsm)) delete p.hsm.environment;
  if (!validateDeploy(p)) {
    const error = validateDeploy.errors[0];
    const at = fieldOf(error.instancePath);
    const { additionalProperty, missingProperty } = error.params;
    if (additionalProperty !== undefined) {
      const field = at ? `${at}.${additionalProperty}` : additionalProperty;
      fail(`${field} is not a known setting${MOVED[field] ? ` (the setting is ${MOVED[field]})` : ''}`);
    }
    if (missingProperty !== undefined) fail(`${at ? `${at}.` : ''}${missingProperty} is required`);
    fail(`${at} ${error.message}`);
  }
  if (!isMapping(hsmEnvironment)) fail('hsm.environment must map variable names to values');
  for (const name of Object.keys(hsmEnvironment)) {
    // The vendor library's own variables only: never the proxy's, Powertools' (LOG_EVENT would log
    // bodies, i.e. plaintext) or the platform's.
    if (/^(XKS_|POWERTOOLS_|AWS_|LAMBDA_|NODE_OPTIONS$)/.test(name))
      fail(`hsm.environment.${name} is reserved`);
  }

  const config = Object.fromEntries(PROXY_SECTIONS.filter((s) => p[s] !== undefined).map((s) => [s, p[s]]));
  checkDeployable(fail, config);
  if (p.hsm?.pinSecretArn === undefined)
    fail('hsm.pinSecretArn is required (the PIN lives in Secrets Manager)');
  for (const [i, ks] of (Array.isArray(p.keystores) ? p.keystores : []).entries()) {
    if (ks?.credentialsSecretArn === undefined) fail(`keystores[${i}].credentialsSecretArn is required`);
  }

  const mtls = p.connectivity === 'public' ? p.public?.mtls : undefined;
  if (config.clientCertificate !== undefined && mtls === undefined) {
    fail('clientCertificate needs mutual TLS: connectivity public with public.mtls');
  }
  // Derived from the deployment, unless the stage file says otherwise.
  if (config.proxy === undefined || isMapping(config.proxy)) {
    config.proxy = { fleetSize: Math.max(1, p.provisionedConcurrency), ...config.proxy };
  }
  if (mtls && config.clientCertificate === undefined) {
    config.clientCertificate = { allowedCommonNames: [`cks.kms.${p.region}.amazonaws.com`] };
  }
  try {
    // The functions' own parser, as it runs in Lambda: what it refuses here would stop every start-up.
    parseConfig(config, { AWS_LAMBDA_FUNCTION_NAME: `xks-proxy-${stage}` });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // "Invalid XKS proxy configuration: /keystores/0/keys ...": the field as the stage file names it.
    fail(err.message.replace(/^[^:]*: /, '').replace(/^\/\S*/, fieldOf));
  }

  if (p.connectivity === 'public' && p.public === undefined) fail('public is required (connectivity public)');
  if (p.connectivity === 'vpc-endpoint-service') {
    if (p.vpcEndpointService === undefined)
      fail('vpcEndpointService is required (connectivity vpc-endpoint-service)');
    // KMS needs its own VPC endpoint service (and private DNS name) for each external key store.
    if (config.keystores.length !== 1)
      fail('connectivity vpc-endpoint-service serves exactly one key store per stage');
  }
  if (p.provisionedConcurrency > p.reservedConcurrency) {
    fail('provisionedConcurrency cannot exceed reservedConcurrency');
  }
  p.hsm = { ...p.hsm, environment: hsmEnvironment };
  p.stage = stage;
  p.proxyConfig = config;
  return p;
}

/** The files each function's package holds besides its code: the configuration and the files it names. */
function packagedFiles(p) {
  const named = [...fields(p.proxyConfig)]
    .filter(([field]) => Object.hasOwn(PACKAGED_FILES, field.split('.').at(-1)))
    .map(([, value]) => value);
  return [configPath(p.stage), ...new Set(named)];
}

module.exports = {
  FUNCTIONS,
  DEPLOY_SCHEMA,
  functionLogicalId,
  aliasLogicalId,
  roleLogicalId,
  checkParams,
  configPath,
  packagedFiles,
  readPermissions,
  ParamsError,
};
