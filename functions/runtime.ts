// What every handler shares, created once per process at module scope, i.e. in the Lambda init
// phase: the validated configuration, the HSM session (C_Initialize, C_OpenSession, C_Login),
// the logger and the metrics.
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import type { Hsm } from '../layers/pkcs11/hsm.ts';
import { Pkcs11Hsm } from '../layers/pkcs11/pkcs11-hsm.ts';
import { type KeystoreConfig, loadConfig, type ProxyConfig } from './config.ts';

export const SERVICE = 'xks-proxy';

export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE });
export const metrics = new Metrics({
  namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'XksProxy',
  serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE,
});

export const config: ProxyConfig = loadConfig();

export const hsm: Hsm = new Pkcs11Hsm({
  modulePath: config.hsm.modulePath,
  tokenLabel: config.hsm.tokenLabel,
  pin: config.hsm.pin,
  keyCacheTtlMs: config.hsm.keyCacheSeconds * 1000,
});

/** A key store, ready for per-request use: its credentials and keys indexed once. */
export interface Keystore {
  readonly name: string;
  readonly pathPrefix: string;
  readonly secretOf: (accessKeyId: string) => string | undefined;
  readonly keys: ReadonlySet<string>;
  readonly allowedRegions: ReadonlySet<string> | undefined;
}

function keystore(ks: KeystoreConfig): Keystore {
  const secrets = new Map(ks.credentials.map((c) => [c.accessKeyId, c.secretAccessKey]));
  return {
    name: ks.name,
    pathPrefix: ks.pathPrefix,
    secretOf: (accessKeyId) => secrets.get(accessKeyId),
    keys: new Set(ks.keys),
    allowedRegions: ks.allowedRegions && new Set(ks.allowedRegions),
  };
}

/** Key stores by path prefix. */
export const keystores: ReadonlyMap<string, Keystore> = new Map(
  config.keystores.map((ks) => [ks.pathPrefix, keystore(ks)]),
);
