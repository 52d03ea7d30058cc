// GetHealthStatus (spec: API operations, GetHealthStatus): a deep check, a real AES-GCM encrypt
// and decrypt with a dedicated health-check key (never a customer key), cached for at most
// healthCheck.cacheSeconds (<= 60 s). Never subject to secondary authorization.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Hsm } from '../layers/pkcs11/hsm.ts';
import { METRIC } from './metrics.ts';
import { xksHandler } from './middleware.ts';
import { config, logger, metrics } from './runtime.ts';
import type { HealthRequest } from './schemas.ts';
import { hsmAad, METADATA_V1 } from './xks.ts';

type HealthStatus = 'ACTIVE' | 'DEGRADED' | 'UNAVAILABLE';

export const handler = xksHandler<HealthRequest>('GetHealthStatus', ({ hsm }) => {
  const healthStatus = deepCheck(hsm);
  metrics.addMetric(METRIC.hsmUnavailable, MetricUnit.Count, healthStatus === 'UNAVAILABLE' ? 1 : 0);
  const info = hsm.info();
  return {
    xksProxyFleetSize: config.proxy.fleetSize,
    xksProxyVendor: config.proxy.vendor,
    xksProxyModel: config.proxy.model,
    ekmVendor: info?.vendor || 'unknown (HSM not reached yet)',
    ekmFleetDetails: [
      {
        id: info?.id || config.hsm.tokenLabel,
        model: info?.model || 'unknown (HSM not reached yet)',
        healthStatus,
      },
    ],
  };
});

let cached: { status: HealthStatus; expires: number } | undefined;

function deepCheck(hsm: Hsm): HealthStatus {
  const now = Date.now();
  if (cached !== undefined && cached.expires > now) return cached.status;
  const started = performance.now();
  try {
    const key = hsm.findKey(config.hsm.healthCheckKeyLabel);
    if (key === undefined) throw new Error(`health-check key '${config.hsm.healthCheckKeyLabel}' not found`);
    const probe = randomBytes(32);
    const aad = hsmAad(undefined, METADATA_V1);
    const decrypted = hsm.decrypt(key, hsm.encrypt(key, probe, aad), aad);
    if (!decrypted.equals(probe)) throw new Error('health-check round trip returned other bytes');
  } catch (error) {
    // Not cached: the next check sees a recovered HSM at once.
    cached = undefined;
    logger.error('Deep health check failed', { error });
    return 'UNAVAILABLE';
  }
  const elapsedMs = performance.now() - started;
  const status = elapsedMs > config.healthCheck.degradedAboveMs ? 'DEGRADED' : 'ACTIVE';
  cached = { status, expires: now + config.healthCheck.cacheSeconds * 1000 };
  return status;
}
