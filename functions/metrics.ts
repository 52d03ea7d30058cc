// The names of the metrics the proxy emits (namespace XksProxy, dimensions service and operation),
// from metric-names.json, which infra/ reads too for the dashboard and alarms; and each request's
// EMF documents, through Powertools Metrics. A test checks the names against the dashboard and alarms.
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { MetricUnit as Unit } from '@aws-lambda-powertools/metrics/types';
import metricNames from './metric-names.json' with { type: 'json' };

/**
 * hsmUnavailable: how many HSMs of the fleet GetHealthStatus found UNAVAILABLE (0 when all serve).
 * coldStart: emitted by Powertools on the first invocation of an environment.
 */
export const METRIC = metricNames;

/** What one request measured. */
export interface RequestMeasures {
  /** undefined: the request succeeded. */
  errorName: string | undefined;
  latencyMs: number;
  /** Time spent in HSM calls; 0 when none was made. */
  hsmMs: number;
  /** Metrics the route's handler added (GetHealthStatus: HsmUnavailable). */
  extra: ReadonlyArray<{ name: string; unit: Unit; value: number }>;
}

/**
 * The Metrics of one operation's requests, with the operation as a default dimension (a Lambda
 * function serves one operation): a request adds no dimension of its own.
 */
export function operationMetrics(
  options: { namespace: string; serviceName: string },
  operation: string,
): Metrics {
  return new Metrics({ ...options, defaultDimensions: { operation } });
}

/**
 * One request's EMF documents, on its operation's Metrics (operationMetrics): Requests, Errors,
 * Latency, HsmLatency (when the HSM was called) and the handler's own metrics in one (dimension
 * operation), and a failed request's ErrorsByName in a second (dimensions operation and errorName).
 * Added and published in one synchronous step: requests that overlap (the local server serves
 * several at once) never share a document.
 */
export function publishRequestMetrics(metrics: Metrics, m: RequestMeasures): void {
  metrics.addMetric(METRIC.requests, MetricUnit.Count, 1);
  metrics.addMetric(METRIC.errors, MetricUnit.Count, m.errorName === undefined ? 0 : 1);
  metrics.addMetric(METRIC.latency, MetricUnit.Milliseconds, m.latencyMs);
  if (m.hsmMs > 0) metrics.addMetric(METRIC.hsmLatency, MetricUnit.Milliseconds, m.hsmMs);
  for (const { name, unit, value } of m.extra) metrics.addMetric(name, unit, value);
  metrics.publishStoredMetrics();
  if (m.errorName !== undefined) {
    metrics
      .singleMetric()
      .addDimension('errorName', m.errorName)
      .addMetric(METRIC.errorsByName, MetricUnit.Count, 1);
  }
}
