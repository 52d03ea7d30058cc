// GetHealthStatus (spec: API operations, GetHealthStatus): a deep check of every HSM of the fleet,
// a real AES-GCM encrypt and decrypt with a dedicated health-check key (never a customer key),
// cached for at most healthCheck.cacheSeconds (<= 60 s), combined with each HSM's recent outcomes
// (its circuit breaker). Never subject to secondary authorization.
import { performance } from 'node:perf_hooks';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { HsmHealth } from '../../layers/pkcs11/hsm.ts';
import type { ProxyConfig } from '../config.ts';
import { METRIC } from '../metrics.ts';
import type { HsmFleetView, XksRequest } from '../middleware.ts';
import type { HealthRequest } from '../schemas.ts';
import { healthRoundTrip } from '../xks.ts';

const RANK: Record<HsmHealth, number> = { ACTIVE: 0, DEGRADED: 1, UNAVAILABLE: 2 };
const UNKNOWN = 'unknown (HSM not reached yet)';

/** GetHealthStatus with `config`'s settings, and its own cache of deep checks. */
export function getHealthStatus(config: ProxyConfig) {
  const cached = new Map<number, { status: HsmHealth; expires: number }>();

  async function deepCheck({ fleet, logger }: XksRequest<HealthRequest>, index: number): Promise<HsmHealth> {
    const now = Date.now();
    const hit = cached.get(index);
    if (hit !== undefined && hit.expires > now) return hit.status;
    const started = performance.now();
    try {
      await fleet.probe(index, (hsm) => healthRoundTrip(hsm, config.hsm.healthCheckKeyLabel));
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

  return async (request: XksRequest<HealthRequest>) => {
    const fleet: HsmFleetView = request.fleet;
    // Each HSM has its own worker thread: checked side by side, the answer waits for the slowest only.
    const deep = await Promise.all(fleet.members.map((_, index) => deepCheck(request, index)));
    const ekmFleetDetails = fleet.members.map((member, index) => {
      const recent = fleet.health(index);
      const checked = deep[index] ?? 'UNAVAILABLE';
      const info = member.info();
      return {
        id: info?.id ?? member.name,
        model: info?.model || UNKNOWN,
        healthStatus: RANK[recent] > RANK[checked] ? recent : checked,
      };
    });
    const unavailable = ekmFleetDetails.filter((d) => d.healthStatus === 'UNAVAILABLE').length;
    request.addMetric(METRIC.hsmUnavailable, MetricUnit.Count, unavailable);
    return {
      xksProxyFleetSize: config.proxy.fleetSize,
      xksProxyVendor: config.proxy.vendor,
      xksProxyModel: config.proxy.model,
      ekmVendor: fleet.members.map((m) => m.info()?.vendor).find(Boolean) ?? UNKNOWN,
      ekmFleetDetails,
    };
  };
}
