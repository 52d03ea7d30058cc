// The proxy's configuration: typed, and validated once at start-up (a bad config stops the init
// phase with a message that names the problem, never a secret).
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';

export interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface KeystoreConfig {
  /** A name for logs and metrics. */
  name: string;
  /** What comes before `/kms/xks/v1` in the URI path: '' or '/a/b' (spec: XksProxyUriPath). */
  pathPrefix: string;
  /** SigV4 credentials KMS may sign with; two or more during a rotation (spec: SigV4 credentials rotation). */
  credentials: Credential[];
  /** The externalKeyIds this key store may use; any other is KeyNotFoundException. */
  keys: string[];
  /** Regions KMS may sign from; any when absent. */
  allowedRegions?: string[];
}

export interface ProxyConfig {
  hsm: {
    modulePath: string;
    tokenLabel: string;
    /** Overridden by the XKS_HSM_PIN environment variable. */
    pin: string;
    /** A key used by GetHealthStatus only, never by customers. */
    healthCheckKeyLabel: string;
    keyCacheSeconds: number;
  };
  healthCheck: {
    /** How long a deep health check result is reused; at most 60 (spec: GetHealthStatus). */
    cacheSeconds: number;
    /** A passing check slower than this reports DEGRADED. */
    degradedAboveMs: number;
  };
  proxy: {
    vendor: string;
    model: string;
    fleetSize: number;
  };
  keystores: KeystoreConfig[];
}

/** Demo credentials of the local quick start (they match AWS's public XKS test client). */
export const DEMO_CREDENTIAL: Credential = {
  accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS',
  secretAccessKey: 'PleaseReplaceThisWithSomeSecretOfLength43To64',
};

export const PROXY_VENDOR = 'serverless-xks-proxy';
export const PROXY_MODEL = 'serverless-xks-proxy 0.1.0';

const KEY_ID = '^[A-Za-z0-9._-]{1,128}$';
const SCHEMA = {
  type: 'object',
  required: ['hsm', 'keystores'],
  additionalProperties: false,
  properties: {
    hsm: {
      type: 'object',
      required: ['modulePath', 'tokenLabel'],
      additionalProperties: false,
      properties: {
        modulePath: { type: 'string', pattern: '^/' },
        tokenLabel: { type: 'string', minLength: 1, maxLength: 32 },
        pin: { type: 'string', minLength: 1 },
        healthCheckKeyLabel: { type: 'string', pattern: KEY_ID, default: 'xks-health-check' },
        keyCacheSeconds: { type: 'number', minimum: 0, maximum: 3600, default: 60 },
      },
    },
    healthCheck: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        cacheSeconds: { type: 'number', minimum: 0, maximum: 60, default: 10 },
        degradedAboveMs: { type: 'number', minimum: 0, default: 100 },
      },
    },
    proxy: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        vendor: { type: 'string', minLength: 1, default: PROXY_VENDOR },
        model: { type: 'string', minLength: 1, default: PROXY_MODEL },
        fleetSize: { type: 'integer', minimum: 1, default: 1 },
      },
    },
    keystores: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['name', 'pathPrefix', 'credentials', 'keys'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' },
          pathPrefix: { type: 'string', pattern: '^(?:/[A-Za-z0-9_-]+)*$' },
          credentials: {
            type: 'array',
            minItems: 1,
            items: {
              type: 'object',
              required: ['accessKeyId', 'secretAccessKey'],
              additionalProperties: false,
              properties: {
                // Spec: Appendix A and "XKS proxy configuration in AWS KMS console".
                accessKeyId: { type: 'string', pattern: '^[A-Z2-7]{20,30}$' },
                secretAccessKey: { type: 'string', pattern: '^[A-Za-z0-9/+=]{43,64}$' },
              },
            },
          },
          keys: { type: 'array', items: { type: 'string', pattern: KEY_ID }, uniqueItems: true },
          allowedRegions: { type: 'array', items: { type: 'string', pattern: '^[a-z0-9-]+$' }, minItems: 1 },
        },
      },
    },
  },
} as const;

const validate = new Ajv({ useDefaults: true, allErrors: false, strict: true }).compile(SCHEMA);

export class ConfigError extends Error {
  constructor(message: string) {
    super(`Invalid XKS proxy configuration: ${message}`);
    this.name = 'ConfigError';
  }
}

/** Validates a parsed configuration, filling in defaults. */
export function parseConfig(input: unknown, env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  const config = structuredClone(input);
  if (!validate(config)) {
    const error = validate.errors?.[0];
    // ajv's messages name the rule (pattern, length), not the value: safe for secrets.
    throw new ConfigError(`${error?.instancePath || '/'} ${error?.message ?? 'is invalid'}`);
  }
  const parsed = config as unknown as ProxyConfig;
  const pin = env.XKS_HSM_PIN ?? parsed.hsm.pin;
  if (pin === undefined || pin === '') throw new ConfigError('no HSM PIN: set hsm.pin or XKS_HSM_PIN');
  parsed.hsm.pin = pin;

  const prefixes = new Set<string>();
  for (const keystore of parsed.keystores) {
    const uriPath = `${keystore.pathPrefix}/kms/xks/v1`;
    if (uriPath.length > 128)
      throw new ConfigError(`keystore ${keystore.name}: ${uriPath.length}-character URI path`);
    if (prefixes.has(keystore.pathPrefix))
      throw new ConfigError(`two keystores with path prefix '${keystore.pathPrefix}'`);
    prefixes.add(keystore.pathPrefix);
    const ids = new Set(keystore.credentials.map((c) => c.accessKeyId));
    if (ids.size !== keystore.credentials.length) {
      throw new ConfigError(`keystore ${keystore.name}: an access key id is listed twice`);
    }
    if (keystore.keys.includes(parsed.hsm.healthCheckKeyLabel)) {
      throw new ConfigError(`keystore ${keystore.name}: the health-check key must not be a customer key`);
    }
    // Demo credentials are public: never in a deployed proxy, not even the secret under another id.
    const demo = keystore.credentials.some(
      (c) =>
        c.accessKeyId === DEMO_CREDENTIAL.accessKeyId ||
        c.secretAccessKey === DEMO_CREDENTIAL.secretAccessKey,
    );
    if (env.AWS_LAMBDA_FUNCTION_NAME !== undefined && demo) {
      throw new ConfigError(`keystore ${keystore.name}: the public demo credentials are for local use only`);
    }
  }
  return parsed;
}

/** The configuration named by XKS_PROXY_CONFIG (a JSON file). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  const file = env.XKS_PROXY_CONFIG;
  if (file === undefined || file === '')
    throw new ConfigError('XKS_PROXY_CONFIG (path of a JSON file) is not set');
  let input: unknown;
  try {
    input = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(
      `cannot read ${file}: ${err instanceof SyntaxError ? 'not valid JSON' : String(err)}`,
    );
  }
  return parseConfig(input, env);
}
