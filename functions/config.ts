// The proxy's configuration: typed, and validated once at start-up (a bad config stops the init
// phase with a message that names the problem, never a secret).
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { FromSchema } from 'json-schema-to-ts';
import type { VendorProfileName } from '../layers/pkcs11/profiles.ts';
import { inLambda } from './aws.ts';
import { ACCESS_KEY_ID, KEY_ID, NAME, PATH_PREFIX, SECRET_ACCESS_KEY } from './ids.ts';

export const PROXY_VENDOR = 'serverless-xks-proxy';
export const PROXY_MODEL = 'serverless-xks-proxy 0.1.0';

const PROFILES = ['softhsm', 'nss', 'cloudhsm', 'luna', 'nshield'] as const;
// The layer's profile names and this list are the same set.
const sameProfiles: [VendorProfileName] extends [(typeof PROFILES)[number]]
  ? [(typeof PROFILES)[number]] extends [VendorProfileName]
    ? true
    : never
  : never = true;
void sameProfiles;
/** Passed to C_Initialize as a C string: a NUL would end it early. */
const LIBRARY_PARAMETERS = {
  type: 'string',
  minLength: 1,
  maxLength: 4096,
  pattern: '^[^\\u0000]*$',
} as const;
const CREDENTIAL = {
  type: 'object',
  required: ['accessKeyId', 'secretAccessKey'],
  additionalProperties: false,
  properties: {
    // Spec: Appendix A and "XKS proxy configuration in AWS KMS console".
    accessKeyId: { type: 'string', pattern: ACCESS_KEY_ID.source },
    secretAccessKey: { type: 'string', pattern: SECRET_ACCESS_KEY.source },
  },
} as const;
/**
 * SigV4 credentials KMS may sign with; two or more during a rotation (spec: SigV4 credentials
 * rotation).
 */
const CREDENTIALS = { type: 'array', minItems: 1, items: CREDENTIAL } as const;
const LOCAL_SERVER_LIMIT = { type: 'integer', minimum: 1 } as const;
/** 0 turns these off. */
const LOCAL_SERVER_LIMIT_OR_OFF = { type: 'integer', minimum: 0 } as const;

/**
 * The configuration's JSON schema, and through FromSchema its type (ProxyConfig): the values
 * after validation, defaults filled in. infra/params.ts checks a stage file's proxy part with it too.
 */
export const SCHEMA = {
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
        /**
         * C_Initialize's library parameters, for the libraries that take them (NSS softoken:
         * `configdir='sql:DIR' ... dbTokenDescription='LABEL'`, docs/hsm.md).
         */
        libraryParameters: LIBRARY_PARAMETERS,
        tokenLabel: { type: 'string', minLength: 1, maxLength: 32 },
        /** The crypto user's PIN; or pinSecretArn; the XKS_HSM_PIN environment variable overrides both. */
        pin: { type: 'string', minLength: 1 },
        /** A Secrets Manager secret holding the PIN (plain, or `{"pin": "..."}`). */
        pinSecretArn: { type: 'string', minLength: 1 },
        /** A key used by GetHealthStatus only, never by customers. */
        healthCheckKeyLabel: { type: 'string', pattern: KEY_ID.source, default: 'xks-health-check' },
        keyCacheSeconds: { type: 'number', minimum: 0, maximum: 3600, default: 60 },
        /** Picks the token by serial number instead of (or as well as) its label. */
        tokenSerial: { type: 'string', minLength: 1, maxLength: 16 },
        /** How this vendor does AES-GCM (layers/pkcs11/profiles.ts, docs/hsm.md). */
        profile: { enum: PROFILES, default: 'softhsm' },
        /** Deadline of each HSM call; past it, 503 DependencyTimeoutException. */
        callTimeoutMs: { type: 'integer', minimum: 1, maximum: 10_000, default: 100 },
        /** Deadline of the first connection (library load and login) after a cold start. */
        startTimeoutMs: { type: 'integer', minimum: 1, maximum: 60_000, default: 5000 },
        /**
         * Several HSMs with the same keys (failover, ekmFleetDetails); the `hsm` section alone when
         * absent.
         */
        fleet: {
          type: 'array',
          minItems: 1,
          // Spec (GetHealthStatus): at most ten ekmFleetDetails entries.
          maxItems: 10,
          /** One HSM of the fleet; what it leaves out comes from the `hsm` section. */
          items: {
            type: 'object',
            required: ['name'],
            additionalProperties: false,
            properties: {
              /** For logs and ekmFleetDetails until the HSM is reached. */
              name: { type: 'string', pattern: NAME.source },
              modulePath: { type: 'string', pattern: '^/' },
              libraryParameters: LIBRARY_PARAMETERS,
              tokenLabel: { type: 'string', minLength: 1, maxLength: 32 },
              tokenSerial: { type: 'string', minLength: 1, maxLength: 16 },
              pin: { type: 'string', minLength: 1 },
              pinSecretArn: { type: 'string', minLength: 1 },
              profile: { enum: PROFILES },
            },
          },
        },
      },
    },
    healthCheck: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** How long a deep health check result is reused; at most 60 (spec: GetHealthStatus). */
        cacheSeconds: { type: 'number', minimum: 0, maximum: 60, default: 10 },
        /** A passing check slower than this reports DEGRADED. */
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
    secrets: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** How long secrets read from Secrets Manager are reused before they are read again (rotation). */
        cacheSeconds: { type: 'number', minimum: 0, maximum: 86_400, default: 300 },
      },
    },
    /**
     * mTLS through API Gateway (spec: Authentication): when set, every request must come with a client
     * certificate (requestContext.identity.clientCert) whose subject CN is one of these.
     */
    clientCertificate: {
      type: 'object',
      required: ['allowedCommonNames'],
      additionalProperties: false,
      properties: {
        /** Allowed subject CNs; `*` stands for one DNS label, e.g. `cks.kms.*.amazonaws.com`. */
        allowedCommonNames: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
        /**
         * PEM CA bundle the local server checks client certificates against (API Gateway has its
         * truststore).
         */
        caFile: { type: 'string', minLength: 1 },
      },
    },
    /**
     * The audit key (functions/audit.ts): HMAC-SHA-256 key of the audit records, at least 32 bytes as
     * hex. A local file, or a Secrets Manager secret (read once, at start, like the PIN). Without one,
     * each process keys its records with a random key it never stores: nobody can verify them.
     */
    audit: {
      type: 'object',
      additionalProperties: false,
      oneOf: [{ required: ['keyFile'] }, { required: ['keySecretArn'] }],
      properties: {
        keyFile: { type: 'string', minLength: 1 },
        keySecretArn: { type: 'string', minLength: 1 },
      },
    },
    /**
     * The revocation switch (functions/revocation.ts): key stores and keys cut off from KMS without
     * a redeploy or restart. A local file, read again when it changes, or a Secrets Manager secret,
     * read again when the value in hand is older than cacheSeconds (so a change takes effect within
     * about that, docs/security.md).
     */
    revocation: {
      type: 'object',
      additionalProperties: false,
      oneOf: [{ required: ['file'] }, { required: ['secretArn'] }],
      properties: {
        file: { type: 'string', minLength: 1 },
        secretArn: { type: 'string', minLength: 1 },
        // At most 10: a change must take effect within 10 s (docs/security.md, Revocation).
        cacheSeconds: { type: 'number', minimum: 0, maximum: 10, default: 5 },
      },
    },
    /** Limits of the local HTTPS server against hostile clients (local/server.ts DEFAULT_LIMITS). */
    localServer: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxBodyBytes: LOCAL_SERVER_LIMIT,
        maxHeaderBytes: LOCAL_SERVER_LIMIT,
        maxHeaders: LOCAL_SERVER_LIMIT,
        handshakeTimeoutMs: LOCAL_SERVER_LIMIT,
        headersTimeoutMs: LOCAL_SERVER_LIMIT,
        requestTimeoutMs: LOCAL_SERVER_LIMIT,
        keepAliveTimeoutMs: LOCAL_SERVER_LIMIT,
        idleTimeoutMs: LOCAL_SERVER_LIMIT,
        timeoutCheckIntervalMs: LOCAL_SERVER_LIMIT,
        maxConnections: LOCAL_SERVER_LIMIT,
        maxRequestsPerSocket: LOCAL_SERVER_LIMIT_OR_OFF,
        maxDiscardBytes: LOCAL_SERVER_LIMIT_OR_OFF,
        discardTimeoutMs: LOCAL_SERVER_LIMIT,
      },
    },
    keystores: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['name', 'pathPrefix', 'keys'],
        // Credentials inline (local use), from Secrets Manager or from a file: exactly one.
        oneOf: [
          { required: ['credentials'] },
          { required: ['credentialsSecretArn'] },
          { required: ['credentialsFile'] },
        ],
        additionalProperties: false,
        properties: {
          /** A name for logs and metrics. */
          name: { type: 'string', pattern: NAME.source },
          /** What comes before `/kms/xks/v1` in the URI path: '' or '/a/b' (spec: XksProxyUriPath). */
          pathPrefix: { type: 'string', pattern: PATH_PREFIX.source },
          credentials: CREDENTIALS,
          /**
           * A Secrets Manager secret holding
           * `{"credentials": [{"accessKeyId", "secretAccessKey"}, ...]}`.
           */
          credentialsSecretArn: { type: 'string', minLength: 1 },
          /** A local file holding the same JSON, read again when it changes (local and on-premises use). */
          credentialsFile: { type: 'string', minLength: 1 },
          /**
           * A Cedar policy set (spec: Authorization): when given, GetKeyMetadata, Encrypt and Decrypt need
           * a permit from it (deny by default); a relative path is from the working directory.
           */
          policyFile: { type: 'string', minLength: 1 },
          /** Request-rate quota of this key store (spec: ThrottlingException): over it, 429. */
          throttle: {
            type: 'object',
            required: ['rateLimit', 'burstLimit'],
            additionalProperties: false,
            properties: {
              rateLimit: { type: 'number', exclusiveMinimum: 0 },
              burstLimit: { type: 'integer', minimum: 1 },
            },
          },
          /** The externalKeyIds this key store may use; any other is KeyNotFoundException. */
          keys: { type: 'array', items: { type: 'string', pattern: KEY_ID.source }, uniqueItems: true },
          /** Also allowed: key ids matching this regular expression (for long key lists). */
          keyPattern: { type: 'string', minLength: 1 },
          /** Keys the customer disabled: keyStatus DISABLED, Encrypt and Decrypt InvalidStateException. */
          disabledKeys: {
            type: 'array',
            items: { type: 'string', pattern: KEY_ID.source },
            uniqueItems: true,
          },
          /** Regions KMS may sign from; any when absent. */
          allowedRegions: { type: 'array', items: { type: 'string', pattern: '^[a-z0-9-]+$' }, minItems: 1 },
          /**
           * Decrypt ciphertexts made by the AWS sample proxy (aws-samples/aws-kms-xks-proxy), which gives
           * the HSM SHA-256(AAD) where the spec gives the AAD, and answers every Encrypt with one static
           * ciphertextMetadata (its `ciphertext_metadata_b64`, '' when it had none): a Decrypt whose
           * metadata is that value is decrypted the sample's way, so no data needs re-encrypting.
           */
          awsSampleProxy: {
            type: 'object',
            required: ['ciphertextMetadata'],
            additionalProperties: false,
            // Canonical Base64 of at most 20 bytes (spec: ciphertextMetadata), or '' for none.
            properties: {
              ciphertextMetadata: {
                type: 'string',
                pattern: '^(?:[A-Za-z0-9+/]{4}){0,6}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$',
              },
            },
          },
        },
      },
    },
  },
} as const;

/** The validated configuration (defaults filled in); its type is the schema's. */
export type ProxyConfig = FromSchema<typeof SCHEMA>;
export type KeystoreConfig = ProxyConfig['keystores'][number];
export type HsmMemberConfig = NonNullable<ProxyConfig['hsm']['fleet']>[number];
export type Credential = FromSchema<typeof CREDENTIAL>;

/** The local server's limits that the configuration may set. */
export type LocalServerLimit = keyof NonNullable<ProxyConfig['localServer']>;
export const LOCAL_SERVER_LIMITS = Object.keys(
  SCHEMA.properties.localServer.properties,
) as readonly LocalServerLimit[];

/** Demo credentials of the local quick start (they match AWS's public XKS test client). */
export const DEMO_CREDENTIAL: Credential = {
  accessKeyId: 'BETWEEN2TENAND3TENCHARACTERS',
  secretAccessKey: 'PleaseReplaceThisWithSomeSecretOfLength43To64',
};

// strictRequired off: the oneOfs name properties defined beside them, not inside them.
const validate = new Ajv({
  useDefaults: true,
  allErrors: false,
  strict: true,
  strictRequired: false,
}).compile<ProxyConfig>(SCHEMA);

export class ConfigError extends Error {
  constructor(message: string) {
    super(`Invalid XKS proxy configuration: ${message}`);
    this.name = 'ConfigError';
  }
}

/** The environment variables a configuration depends on: XKS_HSM_PIN, and Lambda's. */
export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Validates a parsed configuration, filling in defaults. Secrets Manager references stay unresolved.
 * `env`: XKS_HSM_PIN overrides the PIN; in Lambda the demo credentials are refused.
 */
export function parseConfig(input: unknown, env: Env): ProxyConfig {
  const parsed = structuredClone(input);
  if (!validate(parsed)) {
    const error = validate.errors?.[0];
    const unknown = error?.params.additionalProperty as string | undefined;
    if (unknown !== undefined) {
      throw new ConfigError(`${error?.instancePath}/${unknown} is not a known setting`);
    }
    // ajv's messages name the rule (pattern, length), not the value: safe for secrets.
    throw new ConfigError(`${error?.instancePath || '/'} ${error?.message ?? 'is invalid'}`);
  }
  if (env.XKS_HSM_PIN) parsed.hsm.pin = env.XKS_HSM_PIN;
  if (!parsed.hsm.pin && !parsed.hsm.pinSecretArn) {
    throw new ConfigError('no HSM PIN: set hsm.pin, hsm.pinSecretArn or XKS_HSM_PIN');
  }

  const names = new Set<string>();
  /** Per library, the parameters it is initialised with: once per process, by whichever HSM is first. */
  const parameters = new Map<string, string | undefined>();
  for (const member of parsed.hsm.fleet ?? []) {
    if (names.has(member.name)) throw new ConfigError(`two HSMs named '${member.name}'`);
    names.add(member.name);
    const library = member.modulePath ?? parsed.hsm.modulePath;
    const own = member.libraryParameters ?? parsed.hsm.libraryParameters;
    if (parameters.has(library) && parameters.get(library) !== own) {
      throw new ConfigError(
        `HSM '${member.name}': ${library} is initialised once per process, so every HSM it serves needs the same libraryParameters`,
      );
    }
    parameters.set(library, own);
  }

  const prefixes = new Set<string>();
  for (const keystore of parsed.keystores) {
    const uriPath = `${keystore.pathPrefix}/kms/xks/v1`;
    if (uriPath.length > 128) {
      throw new ConfigError(`keystore ${keystore.name}: ${uriPath.length}-character URI path`);
    }
    if (prefixes.has(keystore.pathPrefix)) {
      throw new ConfigError(`two keystores with path prefix '${keystore.pathPrefix}'`);
    }
    prefixes.add(keystore.pathPrefix);
    if (keystore.keys.includes(parsed.hsm.healthCheckKeyLabel)) {
      throw new ConfigError(`keystore ${keystore.name}: the health-check key must not be a customer key`);
    }
    if (keystore.keyPattern !== undefined) {
      try {
        new RegExp(keystore.keyPattern);
      } catch {
        throw new ConfigError(`keystore ${keystore.name}: keyPattern is not a regular expression`);
      }
    }
    if (keystore.credentials !== undefined) {
      checkCredentials(keystore.name, keystore.credentials, { inLambda: inLambda(env) });
    }
    const sample = keystore.awsSampleProxy?.ciphertextMetadata;
    if (sample !== undefined && Buffer.from(sample, 'base64').toString('base64') !== sample) {
      throw new ConfigError(
        `keystore ${keystore.name}: awsSampleProxy.ciphertextMetadata is not canonical Base64`,
      );
    }
  }
  return parsed;
}

/** Where credentials are checked: in Lambda the public demo credentials are refused. */
export interface CredentialRules {
  inLambda?: boolean;
}

/** Rules for a key store's credentials, wherever they come from (config file or Secrets Manager). */
export function checkCredentials(keystore: string, credentials: Credential[], rules: CredentialRules): void {
  const ids = new Set(credentials.map((c) => c.accessKeyId));
  if (ids.size !== credentials.length) {
    throw new ConfigError(`keystore ${keystore}: an access key id is listed twice`);
  }
  // Demo credentials are public: never in a deployed proxy, not even the secret under another id.
  const demo = credentials.some(
    (c) =>
      c.accessKeyId === DEMO_CREDENTIAL.accessKeyId || c.secretAccessKey === DEMO_CREDENTIAL.secretAccessKey,
  );
  if (rules.inLambda === true && demo) {
    throw new ConfigError(`keystore ${keystore}: the public demo credentials are for local use only`);
  }
}

const validateCredentials = new Ajv({ strict: true }).compile<{ credentials: Credential[] }>({
  type: 'object',
  required: ['credentials'],
  properties: { credentials: CREDENTIALS },
});

/** The credentials in a key store's secret: `{"credentials": [{"accessKeyId", "secretAccessKey"}, ...]}`. */
export function parseCredentialsSecret(
  keystore: string,
  secret: string,
  rules: CredentialRules,
): Credential[] {
  let value: unknown;
  try {
    value = JSON.parse(secret);
  } catch {
    throw new ConfigError(`keystore ${keystore}: its credentials secret is not JSON`);
  }
  if (!validateCredentials(value)) {
    const error = validateCredentials.errors?.[0];
    throw new ConfigError(
      `keystore ${keystore}: credentials secret ${error?.instancePath || '/'} ${error?.message}`,
    );
  }
  checkCredentials(keystore, value.credentials, rules);
  return value.credentials;
}

/** The PIN in its secret: the plain string, or `{"pin": "..."}`. */
export function parsePinSecret(secret: string): string {
  try {
    const value: unknown = JSON.parse(secret);
    if (typeof value === 'object' && value !== null && typeof (value as { pin?: unknown }).pin === 'string') {
      return (value as { pin: string }).pin;
    }
  } catch {
    // Not JSON: the secret is the PIN itself.
  }
  return secret;
}

/**
 * The configuration of a Lambda function: XKS_PROXY_CONFIG names a JSON file, or
 * XKS_PROXY_CONFIG_JSON holds the JSON.
 */
export function loadConfig(env: Env): ProxyConfig {
  const file = env.XKS_PROXY_CONFIG;
  const inline = env.XKS_PROXY_CONFIG_JSON;
  if (file) return readConfig(file, env);
  if (inline) return configOf(inline, 'XKS_PROXY_CONFIG_JSON', env);
  throw new ConfigError('set XKS_PROXY_CONFIG (path of a JSON file) or XKS_PROXY_CONFIG_JSON');
}

/** The configuration in a JSON file. */
export function readConfig(file: string, env: Env): ProxyConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  return configOf(text, file, env);
}

function configOf(text: string, where: string, env: Env): ProxyConfig {
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch {
    // The parser's message would quote the text, which may hold secrets.
    throw new ConfigError(`${where} is not valid JSON`);
  }
  return parseConfig(input, env);
}
