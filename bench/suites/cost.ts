// Suite 5: a Lambda capacity and cost estimate derived from suites 1 (handler duration) and 3 (cold
// start). Arithmetic only; every assumption is a named constant and is printed in the report.
import type { ColdStartResults } from './coldstart.ts';
import type { HandlerResults } from './handler.ts';

/**
 * us-east-1 list prices used here: AWS's published prices (unchanged since arm64 pricing appeared
 * in 2021), typed in so that the suite needs no network. Check them against
 * https://aws.amazon.com/lambda/pricing/ and https://aws.amazon.com/api-gateway/pricing/ before use.
 */
export const PRICES = {
  asOf: 'AWS list prices for us-east-1 as published in 2024-2025 (not re-checked online from this machine)',
  requestsPerMillion: 0.2,
  apiGatewayRestPerMillion: 3.5,
  x86_64: {
    gbSecond: 0.0000166667,
    provisionedGbSecond: 0.0000041667,
    provisionedDurationGbSecond: 0.0000097222,
  },
  arm64: {
    gbSecond: 0.0000133334,
    provisionedGbSecond: 0.0000033334,
    provisionedDurationGbSecond: 0.0000077778,
  },
} as const;

export const ASSUMPTIONS = {
  /** KMS's default request quota per external key store. */
  requestRate: 1800,
  memoryMb: 1024,
  /** Lambda gives one full vCPU at 1769 MB and CPU in proportion below it. */
  fullVcpuMb: 1769,
  /** Unmeasured: the Runtime API round trip per invocation (next + response), charged to occupancy, not billed. */
  platformOverheadMs: 1,
  /** Headroom over Little's law's mean: bursts within a second, GC pauses, HSM latency variance. */
  safetyFactor: 3,
  /** Sensitivity: a network HSM (e.g. CloudHSM) round trip per PKCS#11 operation, instead of SoftHSM in-process. */
  networkHsmMs: 2,
  hoursPerMonth: 730,
};

export interface ArchCost {
  arch: 'x86_64' | 'arm64';
  onDemandPerMillion: number;
  provisionedPerMonth: number;
  provisionedPerMillionAtQuota: number;
  monthlyAtQuota: number;
}

export interface CostResults {
  prices: typeof PRICES;
  assumptions: typeof ASSUMPTIONS;
  /** Local handler p50 / p99 of the slowest small Encrypt/Decrypt (ms). */
  localP50Ms: number;
  localP99Ms: number;
  cpuScale: number;
  /** Billed per invocation (1 ms granularity). */
  billedMs: number;
  /** Time an environment is busy per request (scaled p99 + platform overhead). */
  occupancyMs: number;
  littleL: number;
  concurrency: number;
  /** The same with a network HSM round trip per request. */
  networkHsm: { occupancyMs: number; littleL: number; concurrency: number };
  /** Environments kept warm: Encrypt and Decrypt each sized for the whole rate, 1 each for the others. */
  provisionedEnvironments: number;
  requestsPerMonthAtQuota: number;
  coldStartLocalMs: number;
  arch: ArchCost[];
}

export function costEstimate(handler: HandlerResults, cold: ColdStartResults): CostResults {
  const a = ASSUMPTIONS;
  const small = handler.rows.filter((r) => r.id === 'encrypt-32' || r.id === 'decrypt-32');
  // At 1024 MB the HSM worker does not spin (functions/config.ts defaultSpinMicros).
  const localP50Ms = Math.max(...small.map((r) => (r.sleeping ?? r.handler).p50)) / 1000;
  const localP99Ms = Math.max(...small.map((r) => (r.sleeping ?? r.handler).p99)) / 1000;
  const cpuScale = a.fullVcpuMb / a.memoryMb;
  const billedMs = Math.max(1, Math.ceil(localP50Ms * cpuScale));
  const occupancyMs = localP99Ms * cpuScale + a.platformOverheadMs;
  const littleL = (a.requestRate * occupancyMs) / 1000;
  const concurrency = Math.ceil(littleL * a.safetyFactor);
  const netOccupancy = occupancyMs + a.networkHsmMs;
  const netL = (a.requestRate * netOccupancy) / 1000;
  const provisionedEnvironments = 2 * concurrency + 2;
  const requestsPerMonthAtQuota = a.requestRate * a.hoursPerMonth * 3600;
  const gb = a.memoryMb / 1024;
  const arch: ArchCost[] = (['x86_64', 'arm64'] as const).map((name) => {
    const p = PRICES[name];
    const fixedPerMillion = PRICES.requestsPerMillion + PRICES.apiGatewayRestPerMillion;
    const onDemandPerMillion = fixedPerMillion + 1e6 * (billedMs / 1000) * gb * p.gbSecond;
    const provisionedPerMonth = provisionedEnvironments * gb * a.hoursPerMonth * 3600 * p.provisionedGbSecond;
    const provisionedDurationPerMillion = 1e6 * (billedMs / 1000) * gb * p.provisionedDurationGbSecond;
    const provisionedPerMillionAtQuota =
      fixedPerMillion + provisionedDurationPerMillion + (provisionedPerMonth / requestsPerMonthAtQuota) * 1e6;
    return {
      arch: name,
      onDemandPerMillion: round2(onDemandPerMillion),
      provisionedPerMonth: round2(provisionedPerMonth),
      provisionedPerMillionAtQuota: round2(provisionedPerMillionAtQuota),
      monthlyAtQuota: Math.round((provisionedPerMillionAtQuota * requestsPerMonthAtQuota) / 1e6),
    };
  });
  const encryptCold = cold.rows.find((r) => r.name === 'encrypt');
  return {
    prices: PRICES,
    assumptions: a,
    localP50Ms: round3(localP50Ms),
    localP99Ms: round3(localP99Ms),
    cpuScale: round3(cpuScale),
    billedMs,
    occupancyMs: round3(occupancyMs),
    littleL: round3(littleL),
    concurrency,
    networkHsm: {
      occupancyMs: round3(netOccupancy),
      littleL: round3(netL),
      concurrency: Math.ceil(netL * a.safetyFactor),
    },
    provisionedEnvironments,
    requestsPerMonthAtQuota,
    coldStartLocalMs: encryptCold?.medianMs ?? Number.NaN,
    arch,
  };
}

const round2 = (v: number) => Math.round(v * 100) / 100;
const round3 = (v: number) => Math.round(v * 1000) / 1000;
