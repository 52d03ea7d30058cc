// The names of the metrics the proxy emits (namespace XksProxy, dimensions service and operation),
// from metric-names.json, which infra/ reads too for the dashboard and alarms.
//
// Also the per-request EMF documents themselves: the same JSON the Powertools Metrics instance
// prints (its namespace, its default dimensions, the same key order), built from strings
// prepared once, because Powertools' addDimension/addMetric/publishStoredMetrics cost 20-25 us per
// request here (mostly environment reads: it checks AWS_LAMBDA_MAX_CONCURRENCY on every store
// access), more than the HSM operation itself.
import type { Metrics } from '@aws-lambda-powertools/metrics';
import metricNames from './metric-names.json' with { type: 'json' };

/**
 * hsmUnavailable: how many HSMs of the fleet GetHealthStatus found UNAVAILABLE (0 when all serve).
 * coldStart: emitted by Powertools on the first invocation of an environment.
 */
export const METRIC = metricNames;

/** What every document shares: from the Metrics instance, read once. */
interface Shape {
  disabled: boolean;
  namespace: string;
  /** The default dimensions (service), in Powertools' order. */
  defaults: Record<string, string>;
}

/**
 * The EMF documents of one operation: one per request (Requests, Errors, Latency and, when the HSM
 * was used, HsmLatency; dimensions service and operation) and one per error (ErrorsByName;
 * dimensions service, operation and errorName), each a single line.
 */
export class RequestMetrics {
  readonly #metrics: Metrics;
  readonly #operation: string;
  #shape: Shape | undefined;
  /** The request document up to its Timestamp, and from there to the values. */
  #withHsm: [string, string] | undefined;
  #withoutHsm: [string, string] | undefined;

  constructor(metrics: Metrics, operation: string) {
    this.#metrics = metrics;
    this.#operation = operation;
  }

  /** Whether Powertools publishes metrics at all (POWERTOOLS_METRICS_DISABLED, POWERTOOLS_DEV). */
  get disabled(): boolean {
    return this.#shapeOf().disabled;
  }

  /** The request's document; `errors` is 0 or 1. */
  request(timestamp: number, errors: number, latencyMs: number, hsmMs: number): string {
    const withHsm = hsmMs > 0;
    if (withHsm) this.#withHsm ??= this.#template([METRIC.hsmLatency]);
    else this.#withoutHsm ??= this.#template([]);
    const [head, tail] = (withHsm ? this.#withHsm : this.#withoutHsm) as [string, string];
    return `${head}${timestamp}${tail}${errors},"${METRIC.latency}":${latencyMs}${withHsm ? `,"${METRIC.hsmLatency}":${hsmMs}` : ''}}`;
  }

  /** The ErrorsByName document of a failed request. */
  errorByName(timestamp: number, errorName: string): string {
    const { namespace, defaults } = this.#shapeOf();
    const dimensions = { ...defaults, operation: this.#operation, errorName };
    return JSON.stringify({
      _aws: {
        Timestamp: timestamp,
        CloudWatchMetrics: [
          {
            Namespace: namespace,
            Dimensions: [Object.keys(dimensions)],
            Metrics: [{ Name: METRIC.errorsByName, Unit: 'Count' }],
          },
        ],
      },
      ...dimensions,
      [METRIC.errorsByName]: 1,
    });
  }

  #template(extra: string[]): [string, string] {
    const { namespace, defaults } = this.#shapeOf();
    const dimensions = { ...defaults, operation: this.#operation };
    const units: Record<string, string> = {
      [METRIC.requests]: 'Count',
      [METRIC.errors]: 'Count',
      [METRIC.latency]: 'Milliseconds',
      [METRIC.hsmLatency]: 'Milliseconds',
    };
    const names = [METRIC.requests, METRIC.errors, METRIC.latency, ...extra];
    // A marker where the timestamp goes; everything else is fixed for the operation.
    const json = JSON.stringify({
      _aws: {
        Timestamp: 0,
        CloudWatchMetrics: [
          {
            Namespace: namespace,
            Dimensions: [Object.keys(dimensions)],
            Metrics: names.map((name) => ({ Name: name, Unit: units[name] })),
          },
        ],
      },
      ...dimensions,
      [METRIC.requests]: 1,
    });
    const at = json.indexOf('"Timestamp":0,') + '"Timestamp":'.length;
    // ..."Requests":1} -> ..."Requests":1,"Errors":
    return [json.slice(0, at), `${json.slice(at + 1, -1)},"${METRIC.errors}":`];
  }

  #shapeOf(): Shape {
    if (this.#shape !== undefined) return this.#shape;
    // Without dimensions of its own, the instance serializes its default dimensions as the one
    // dimension set; read at the first request, before a handler adds anything.
    const document = this.#metrics.serializeMetrics() as unknown as {
      _aws: { CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][] }> };
    } & Record<string, string>;
    const [directive] = document._aws.CloudWatchMetrics;
    const names = directive?.Dimensions[0] ?? [];
    this.#shape = {
      // Protected in the typings; Powertools' own decision from its environment variables.
      disabled: (this.#metrics as unknown as { isDisabled(): boolean }).isDisabled(),
      namespace: directive?.Namespace as string,
      defaults: Object.fromEntries(names.map((name) => [name, document[name] as string])),
    };
    return this.#shape;
  }

  /** Reads the shape now (call before anything is added to the Metrics instance). */
  prepare(): void {
    this.#shapeOf();
  }
}
