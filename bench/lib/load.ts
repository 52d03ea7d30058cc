// The load generator: autocannon's programmatic API (in the bench process; the servers are children),
// replaying pre-signed requests. Latencies are taken per response from autocannon's own 'response'
// event (floating-point milliseconds; its histogram rounds to whole milliseconds).
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { DEFAULT_LIMITS } from '../../local/server.ts';
import { type Summary, summarize } from './util.ts';

export interface LoadRequest {
  method: 'POST';
  path: string;
  headers: Record<string, string>;
  body: string;
  /** A label for per-route counts (kept on autocannon's copy of the request). */
  route: string;
}

export interface LoadOptions {
  /** https://127.0.0.1:<port> */
  url: string;
  requests: LoadRequest[];
  connections: number;
  durationS: number;
  /** Fixed request rate over all connections (autocannon overallRate). */
  overallRate?: number;
  /** Called for each response: ms since the start, status, latency ms, route label. */
  onResponse?: (atMs: number, status: number, latencyMs: number, route: string) => void;
  /** Keep every latency (for the summary); off for long runs that only need onResponse. */
  keepLatencies?: boolean;
}

export interface LoadResult {
  connections: number;
  durationS: number;
  completed: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** 2xx responses per second. */
  rps: number;
  /** Milliseconds. */
  latency: Summary | undefined;
  statusCodes: Record<string, number>;
}

interface AutocannonClient {
  requestIterator?: { currentRequest?: { route?: string } };
}
interface AutocannonResult {
  errors: number;
  timeouts: number;
  non2xx: number;
  duration: number;
}
interface AutocannonInstance {
  on(
    event: 'response',
    listener: (client: AutocannonClient, status: number, bytes: number, ms: number) => void,
  ): void;
  stop(): void;
}
type Autocannon = (
  options: Record<string, unknown>,
  callback: (error: Error | null, result: AutocannonResult) => void,
) => AutocannonInstance;

const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

export function runLoad(options: LoadOptions): Promise<LoadResult> {
  return new Promise((resolvePromise, reject) => {
    const latencies: number[] = [];
    const statusCodes: Record<string, number> = {};
    let ok = 0;
    let completed = 0;
    const started = performance.now();
    const instance = autocannon(
      {
        url: options.url,
        connections: options.connections,
        duration: options.durationS,
        pipelining: 1,
        // autocannon ignores `Connection: close`: after the local server's last answer on a
        // connection (localServer.maxRequestsPerSocket) it writes one more request there, which
        // goes unanswered, and from then on times each answer from the request before it (at a
        // fixed rate, across the pause to the next second: p99s of 0.4-0.7 s while the proxy's own
        // p99 stays 0.5 ms). Closing the connection at the same count, as a client that honours
        // `close` does, keeps the timings right; autocannon drops that last answer from its events
        // (1 in 1000). The bare server gets the same connection churn.
        reconnectRate: DEFAULT_LIMITS.maxRequestsPerSocket,
        timeout: 10,
        requests: options.requests,
        ...(options.overallRate ? { overallRate: options.overallRate } : {}),
      },
      (error, result) => {
        clearTimeout(guard);
        if (error) return reject(error);
        const durationS = (performance.now() - started) / 1000;
        resolvePromise({
          connections: options.connections,
          durationS: Math.round(durationS * 100) / 100,
          completed,
          ok,
          non2xx: completed - ok,
          errors: result.errors,
          timeouts: result.timeouts,
          rps: Math.round(ok / Math.max(result.duration || durationS, 0.001)),
          latency: latencies.length > 0 ? summarize(latencies) : undefined,
          statusCodes,
        });
      },
    );
    // Bounded in time whatever happens to the server.
    const guard = setTimeout(() => instance.stop(), (options.durationS + 30) * 1000);
    const keep = options.keepLatencies ?? true;
    instance.on('response', (client, status, _bytes, ms) => {
      completed++;
      if (status >= 200 && status < 300) ok++;
      statusCodes[status] = (statusCodes[status] ?? 0) + 1;
      if (keep) latencies.push(ms);
      options.onResponse?.(
        performance.now() - started,
        status,
        ms,
        client.requestIterator?.currentRequest?.route ?? 'unknown',
      );
    });
  });
}
