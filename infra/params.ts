// The stage's parameter file (deploy/params.<stage>.yml), checked once, with defaults filled in.
// It has two parts: the deployment settings (DEPLOY_SCHEMA below: region, VPC, concurrency,
// connectivity, ...) and the proxy's own configuration (the top-level sections of
// functions/config.ts's SCHEMA: hsm, keystores, secrets, ...), which is checked by the parser the
// functions use at start-up and reaches them unchanged, as a JSON file packaged with each function.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import {
  ConfigError,
  type KeystoreConfig,
  type ProxyConfig,
  parseConfig,
  SCHEMA,
} from '../functions/config.ts';
import { type GetAtt, getAtt, type Ref, ref } from './cfn.ts';

const ROOT = join(import.meta.dirname, '..');
export const FUNCTIONS = ['getHealthStatus', 'getKeyMetadata', 'encrypt', 'decrypt'] as const;
/** The name of a function in serverless.yml. */
export type FunctionName = (typeof FUNCTIONS)[number];

const capitalized = (name: string) => `${name.charAt(0).toUpperCase()}${name.slice(1)}`;
/** Serverless's logical id of a function: getKeyMetadata -> GetKeyMetadataLambdaFunction. */
export const functionLogicalId = (name: FunctionName) => `${capitalized(name)}LambdaFunction`;
/** The alias Serverless creates for provisioned concurrency. */
export const aliasLogicalId = (name: FunctionName) => `${capitalized(name)}ProvConcLambdaAlias`;
export const roleLogicalId = (name: FunctionName) => `${capitalized(name)}Role`;
/** What a front door invokes: the provisioned-concurrency alias when there is one, else the function. */
export const invokeTarget = (p: { provisionedConcurrency: number }, name: FunctionName): Ref | GetAtt =>
  p.provisionedConcurrency > 0 ? ref(aliasLogicalId(name)) : getAtt(functionLogicalId(name), 'Arn');

/** The sections of the stage file that are the proxy's configuration. */
const PROXY_SECTIONS = Object.keys(SCHEMA.properties);

/** Where the packaged configuration is, relative to the service folder and to /var/task. */
export const configPath = (stage: string) => `dist/xks-proxy-config/${stage}.json`;

/** A stage file's field that may hold anything (parsed YAML), until a schema has checked it. */
type Unchecked = Record<string, unknown>;

/**
 * The proxy's part of a stage file, as the functions' parser accepted it: the parser's defaults
 * are filled in by each function at start-up, not here, so every field may be absent but the key
 * stores.
 */
export type DeployedConfig = Optional<Omit<ProxyConfig, 'keystores'>> & { keystores: KeystoreConfig[] };
type Optional<T> =
  T extends Array<infer Item>
    ? Array<Optional<Item>>
    : T extends object
      ? { [K in keyof T]?: Optional<T[K]> }
      : T;

export interface PublicSettings {
  domainName: string;
  certificateArn: string;
  mtls?: { truststoreUri: string; truststoreVersion?: string };
}
export interface VpcEndpointServiceSettings {
  privateDnsName: string;
  certificateArn: string;
  nlbSubnetIds: string[];
}
/** The Application Load Balancer of frontDoor alb (infra/alb/). */
export interface AlbSettings {
  /** Its subnets: public ones for connectivity public; the NLB's by default otherwise. */
  subnetIds?: string[];
  /** The S3 bucket of its access logs (and, with mutual TLS, connection logs). */
  accessLogBucket: string;
  accessLogPrefix?: string;
}

/** The deployment settings of a stage file, as DEPLOY_SCHEMA checks them, with its defaults. */
export interface DeploySettings {
  region: string;
  runtime: 'nodejs24.x' | 'nodejs22.x';
  architecture: 'x86_64' | 'arm64';
  memorySize: number;
  timeout: number;
  reservedConcurrency: number;
  provisionedConcurrency: number;
  logRetentionInDays: number;
  layerZip: string;
  vpc: { vpcId: string; subnetIds: string[]; securityGroupIds: string[]; secretsManagerEndpoint?: boolean };
  secretsKmsKeyArn?: string;
  createApiGatewayCloudWatchRole: boolean;
  throttling: { rateLimit: number; burstLimit: number };
  alarms: { snsTopicArn?: string; kmsCustomKeyStoreId?: string };
  connectivity: 'public' | 'vpc-endpoint-service';
  public?: PublicSettings;
  vpcEndpointService?: VpcEndpointServiceSettings;
  frontDoor: 'apigateway' | 'alb';
  alb?: AlbSettings;
}

/**
 * A stage's checked parameters: its deployment settings, with the section of its connectivity
 * mode; the proxy configuration to package; the stage's name.
 */
export type Params = Omit<DeploySettings, 'connectivity' | 'frontDoor' | 'alb'> & {
  stage: string;
  /** The vendor library's environment variables (serverless.yml gives them to every function). */
  hsm: { environment: Unchecked };
  keystores: KeystoreConfig[];
  proxyConfig: DeployedConfig;
} & (
    | { connectivity: 'public'; public: PublicSettings }
    | { connectivity: 'vpc-endpoint-service'; vpcEndpointService: VpcEndpointServiceSettings }
  ) &
  ({ frontDoor: 'apigateway' } | { frontDoor: 'alb'; alb: AlbSettings });
/** The parameters of a stage in one connectivity mode. */
export type ParamsOf<Mode extends Params['connectivity']> = Extract<Params, { connectivity: Mode }>;
/** The parameters of a stage behind one front door. */
export type ParamsBehind<Door extends Params['frontDoor']> = Extract<Params, { frontDoor: Door }>;

/** CloudWatch Logs retention periods (AWS::Logs::LogGroup RetentionInDays). */
const RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];
const text = { type: 'string', minLength: 1 };
const ids = { type: 'array', minItems: 1, items: text };

/** The deployment settings; the proxy's sections are checked by functions/config.ts. */
export const DEPLOY_SCHEMA = {
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
    frontDoor: { enum: ['apigateway', 'alb'], default: 'apigateway' },
    alb: {
      type: 'object',
      required: ['accessLogBucket'],
      additionalProperties: false,
      properties: {
        subnetIds: { ...ids, minItems: 2 },
        accessLogBucket: { type: 'string', pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$' },
        // ELB adds `AWSLogs/...` after the prefix itself.
        accessLogPrefix: { type: 'string', pattern: '^(?!.*AWSLogs)[^/].*$' },
      },
    },
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
const MOVED: Record<string, string> = {
  secretsCacheSeconds: 'secrets.cacheSeconds',
  'public.mtls.allowedCommonNames': 'clientCertificate.allowedCommonNames',
};

/** IAM permissions the functions need for what the configuration names by ARN, by setting name. */
const READ_PERMISSIONS = [
  { suffix: 'SecretArn', action: 'secretsmanager:GetSecretValue' },
  { suffix: 'ParameterArn', action: 'ssm:GetParameter' },
];

export class ParamsError extends Error {}

/** Refuses the stage file with a message naming the field. */
type Fail = (message: string) => never;

const isMapping = (value: unknown): value is Unchecked =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/** `a/0/b` (a JSON pointer) as the stage file reads it: `a[0].b`. */
function fieldOf(pointer: string): string {
  return pointer
    .split('/')
    .filter(Boolean)
    .map((part, i) => (/^\d+$/.test(part) ? `[${part}]` : `${i === 0 ? '' : '.'}${part}`))
    .join('');
}

/** Every [field, value] of a configuration, depth first: `keystores[0].credentialsSecretArn`. */
function* fields(value: unknown, path = ''): Generator<[string, unknown]> {
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
function valuesOf(config: DeployedConfig, suffix: string): string[] {
  const found: string[] = [];
  for (const [field, value] of fields(config)) {
    if (field.endsWith(suffix) && typeof value === 'string') found.push(value);
  }
  return [...new Set(found)];
}

/** The actions on the resources the proxy configuration names: [{ action, resources }]. */
export function readPermissions(config: DeployedConfig): Array<{ action: string; resources: string[] }> {
  return READ_PERMISSIONS.map(({ suffix, action }) => ({
    action,
    resources: valuesOf(config, suffix),
  })).filter((p) => p.resources.length > 0);
}

/** A policy set that does not parse fails the packaging, not the functions' start-up. */
function checkPolicies(fail: Fail, field: string, file: unknown): void {
  if (typeof file !== 'string' || !/^policies\/[\w.-]+\.cedar$/.test(file)) {
    fail(`${field} must be a policies/<name>.cedar file (it is packaged with the functions)`);
  }
  if (!existsSync(join(ROOT, file))) fail(`${field} ${file} does not exist`);
  // Loaded only for a stage that names a policy set: the wasm module takes a while to load.
  // require() is untyped: the module's own type declarations.
  const cedar = createRequire(import.meta.url)('@cedar-policy/cedar-wasm/nodejs') as CedarWasm;
  const answer = cedar.checkParsePolicySet({ staticPolicies: readFileSync(join(ROOT, file), 'utf8') });
  if (answer.type !== 'success') {
    fail(`${field} ${file} does not parse: ${answer.errors.map((e) => e.message).join('; ')}`);
  }
}
type CedarWasm = typeof import('@cedar-policy/cedar-wasm/nodejs');

/** The only files a deployed proxy reads from its package (none holds a secret), with their checks. */
const PACKAGED_FILES: Record<string, (fail: Fail, field: string, value: unknown) => void> = {
  policyFile: checkPolicies,
};

/** The proxy schema's part for a field, e.g. `keystores[0].credentialsSecretArn`; undefined if none. */
function schemaOf(field: string): unknown {
  /** What this walk reads of a JSON schema. */
  type Node =
    | {
        readonly properties?: { readonly [name: string]: Node };
        readonly items?: Node;
        readonly [keyword: string]: unknown;
      }
    | undefined;
  let schema: Node = SCHEMA;
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
function checkDeployable(fail: Fail, config: Unchecked): void {
  for (const [field, value] of fields(config)) {
    const name = field.split('.').at(-1) ?? field;
    if (name === 'pin') fail(`${field}: put the PIN in Secrets Manager and give pinSecretArn`);
    if (name === 'credentials') fail(`${field}: put them in Secrets Manager and give credentialsSecretArn`);
    const check = Object.hasOwn(PACKAGED_FILES, name) ? PACKAGED_FILES[name] : undefined;
    if (check !== undefined) check(fail, field, value);
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
export function checkParams(raw: unknown, stage: string): Params {
  const file = `deploy/params.${stage}.yml`;
  const fail: Fail = (message) => {
    throw new ParamsError(`${file}: ${message}`);
  };
  if (!isMapping(raw)) fail('not a YAML mapping');
  const p = structuredClone(raw);
  // The vendor's variables go to the functions' environment, not into the proxy configuration.
  const hsm = p.hsm;
  const environment = isMapping(hsm) ? hsm.environment : undefined;
  if (isMapping(hsm)) delete hsm.environment;
  const settings = deploySettings(fail, p);
  const vendorEnvironment = hsmEnvironment(fail, environment ?? {});
  const { config, parsed } = proxyConfig(fail, settings, stage);
  checkConnectivity(fail, settings, parsed);
  checkFrontDoor(fail, settings, raw);
  if (settings.provisionedConcurrency > settings.reservedConcurrency) {
    fail('provisionedConcurrency cannot exceed reservedConcurrency');
  }
  settings.hsm = { ...(isMapping(hsm) ? hsm : {}), environment: vendorEnvironment };
  settings.stage = stage;
  settings.proxyConfig = config;
  // DEPLOY_SCHEMA, the functions' parser and checkConnectivity are what make it the Params type says.
  return settings as unknown as Params;
}

/** The stage file checked against DEPLOY_SCHEMA, its defaults filled in; the proxy's sections unchecked. */
function deploySettings(fail: Fail, p: Unchecked): DeploySettings & Unchecked {
  if (validateDeploy(p)) {
    // What ajv just checked: its schema cannot be typed as DeploySettings (optional settings would
    // need `nullable`, which would change what it accepts).
    return p as DeploySettings & Unchecked;
  }
  const [error] = validateDeploy.errors ?? [];
  if (error === undefined) return fail('is invalid');
  const at = fieldOf(error.instancePath);
  // ajv types every rule's params as one record; these two are the names its rules give.
  const { additionalProperty, missingProperty } = error.params as {
    additionalProperty?: string;
    missingProperty?: string;
  };
  if (additionalProperty !== undefined) {
    const field = at ? `${at}.${additionalProperty}` : additionalProperty;
    fail(`${field} is not a known setting${MOVED[field] ? ` (the setting is ${MOVED[field]})` : ''}`);
  }
  if (missingProperty !== undefined) fail(`${at ? `${at}.` : ''}${missingProperty} is required`);
  return fail(`${at} ${error.message}`);
}

/** hsm.environment: the vendor library's own variables only. */
function hsmEnvironment(fail: Fail, environment: unknown): Unchecked {
  if (!isMapping(environment)) return fail('hsm.environment must map variable names to values');
  for (const name of Object.keys(environment)) {
    // Never the proxy's, Powertools' (LOG_EVENT would log bodies, i.e. plaintext) or the platform's.
    if (/^(XKS_|POWERTOOLS_|AWS_|LAMBDA_|NODE_OPTIONS$)/.test(name))
      fail(`hsm.environment.${name} is reserved`);
  }
  return environment;
}

/**
 * The proxy's sections of the stage file, with what the deployment decides (the fleet size, the
 * client certificate names with mutual TLS), checked as a deployed function will read it.
 */
function proxyConfig(
  fail: Fail,
  settings: DeploySettings & Unchecked,
  stage: string,
): { config: DeployedConfig; parsed: ProxyConfig } {
  const config: Unchecked = Object.fromEntries(
    PROXY_SECTIONS.filter((s) => settings[s] !== undefined).map((s) => [s, settings[s]]),
  );
  checkDeployable(fail, config);
  if (!isMapping(config.hsm) || config.hsm.pinSecretArn === undefined)
    fail('hsm.pinSecretArn is required (the PIN lives in Secrets Manager)');
  const keystores: unknown[] = Array.isArray(config.keystores) ? config.keystores : [];
  for (const [i, ks] of keystores.entries()) {
    if (!isMapping(ks) || ks.credentialsSecretArn === undefined)
      fail(`keystores[${i}].credentialsSecretArn is required`);
  }

  const mtls = settings.connectivity === 'public' ? settings.public?.mtls : undefined;
  if (config.clientCertificate !== undefined && mtls === undefined) {
    fail('clientCertificate needs mutual TLS: connectivity public with public.mtls');
  }
  // Derived from the deployment, unless the stage file says otherwise.
  if (config.proxy === undefined || isMapping(config.proxy)) {
    config.proxy = { fleetSize: Math.max(1, settings.provisionedConcurrency), ...config.proxy };
  }
  if (mtls && config.clientCertificate === undefined) {
    config.clientCertificate = { allowedCommonNames: [`cks.kms.${settings.region}.amazonaws.com`] };
  }
  try {
    // The functions' own parser, as it runs in Lambda: what it refuses here would stop every start-up.
    const parsed = parseConfig(config, { AWS_LAMBDA_FUNCTION_NAME: `xks-proxy-${stage}` });
    // Accepted by the parser: what DeployedConfig says, the parser's defaults aside.
    return { config: config as DeployedConfig, parsed };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // "Invalid XKS proxy configuration: /keystores/0/keys ...": the field as the stage file names it.
    return fail(err.message.replace(/^[^:]*: /, '').replace(/^\/\S*/, fieldOf));
  }
}

/** The section of the stage's connectivity mode, and what that mode can serve. */
function checkConnectivity(fail: Fail, settings: DeploySettings, parsed: ProxyConfig): void {
  if (settings.connectivity === 'public' && settings.public === undefined)
    fail('public is required (connectivity public)');
  if (settings.connectivity === 'vpc-endpoint-service') {
    if (settings.vpcEndpointService === undefined)
      fail('vpcEndpointService is required (connectivity vpc-endpoint-service)');
    // KMS needs its own VPC endpoint service (and private DNS name) for each external key store.
    if (parsed.keystores.length !== 1)
      fail('connectivity vpc-endpoint-service serves exactly one key store per stage');
  }
}

/**
 * What the stage's front door needs, and the settings of the other one, refused by name: they
 * would do nothing (docs/deploy.md, "API Gateway or ALB: when to choose which").
 */
function checkFrontDoor(fail: Fail, settings: DeploySettings, raw: Unchecked): void {
  if (settings.frontDoor === 'apigateway') {
    if (settings.alb !== undefined) fail('alb is for frontDoor alb (the front door is apigateway)');
    return;
  }
  if (settings.alb === undefined) fail('alb is required (frontDoor alb): at least alb.accessLogBucket');
  if (settings.connectivity === 'public' && settings.alb.subnetIds === undefined) {
    fail(
      "alb.subnetIds is required (frontDoor alb, connectivity public): the internet-facing ALB's public subnets, two AZs at least",
    );
  }
  const instead: Record<string, string> = {
    throttling:
      "is API Gateway's stage throttling; behind an ALB, reservedConcurrency bounds each function and keystores[].throttle applies per environment",
    createApiGatewayCloudWatchRole: 'is for API Gateway access logs; the ALB logs to alb.accessLogBucket',
  };
  for (const [name, why] of Object.entries(instead)) {
    if (Object.hasOwn(raw, name)) fail(`${name} ${why} (frontDoor alb)`);
  }
}

/** The files each function's package holds besides its code: the configuration and the files it names. */
export function packagedFiles(p: Params): string[] {
  const named = [...fields(p.proxyConfig)]
    .filter(([field]) => Object.hasOwn(PACKAGED_FILES, field.split('.').at(-1) ?? field))
    .map(([, value]) => String(value));
  return [configPath(p.stage), ...new Set(named)];
}
