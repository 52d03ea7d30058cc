// What every request of a process shares, made by createRuntime: the validated configuration and
// its secrets, the HSM fleet (C_Initialize, C_OpenSession, C_Login), the key stores and their
// credential sources, the logger, the metrics, the audit chain and the revocation switch. A Lambda
// entry file makes its runtime in the init phase; the local server and the tests make theirs.
// Importing this file does nothing: one process may hold several runtimes, each its own.
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { HsmFleet } from '../layers/pkcs11/fleet.ts';
import { VENDOR_PROFILES } from '../layers/pkcs11/profiles.ts';
import { WorkerHsm } from '../layers/pkcs11/worker-hsm.ts';
import { AUDIT_KEY_BYTES, AuditChain, parseAuditKey } from './audit.ts';
import { type Authorizer, createAuthorizer } from './authorization.ts';
import { readSecret } from './aws.ts';
import { lowerV8WorkerPriority } from './background-threads.ts';
import {
  type Credential,
  type CredentialRules,
  type KeystoreConfig,
  type ProxyConfig,
  parseCredentialsSecret,
  parsePinSecret,
} from './config.ts';
import type { FrontDoor } from './front-door.ts';
import { operationMetrics } from './metrics.ts';
import { commonNameMatcher } from './mtls.ts';
import { ALL_KEYSTORES, RevocationSwitch } from './revocation.ts';
import type { Operation } from './routes.ts';
import { healthRoundTrip } from './xks.ts';
import { YoungGenerationCollector } from './young-gc.ts';

export const SERVICE = 'xks-proxy';
const NAMESPACE = 'XksProxy';

export interface RuntimeOptions {
  /**
   * Running as a Lambda function: credentials read later must not be the public demo ones, and
   * behind API Gateway, API Gateway enforces the key stores' throttle. The process serves one
   * request at a time: it collects its young generation during HSM calls (`collector`) and puts
   * V8's background threads behind the request's thread (`answered`).
   */
  inLambda?: boolean;
  /**
   * The Lambda function's front door. Behind an ALB, which has no throttling of its own, each
   * environment enforces the key stores' throttle itself: the limits are then per environment
   * (docs/deploy.md, "API Gateway or ALB").
   */
  frontDoor?: FrontDoor;
  /**
   * The init phase runs while a request waits for it: a Lambda environment made on demand. The
   * HSMs' first calls are then made on this thread instead of after a worker thread's own start
   * (WorkerHsm firstCallsHere), and the init makes no round trip of its own (warmUp); with
   * provisioned concurrency the init waits for the workers and the round trip.
   */
  initOnRequestPath?: boolean;
}

export interface Runtime {
  readonly config: ProxyConfig;
  /** Lines at the configured level (POWERTOOLS_LOG_LEVEL): start-up, HSM events, failed refreshes. */
  readonly logger: Logger;
  /**
   * The lines that carry audit records: each request's line, the chain's start, the revocation
   * switch's changes. Written whatever the configured level: a record left out breaks the chain.
   */
  readonly auditLogger: Logger;
  /** The cold start metric (captureColdStartMetric). */
  readonly metrics: Metrics;
  /** A new Metrics for one operation's requests (functions/metrics.ts, operationMetrics). */
  metricsOf(operation: Operation): Metrics;
  readonly hsm: HsmFleet;
  /** Key stores by path prefix. */
  readonly keystores: ReadonlyMap<string, Keystore>;
  /** This runtime's audit chain (functions/audit.ts), started when the runtime was made. */
  readonly audit: AuditChain;
  /**
   * In Lambda, where one request at a time waits for each HSM call: collects the young generation
   * during those waits (functions/young-gc.ts). Undefined elsewhere, or without gc().
   */
  readonly collector: YoungGenerationCollector | undefined;
  /** With clientCertificate: whether a client certificate's subject CN may call the proxy. */
  readonly allowsCommonName: ((commonName: string | undefined) => boolean) | undefined;
  /** Step 0 of every request: the sources that can change while the proxy runs, read again when due. */
  refreshIfDue(): Promise<unknown> | undefined;
  /**
   * Told by the middleware that a response is made. After the first, with initOnRequestPath, the HSM
   * worker threads start: off the cold start's path, in time for the next requests' deadlines. In
   * Lambda, V8's background threads then go to the lowest priority (functions/background-threads.ts).
   */
  answered(): void;
  /** Stops the HSM workers. */
  close(): void;
}

/**
 * The runtime of `config`. It is ready once an HSM has logged in and done a round trip (at most
 * hsm.startTimeoutMs later: see warmUp); with initOnRequestPath, as soon as it is made (the first
 * request's calls wait for the login). Fails, naming the cause but never a secret, when a secret,
 * a policy file, a credentials file, the audit key or the revocation switch cannot be read.
 */
export async function createRuntime(config: ProxyConfig, options: RuntimeOptions = {}): Promise<Runtime> {
  const serviceName = process.env.POWERTOOLS_SERVICE_NAME || SERVICE;
  const logger = new Logger({ serviceName });
  const auditLogger = logger.createChild({ logLevel: 'INFO' });
  const metricsOptions = { namespace: process.env.POWERTOOLS_METRICS_NAMESPACE || NAMESPACE, serviceName };
  const metrics = new Metrics(metricsOptions);
  // First: the HSMs start connecting while the rest is read (on their worker threads, or on this
  // thread with firstCallsHere).
  const firstCallsHere = options.initOnRequestPath === true;
  const { fleet: hsm, workerHsms } = await createFleet(config, logger, firstCallsHere);
  // After the first response: the worker's start (`new Worker`) takes this thread a few ms.
  let answeredOnce = false;
  const afterFirstResponse = () => {
    if (firstCallsHere) for (const member of workerHsms) member.startWorker();
    if (options.inLambda === true) {
      logger.debug('V8 background threads at the lowest priority', { threads: lowerV8WorkerPriority() });
    }
  };
  try {
    const audit = new AuditChain(await auditKey(config, logger));
    auditLogger.info('Audit chain start', { audit: audit.start() });
    const revocation = config.revocation && revocationSwitch(config.revocation, audit, logger, auditLogger);
    await revocation?.load();
    const throttled = options.inLambda !== true || options.frontDoor === 'alb';
    const keystores = new Map(
      config.keystores.map((ks) => [
        ks.pathPrefix,
        new Keystore(ks, { config, revocation, throttled, logger }),
      ]),
    );
    const credentials = new CredentialSources(config, keystores, logger, { inLambda: options.inLambda });
    credentials.refreshFiles();
    await credentials.refreshIfDue();
    // On demand a request is waiting, and its own calls follow at once: the round trip would only
    // make it wait for more calls, each a network round trip to a real HSM.
    if (!firstCallsHere) await warmUp(hsm, config, logger);
    const allowed = config.clientCertificate?.allowedCommonNames;
    return {
      config,
      logger,
      auditLogger,
      metrics,
      metricsOf: (operation) => operationMetrics(metricsOptions, operation),
      hsm,
      keystores,
      audit,
      collector: options.inLambda === true ? YoungGenerationCollector.create() : undefined,
      allowsCommonName: allowed && commonNameMatcher(allowed),
      refreshIfDue: () => {
        const read = credentials.refreshIfDue();
        const revoked = revocation?.refreshIfDue();
        return read && revoked ? Promise.all([read, revoked]) : (read ?? revoked);
      },
      answered: () => {
        if (answeredOnce) return;
        answeredOnce = true;
        setImmediate(afterFirstResponse);
      },
      close: () => hsm.close(),
    };
  } catch (error) {
    hsm.close();
    throw error;
  }
}

/** A key store, ready for per-request use: its credentials and keys indexed once. */
export class Keystore {
  readonly name: string;
  readonly pathPrefix: string;
  readonly allowedRegions: ReadonlySet<string> | undefined;
  /** The key store's Cedar policies; none means SigV4 alone decides. */
  readonly authorizer: Authorizer | undefined;
  readonly #healthCheckKey: string;
  readonly #keys: ReadonlySet<string>;
  readonly #disabled: ReadonlySet<string>;
  readonly #keyPattern: RegExp | undefined;
  readonly #quota: TokenBucket | undefined;
  readonly #awsSampleMetadata: Buffer | undefined;
  readonly #revocation: RevocationSwitch | undefined;
  #secrets = new Map<string, string>();

  constructor(
    ks: KeystoreConfig,
    context: {
      config: ProxyConfig;
      revocation: RevocationSwitch | undefined;
      /** Whether this process enforces the key store's throttle (API Gateway does, in front of Lambda). */
      throttled: boolean;
      logger: Logger;
    },
  ) {
    this.name = ks.name;
    this.pathPrefix = ks.pathPrefix;
    this.allowedRegions = ks.allowedRegions && new Set(ks.allowedRegions);
    this.#healthCheckKey = context.config.hsm.healthCheckKeyLabel;
    this.#keys = new Set(ks.keys);
    this.#disabled = new Set(ks.disabledKeys);
    this.#keyPattern = ks.keyPattern === undefined ? undefined : new RegExp(ks.keyPattern);
    this.#revocation = context.revocation;
    const sample = ks.awsSampleProxy?.ciphertextMetadata;
    this.#awsSampleMetadata = sample === undefined ? undefined : Buffer.from(sample, 'base64');
    // Parsed and checked now: a broken policy stops the start-up, never a request.
    this.authorizer =
      ks.policyFile === undefined ? undefined : loadPolicies(ks.name, ks.policyFile, context.logger);
    this.#quota =
      ks.throttle && context.throttled
        ? new TokenBucket(ks.throttle.rateLimit, ks.throttle.burstLimit)
        : undefined;
    if (ks.credentials) this.setCredentials(ks.credentials);
  }

  /** The secret of an access key id of this key store (spec: Appendix A, Task 3). */
  secretOf = (accessKeyId: string): string | undefined => this.#secrets.get(accessKeyId);

  /** Whether this key store may use an external key id; never the health-check key. */
  allows(keyId: string): boolean {
    if (keyId === this.#healthCheckKey) return false;
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
    return this.#revocation?.reason(this.name, keyId);
  }

  /** Whether the revocation switch has cut this key store off (its log lines say so). */
  get revoked(): boolean {
    return this.#revocation?.reason(this.name) !== undefined;
  }

  /** Takes one request from the key store's quota; false when it is used up. */
  admit(): boolean {
    return this.#quota?.take() ?? true;
  }

  setCredentials(credentials: Credential[]): void {
    this.#secrets = new Map(credentials.map((c) => [c.accessKeyId, c.secretAccessKey]));
  }
}

function loadPolicies(keystore: string, file: string, logger: Logger): Authorizer {
  const authorizer = createAuthorizer(readFileSync(file, 'utf8'), keystore);
  for (const finding of authorizer.warnings) logger.warn('Cedar policy finding', { keystore, finding });
  logger.info('Cedar policies loaded', { keystore, policyIds: authorizer.policyIds });
  return authorizer;
}

/** `rate` tokens a second, at most `burst` saved up; `now` in milliseconds. */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #updated: number;

  constructor(rate: number, burst: number, now: () => number = performance.now.bind(performance)) {
    this.#rate = rate;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#updated = now();
  }

  take(): boolean {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#updated) / 1000) * this.#rate);
    this.#updated = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

/**
 * Key store credentials that can change while the proxy runs, so that a rotation (add the new
 * credential, update KMS, remove the old one) needs no restart or redeploy (spec: SigV4
 * credentials rotation): Secrets Manager secrets, read again once `secrets.cacheSeconds` have
 * passed, and local files, read again when they change (looked at once a second at most).
 * A source that cannot be read any more keeps the credentials it last gave.
 */
class CredentialSources {
  readonly #config: ProxyConfig;
  readonly #keystores: ReadonlyMap<string, Keystore>;
  readonly #logger: Logger;
  readonly #rules: CredentialRules;
  #secretsExpire = 0;
  #secretsLoaded = false;
  #inflight: Promise<void> | undefined;
  #filesCheckedAt = 0;
  /** mtime, inode and size of each file as last read: a change in any is a new version. */
  readonly #fileVersions = new Map<string, string>();
  readonly #secretSources: KeystoreConfig[];
  readonly #fileSources: KeystoreConfig[];

  constructor(
    config: ProxyConfig,
    keystores: ReadonlyMap<string, Keystore>,
    logger: Logger,
    rules: CredentialRules,
  ) {
    this.#config = config;
    this.#keystores = keystores;
    this.#logger = logger;
    this.#rules = rules;
    this.#secretSources = config.keystores.filter((ks) => ks.credentialsSecretArn !== undefined);
    this.#fileSources = config.keystores.filter((ks) => ks.credentialsFile !== undefined);
  }

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
        const version = versionOf(file);
        if (version === known) continue;
        this.#keystores
          .get(ks.pathPrefix)
          ?.setCredentials(parseCredentialsSecret(ks.name, readFileSync(file, 'utf8'), this.#rules));
        this.#fileVersions.set(file, version);
        if (known !== undefined) this.#logger.info('Key store credentials changed', { keystore: ks.name });
      } catch (error) {
        if (known === undefined) throw error;
        this.#logger.warn('Could not read the key store credentials again; keeping the previous ones', {
          keystore: ks.name,
          error,
        });
      }
    }
  }

  async #refreshSecrets(): Promise<void> {
    const { cacheSeconds } = this.#config.secrets;
    try {
      for (const ks of this.#secretSources) {
        const credentials = await secretOf(ks.credentialsSecretArn as string, (text) =>
          parseCredentialsSecret(ks.name, text, this.#rules),
        );
        this.#keystores.get(ks.pathPrefix)?.setCredentials(credentials);
      }
      this.#secretsLoaded = true;
      this.#secretsExpire = Date.now() + cacheSeconds * 1000;
    } catch (error) {
      if (!this.#secretsLoaded) throw error;
      // Keep serving with the credentials already known; try again soon.
      this.#logger.warn('Could not read the key store credentials again; keeping the previous ones', {
        error,
      });
      this.#secretsExpire = Date.now() + Math.min(cacheSeconds, 30) * 1000;
    }
  }
}

/** A file's version: a change of its mtime, inode or size is a new one. */
function versionOf(file: string): string {
  const stat = statSync(file);
  return `${stat.mtimeMs}/${stat.ino}/${stat.size}`;
}

/** A Secrets Manager secret, parsed; a parser's complaint names the secret, never its value. */
async function secretOf<T>(id: string, parse: (text: string) => T): Promise<T> {
  const text = await readSecret(id);
  try {
    return parse(text);
  } catch (error) {
    throw new Error(`The secret ${id}: ${(error as Error).message}`, { cause: error });
  }
}

async function pinOf(member: {
  pin?: string | undefined;
  pinSecretArn?: string | undefined;
}): Promise<string> {
  if (member.pin === undefined && member.pinSecretArn !== undefined) {
    return secretOf(member.pinSecretArn, parsePinSecret);
  }
  return member.pin as string;
}

/**
 * The HSMs: the `hsm` section, or each of its `fleet` entries with the section's values as
 * defaults. Each runs in worker threads of its own (per-call deadlines), connecting meanwhile;
 * with firstCallsHere, its first calls run on this thread.
 */
async function createFleet(
  config: ProxyConfig,
  logger: Logger,
  firstCallsHere: boolean,
): Promise<{ fleet: HsmFleet; workerHsms: WorkerHsm[] }> {
  const { fleet, ...defaults } = config.hsm;
  const members = fleet ?? [{ name: defaults.tokenSerial ?? defaults.tokenLabel }];
  const created = [];
  for (const member of members) {
    const own = member.pin !== undefined || member.pinSecretArn !== undefined;
    const pin = await pinOf(own ? member : defaults);
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
      firstCallsHere,
      onEvent: (event) => logger.warn('HSM event', { hsm: member.name, event }),
      onConnectFailure: (reason) => logger.error('HSM connection failed', { hsm: member.name, reason }),
    });
    created.push({ name: member.name, hsm });
  }
  return { fleet: new HsmFleet(created), workerHsms: created.map((member) => member.hsm) };
}

/**
 * The runtime is ready only once an HSM has logged in and done a round trip: provisioned
 * concurrency runs the init phase ahead of traffic, and an environment frozen with its login under
 * way would make its first request pay for it, against KMS's 250 ms. The first call waits for the
 * login at most startTimeoutMs; the HSMs are tried in order until one answers, not after that long.
 * One that is not ready does not stop the start-up: requests and the health check report it.
 */
async function warmUp(fleet: HsmFleet, config: ProxyConfig, logger: Logger): Promise<void> {
  const deadline = performance.now() + config.hsm.startTimeoutMs;
  for (const [index, member] of fleet.members.entries()) {
    if (index > 0 && performance.now() > deadline) return;
    try {
      await fleet.probe(index, (hsm) => healthRoundTrip(hsm, config.hsm.healthCheckKeyLabel));
      return;
    } catch (error) {
      logger.warn('HSM not ready at the end of the init phase', { hsm: member.name, error });
    }
  }
}

/** The audit key: from the configuration, or a random one that no one can verify with. */
async function auditKey(config: ProxyConfig, logger: Logger): Promise<Buffer> {
  const { keyFile, keySecretArn } = config.audit ?? {};
  if (keyFile !== undefined) return parseAuditKey(readFileSync(keyFile, 'utf8'), 'audit.keyFile');
  if (keySecretArn !== undefined) {
    return secretOf(keySecretArn, (text) => parseAuditKey(text, 'audit.keySecretArn'));
  }
  logger.warn(
    'No audit key (audit.keyFile or audit.keySecretArn): this process keys its audit records with a random key it never stores, so they cannot be verified',
  );
  return randomBytes(AUDIT_KEY_BYTES);
}

/**
 * The revocation switch (functions/revocation.ts). Each change it sees is logged with its audit
 * record, like the chain's start.
 */
function revocationSwitch(
  source: NonNullable<ProxyConfig['revocation']>,
  audit: AuditChain,
  logger: Logger,
  auditLogger: Logger,
): RevocationSwitch {
  return new RevocationSwitch(source, {
    readSecret,
    readFile: (path) => {
      const version = versionOf(path);
      return { text: readFileSync(path, 'utf8'), version };
    },
    onChange: (changes, source) => {
      for (const { entry, revoked } of changes) {
        const [keystore, keyId] = entry.split('/');
        const record = audit.next(
          { keystore: keystore === ALL_KEYSTORES ? undefined : keystore, keyId, revoked, source },
          new Date(),
          'revocation',
        );
        const what = keystore === ALL_KEYSTORES ? 'every key store' : (keyId ?? 'the whole key store');
        const message = `Revocation ${revoked ? 'on' : 'off'}: ${what}`;
        if (revoked) auditLogger.warn(message, { audit: record });
        else auditLogger.info(message, { audit: record });
      }
    },
    onError: (error, source) =>
      logger.warn('Could not read the revocation switch again; keeping what it said last', { source, error }),
  });
}
