// GetHealthStatus (spec: API operations, GetHealthStatus): a deep check of every HSM of the fleet,
// a real AES-GCM encrypt and decrypt with a dedicated health-check key (never a customer key),
// cached for at most healthCheck.cacheSeconds (<= 60 s), combined with each HSM's recent outcomes
// (its circuit breaker). Never subject to secondary authorization.
// First: the HSM worker starts while the other modules load (cold start).
import '../layers/pkcs11/prestart.ts';
import { performance } from 'node:perf_hooks';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { HsmHealth } from '../layers/pkcs11/hsm.ts';
import { METRIC } from './metrics.ts';
import { xksHandler } from './middleware.ts';
import { config, hsm as fleet, healthRoundTrip, logger, metrics } from './runtime.ts';
import type { HealthRequest } from './schemas.ts';

const RANK: Record<HsmHealth, number> = { ACTIVE: 0, DEGRADED: 1, UNAVAILABLE: 2 };
const UNKNOWN = 'unknown (HSM not reached yet)';

export const handler = xksHandler<HealthRequest>('GetHealthStatus', async () => {
  const ekmFleetDetails = [];
  for (const [index, member] of fleet.members.entries()) {
    const deep = await deepCheck(index);
    const recent = fleet.health(index);
    const info = member.hsm.info();
    ekmFleetDetails.push({
      id: info?.id ?? member.name,
      model: info?.model || UNKNOWN,
      healthStatus: RANK[recent] > RANK[deep] ? recent : deep,
    });
  }
  const unavailable = ekmFleetDetails.filter((d) => d.healthStatus === 'UNAVAILABLE').length;
  metrics.addMetric(METRIC.hsmUnavailable, MetricUnit.Count, unavailable);
  return {
    xksProxyFleetSize: config.proxy.fleetSize,
    xksProxyVendor: config.proxy.vendor,
    xksProxyModel: config.proxy.model,
    ekmVendor: fleet.members.map((m) => m.hsm.info()?.vendor).find(Boolean) ?? UNKNOWN,
    ekmFleetDetails,
  };
});

const cached = new Map<number, { status: HsmHealth; expires: number }>();

async function deepCheck(index: number): Promise<HsmHealth> {
  const now = Date.now();
  const hit = cached.get(index);
  if (hit !== undefined && hit.expires > now) return hit.status;
  const started = performance.now();
  try {
    await fleet.probe(index, healthRoundTrip);
  } catch (error) {
    // Not cached: the next check sees a recovered HSM at once.
    cached.delete(index);
    logger.error('Deep health check failed', { hsm: fleet.members[index]?.name, error });
    return 'UNAVAILABLE';
  }
  const elapsedMs = performance.now() - started;
  const status = elapsedMs > config.healthCheck.degradedAboveMs ? 'DEGRADED' : 'ACTIVE';
  cached.set(index, { status, expires: now + config.healthCheck.cacheSeconds * 1000 });
  return status;
}
