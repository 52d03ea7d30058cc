// The names of the metrics the proxy emits (namespace XksProxy, dimensions service and operation).
// The dashboard and alarms in infra/ refer to these; a test checks them against this list.

export const METRIC = {
  requests: 'Requests',
  errors: 'Errors',
  errorsByName: 'ErrorsByName',
  latency: 'Latency',
  hsmLatency: 'HsmLatency',
  /** 1 when a deep health check found the HSM unavailable, else 0 (GetHealthStatus only). */
  hsmUnavailable: 'HsmUnavailable',
  /** Emitted by Powertools on the first invocation of an environment. */
  coldStart: 'ColdStart',
} as const;
