// What every handler shares, created once per process at module scope, i.e. in the Lambda init
// phase: the validated configuration and its secrets, the HSM session (C_Initialize, C_OpenSession,
// C_Login), the key stores, the logger and the metrics.
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { HsmFleet } from '../layers/pkcs11/fleet.ts';
import type { Hsm } from '../layers/pkcs11/hsm.ts';
import { VENDOR_PROFILES } from '../layers/pkcs11/profiles.ts';
import { WorkerHsm } from '../layers/pkcs11/worker-hsm.ts';
import { AUDIT_KEY_BYTES, type AuditChain, parseAuditKey, startAuditChain, writeAuditLine } from './audit.ts';
import { type Authorizer, createAuthorizer } from './authorization.ts';
import {
  type Credential,
  type KeystoreConfig,
  loadConfig,
  type ProxyConfig,
  parseCredentialsSecret,
  parsePinSecret,
} from './config.ts';
import { ALL_KEYSTORES, RevocationSwitch } from './revocation.ts';
import { hsmAad, METADATA_V1 } from './xks.ts';

export const SERVICE = 'xks-proxy';

export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE });
export const metrics = new Metrics({
  namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'XksProxy',
  serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE,
});

export const config: ProxyConfig = loadConfig();

/** A key store, ready for per-request use: its credentials and keys indexed once. */
export class Keystore {
  readonly name: string;
  readonly pathPrefix: string;
  readonly allowedRegions: ReadonlySet<string> | undefined;
  /** The key store's Cedar policies; none means SigV4 alone decides. */
  readonly authorizer: Authorizer | undefined;
  readonly #keys: ReadonlySet<string>;
  readonly #disabled: ReadonlySet<string>;
  readonly #keyPattern: RegExp | undefined;
  readonly #quota: TokenBucket | undefined;
  readonly #awsSampleMetadata: Buffer | undefined;
  #secrets = new Map<string, string>();

  constructor(ks: KeystoreConfig) {
    this.name = ks.name;
    this.pathPrefix = ks.pathPrefix;
    this.allowedRegions = ks.allowedRegions && new Set(ks.allowedRegions);
    this.#keys = new Set(ks.keys);
    this.#disabled = new Set(ks.disabledKeys);
    this.#keyPattern = ks.keyPattern === undefined ? undefined : new RegExp(ks.keyPattern);
    const sample = ks.awsSampleProxy?.ciphertextMetadata;
    this.#awsSampleMetadata = sample === undefined ? undefined : Buffer.from(sample, 'base64');
    // Parsed and checked now: a broken policy stops the start-up, never a request.
    this.authorizer = ks.policyFile === undefined ? undefined : loadPolicies(ks.name, ks.policyFile);
    // In Lambda, API Gateway enforces the quota (each environment would only see its own share).
    this.#quota =
      ks.throttle && process.env.AWS_LAMBDA_FUNCTION_NAME === undefined
        ? new TokenBucket(ks.throttle.rateLimit, ks.throttle.burstLimit)
        : undefined;
    if (ks.credentials) this.setCredentials(ks.credentials);
  }

  /** The secret of an access key id of this key store (spec: Appendix A, Task 3). */
  secretOf = (accessKeyId: string): string | undefined => this.#secrets.get(accessKeyId);

  /** Whether this key store may use an external key id; never the health-check key. */
  allows(keyId: string): boolean {
    if (keyId === config.hsm.healthCheckKeyLabel) return false;
    return this.#keys.has(keyId) || (this.#keyPattern?.test(keyId) ?? false);
  }

  /**
   * Whether a Decrypt's ciphertextMetadata is the static one of the AWS sample proxy this key store
   * took over from (none at all when it had none).
   */
  isAwsSampleCiphertext(metadata: Buffer | undefined): boolean {
    const sample = this.#awsSampleMetadata;
    return sample !== undefined && (metadata ?? Buffer.alloc(0)).equals(sample);
  }

  /**
   * Why this key is not enabled, or undefined when it is: disabled in the configuration, or the key
   * or the whole key store revoked (functions/revocation.ts).
   */
  disabled(keyId: string): string | undefined {
    if (this.#disabled.has(keyId)) return 'The external key is disabled';
    return revocation?.reason(this.name, keyId);
  }

  /** Whether the revocation switch has cut this key store off (its log lines say so). */
  get revoked(): boolean {
    return revocation?.reason(this.name) !== undefined;
  }

  /** Takes one request from the key store's quota; false when it is used up. */
  admit(): boolean {
    return this.#quota?.take() ?? true;
  }

  setCredentials(credentials: Credential[]): void {
    this.#secrets = new Map(credentials.map((c) => [c.accessKeyId, c.secretAccessKey]));
  }
}

function loadPolicies(keystore: string, file: string): Authorizer {
  const authorizer = createAuthorizer(readFileSync(file, 'utf8'), keystore);
  for (const finding of authorizer.warnings) logger.warn('Cedar policy finding', { keystore, finding });
  logger.info('Cedar policies loaded', { keystore, policyIds: authorizer.policyIds });
  return authorizer;
}

/** `rate` tokens a second, at most `burst` saved up. */
class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #updated = performance.now();

  constructor(rate: number, burst: number) {
    this.#rate = rate;
    this.#burst = burst;
    this.#tokens = burst;
  }

  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#updated) / 1000) * this.#rate);
    this.#updated = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

/** Key stores by path prefix. */
export const keystores: ReadonlyMap<string, Keystore> = new Map(
  config.keystores.map((ks) => [ks.pathPrefix, new Keystore(ks)]),
);

/**
 * Key store credentials that can change while the proxy runs, so that a rotation (add the new
 * credential, update KMS, remove the old one) needs no restart or redeploy (spec: SigV4
 * credentials rotation): Secrets Manager secrets, read again once `secrets.cacheSeconds` have
 * passed, and local files, read again when they change (looked at once a second at most).
 * A source that cannot be read any more keeps the credentials it last gave.
 */
class CredentialSources {
  #secretsExpire = 0;
  #secretsLoaded = false;
  #inflight: Promise<void> | undefined;
  #filesCheckedAt = 0;
  /** mtime, inode and size of each file as last read: a change in any is a new version. */
  readonly #fileVersions = new Map<string, string>();
  readonly #secretSources = config.keystores.filter((ks) => ks.credentialsSecretArn !== undefined);
  readonly #fileSources = config.keystores.filter((ks) => ks.credentialsFile !== undefined);

  /** A promise only when Secrets Manager is due: otherwise the request goes on without yielding. */
  refreshIfDue(): Promise<void> | undefined {
    const now = Date.now();
    if (this.#fileSources.length > 0 && now - this.#filesCheckedAt >= 1000) this.refreshFiles(now);
    if (this.#secretSources.length === 0 || now < this.#secretsExpire) return undefined;
    this.#inflight ??= this.#refreshSecrets().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  refreshFiles(now = Date.now()): void {
    this.#filesCheckedAt = now;
    for (const ks of this.#fileSources) {
      const file = ks.credentialsFile as string;
      const known = this.#fileVersions.get(file);
      try {
        const stat = statSync(file);
        const version = `${stat.mtimeMs}/${stat.ino}/${stat.size}`;
        if (version === known) continue;
        keystores
          .get(ks.pathPrefix)
          ?.setCredentials(parseCredentialsSecret(ks.name, readFileSync(file, 'utf8')));
        this.#fileVersions.set(file, version);
        if (known !== undefined) logger.info('Key store credentials changed', { keystore: ks.name });
      } catch (error) {
        if (known === undefined) throw error;
        logger.warn('Could not read the key store credentials again; keeping the previous ones', {
          keystore: ks.name,
          error,
        });
      }
    }
  }

  async #refreshSecrets(): Promise<void> {
    try {
      for (const ks of this.#secretSources) {
        const credentials = await readSecret(ks.credentialsSecretArn as string, (text) =>
          parseCredentialsSecret(ks.name, text),
        );
        keystores.get(ks.pathPrefix)?.setCredentials(credentials);
      }
      this.#secretsLoaded = true;
      this.#secretsExpire = Date.now() + config.secrets.cacheSeconds * 1000;
    } catch (error) {
      if (!this.#secretsLoaded) throw error;
      // Keep serving with the credentials already known; try again soon.
      logger.warn('Could not read the key store credentials again; keeping the previous ones', { error });
      this.#secretsExpire = Date.now() + Math.min(config.secrets.cacheSeconds, 30) * 1000;
    }
  }
}

export const credentialSources = new CredentialSources();
credentialSources.refreshFiles();

/**
 * A Secrets Manager secret, parsed. What fails names the secret and why (the SDK's error, the
 * parser's message), never its value: at start-up it is the error of the init phase.
 */
async function readSecret<T>(id: string, parse: (text: string) => T): Promise<T> {
  // Loaded only when a secret is configured: local runs never touch the AWS SDK.
  const { getSecret } = await import('@aws-lambda-powertools/parameters/secrets');
  let value: unknown;
  try {
    value = await getSecret(id, { forceFetch: true });
  } catch (error) {
    const sdkError = ((error as Error).cause ?? error) as Error;
    throw new Error(`Cannot read the secret ${id}: ${sdkError.name}: ${sdkError.message}`, { cause: error });
  }
  if (typeof value !== 'string') throw new Error(`The secret ${id} has no SecretString`);
  try {
    return parse(value);
  } catch (error) {
    throw new Error(`The secret ${id}: ${(error as Error).message}`, { cause: error });
  }
}

async function pinOf(member: { pin?: string; pinSecretArn?: string }): Promise<string> {
  if (member.pin === undefined && member.pinSecretArn !== undefined) {
    return readSecret(member.pinSecretArn, parsePinSecret);
  }
  return member.pin as string;
}

/**
 * The HSMs: the `hsm` section, or each of its `fleet` entries with the section's values as
 * defaults. Each runs in a worker thread of its own (per-call deadlines), connecting meanwhile.
 */
async function createFleet(): Promise<HsmFleet> {
  const { fleet, ...defaults } = config.hsm;
  const members = fleet ?? [{ name: defaults.tokenSerial ?? defaults.tokenLabel }];
  const created = [];
  for (const member of members) {
    const own = member.pin !== undefined || member.pinSecretArn !== undefined;
    // XKS_HSM_PIN (local use) is the `hsm` section's PIN, and so the default of every HSM.
    const pin = await pinOf(own ? member : process.env.XKS_HSM_PIN ? { pin: defaults.pin } : defaults);
    const profile = member.profile ?? defaults.profile;
    const tokenSerial = member.tokenSerial ?? (member.tokenLabel ? undefined : defaults.tokenSerial);
    const hsm = new WorkerHsm({
      pkcs11: {
        modulePath: member.modulePath ?? defaults.modulePath,
        libraryParameters: member.libraryParameters ?? defaults.libraryParameters,
        tokenLabel: member.tokenLabel ?? (member.tokenSerial ? undefined : defaults.tokenLabel),
        ...(tokenSerial ? { tokenSerial } : {}),
        pin,
        profile: VENDOR_PROFILES[profile],
      },
      keyCacheTtlMs: defaults.keyCacheSeconds * 1000,
      callTimeoutMs: defaults.callTimeoutMs,
      startTimeoutMs: defaults.startTimeoutMs,
      onEvent: (event) => logger.warn('HSM event', { hsm: member.name, event }),
      onConnectFailure: (reason) => logger.error('HSM connection failed', { hsm: member.name, reason }),
    });
    created.push({ name: member.name, hsm });
  }
  return new HsmFleet(created);
}

/** GetHealthStatus's deep check, a real AES-GCM round trip with the health-check key (never a customer key). */
export async function healthRoundTrip(hsm: Hsm): Promise<void> {
  const key = await hsm.findKey(config.hsm.healthCheckKeyLabel);
  if (key === undefined) throw new Error(`health-check key '${config.hsm.healthCheckKeyLabel}' not found`);
  const probe = randomBytes(32);
  const aad = hsmAad(undefined, METADATA_V1);
  const decrypted = await hsm.decrypt(key, await hsm.encrypt(key, probe, aad), aad);
  if (!decrypted.equals(probe)) throw new Error('health-check round trip returned other bytes');
}

/**
 * The init phase ends only once an HSM has logged in and done a round trip: provisioned concurrency
 * runs the init ahead of traffic, and an environment frozen with its login under way would make
 * its first request pay for it, against KMS's 250 ms. The first call waits for the login at most
 * startTimeoutMs; the HSMs are tried in order until one answers, not after that long. One that is
 * not ready does not stop the start-up: requests and the health check report it.
 */
async function warmUp(fleet: HsmFleet): Promise<void> {
  const deadline = performance.now() + config.hsm.startTimeoutMs;
  for (const [index, member] of fleet.members.entries()) {
    if (index > 0 && performance.now() > deadline) return;
    try {
      await fleet.probe(index, healthRoundTrip);
      return;
    } catch (error) {
      logger.warn('HSM not ready at the end of the init phase', { hsm: member.name, error });
    }
  }
}

/** The audit key: from the configuration, or a random one that no one can verify with. */
async function auditKey(): Promise<Buffer> {
  const { keyFile, keySecretArn } = config.audit ?? {};
  if (keyFile !== undefined) return parseAuditKey(readFileSync(keyFile, 'utf8'), 'audit.keyFile');
  if (keySecretArn !== undefined) {
    return readSecret(keySecretArn, (text) => parseAuditKey(text, 'audit.keySecretArn'));
  }
  logger.warn(
    'No audit key (audit.keyFile or audit.keySecretArn): this process keys its audit records with a random key it never stores, so they cannot be verified',
  );
  return randomBytes(AUDIT_KEY_BYTES);
}

/** This process's audit chain (functions/audit.ts); its start marker is written now, at init. */
export const auditTrail: AuditChain = startAuditChain(await auditKey());

/**
 * The revocation switch (functions/revocation.ts), read now and again when due. Each change it
 * sees is logged with its audit record, whatever the log level, like the chain's start.
 */
export const revocation: RevocationSwitch | undefined =
  config.revocation &&
  new RevocationSwitch(config.revocation, {
    readSecret: (arn) => readSecret(arn, (text) => text),
    readFile: (path) => {
      const stat = statSync(path);
      return { text: readFileSync(path, 'utf8'), version: `${stat.mtimeMs}/${stat.ino}/${stat.size}` };
    },
    onChange: (changes, source) => {
      for (const { entry, revoked } of changes) {
        const [keystore, keyId] = entry.split('/');
        const audit = auditTrail.next(
          { keystore: keystore === ALL_KEYSTORES ? undefined : keystore, keyId, revoked, source },
          new Date(),
          'revocation',
        );
        const what = keystore === ALL_KEYSTORES ? 'every key store' : (keyId ?? 'the whole key store');
        writeAuditLine(revoked ? 'WARN' : 'INFO', `Revocation ${revoked ? 'on' : 'off'}: ${what}`, audit);
      }
    },
    onError: (error, source) =>
      logger.warn('Could not read the revocation switch again; keeping what it said last', { source, error }),
  });
await revocation?.load();

/** Step 0 of every request: the sources that can change while the proxy runs, read again when due. */
export function refreshIfDue(): Promise<unknown> | undefined {
  const credentials = credentialSources.refreshIfDue();
  const revoked = revocation?.refreshIfDue();
  return credentials && revoked ? Promise.all([credentials, revoked]) : (credentials ?? revoked);
}

export const hsm: HsmFleet = await createFleet();

await credentialSources.refreshIfDue();
// Last: the HSM logs in on its worker thread while the secrets are read.
await warmUp(hsm);
