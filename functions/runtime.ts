// What every handler shares, created once per process at module scope, i.e. in the Lambda init
// phase: the validated configuration and its secrets, the HSM session (C_Initialize, C_OpenSession,
// C_Login), the key stores, the logger and the metrics.
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import type { Hsm } from '../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../layers/pkcs11/pkcs11-hsm.ts';
import {
  type Credential,
  type KeystoreConfig,
  loadConfig,
  type ProxyConfig,
  parseCredentialsSecret,
  parsePinSecret,
} from './config.ts';

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
  readonly #keys: ReadonlySet<string>;
  readonly #keyPattern: RegExp | undefined;
  #secrets = new Map<string, string>();

  constructor(ks: KeystoreConfig) {
    this.name = ks.name;
    this.pathPrefix = ks.pathPrefix;
    this.allowedRegions = ks.allowedRegions && new Set(ks.allowedRegions);
    this.#keys = new Set(ks.keys);
    this.#keyPattern = ks.keyPattern === undefined ? undefined : new RegExp(ks.keyPattern);
    if (ks.credentials) this.setCredentials(ks.credentials);
  }

  /** The secret of an access key id of this key store (spec: Appendix A, Task 3). */
  secretOf = (accessKeyId: string): string | undefined => this.#secrets.get(accessKeyId);

  /** Whether this key store may use an external key id; never the health-check key. */
  allows(keyId: string): boolean {
    if (keyId === config.hsm.healthCheckKeyLabel) return false;
    return this.#keys.has(keyId) || (this.#keyPattern?.test(keyId) ?? false);
  }

  setCredentials(credentials: Credential[]): void {
    this.#secrets = new Map(credentials.map((c) => [c.accessKeyId, c.secretAccessKey]));
  }
}

/** Key stores by path prefix. */
export const keystores: ReadonlyMap<string, Keystore> = new Map(
  config.keystores.map((ks) => [ks.pathPrefix, new Keystore(ks)]),
);

/**
 * Credentials kept in Secrets Manager, read again once `secrets.cacheSeconds` have passed, so that
 * a rotation (add the new credential, update KMS, remove the old one) needs no redeploy.
 */
class SecretsRefresh {
  #expires = 0;
  #loaded = false;
  #inflight: Promise<void> | undefined;
  readonly #sources = config.keystores.filter((ks) => ks.credentialsSecretArn !== undefined);

  /** A promise only when the secrets are due: otherwise the request goes on without yielding. */
  refreshIfDue(): Promise<void> | undefined {
    if (this.#sources.length === 0 || Date.now() < this.#expires) return undefined;
    this.#inflight ??= this.#refresh().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #refresh(): Promise<void> {
    try {
      for (const ks of this.#sources) {
        const credentials = parseCredentialsSecret(
          ks.name,
          await readSecret(ks.credentialsSecretArn as string),
        );
        keystores.get(ks.pathPrefix)?.setCredentials(credentials);
      }
      this.#loaded = true;
      this.#expires = Date.now() + config.secrets.cacheSeconds * 1000;
    } catch (error) {
      if (!this.#loaded) throw error;
      // Keep serving with the credentials already known; try again soon.
      logger.warn('Could not read the key store credentials again; keeping the previous ones', { error });
      this.#expires = Date.now() + Math.min(config.secrets.cacheSeconds, 30) * 1000;
    }
  }
}

export const secrets = new SecretsRefresh();

async function readSecret(id: string): Promise<string> {
  // Loaded only when a secret is configured: local runs never touch the AWS SDK.
  const { getSecret } = await import('@aws-lambda-powertools/parameters/secrets');
  const value = await getSecret(id, { forceFetch: true });
  if (typeof value !== 'string') throw new Error(`secret ${id} has no SecretString`);
  return value;
}

const pin =
  !process.env.XKS_HSM_PIN && config.hsm.pinSecretArn
    ? parsePinSecret(await readSecret(config.hsm.pinSecretArn))
    : (config.hsm.pin as string);

export const hsm: Hsm = new Pkcs11Hsm({
  modulePath: config.hsm.modulePath,
  tokenLabel: config.hsm.tokenLabel,
  pin,
  keyCacheTtlMs: config.hsm.keyCacheSeconds * 1000,
});

await secrets.refreshIfDue();
