// Suite 2: server throughput. The local HTTPS proxy and the bare server (bench/bare-server.ts), each
// in its own child process(es), under autocannon (in this process) with one pre-signed Encrypt 32 B
// request replayed, at concurrency 10 and 64; 1 and N processes. Bare and proxy runs alternate, so
// that the machine's drift hits both.
import { post } from '../lib/https.ts';
import { type LoadResult, runLoad } from '../lib/load.ts';
import { benchSetup, encryptBody, removeSetup } from '../lib/requests.ts';
import { type RunningServer, type ServerKind, startServer } from '../lib/servers.ts';
import { signedRequest } from '../lib/signed.ts';
import { fileSize, median, quantile, requestLatency, round, scanLines, sleep } from '../lib/util.ts';

export interface ThroughputRow {
  server: ServerKind;
  processes: number;
  connections: number;
  /** Medians over the repetitions. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** The proxy's own latencyMs (its log lines: event in → answer out), p99; the rest is queueing. */
  proxyP99Ms?: number;
  non2xx: number;
  errors: number;
  runs: Array<
    Pick<LoadResult, 'rps' | 'completed' | 'non2xx' | 'errors' | 'durationS'> & {
      p50Ms: number;
      p99Ms: number;
      proxyP99Ms?: number;
    }
  >;
}

export interface ThroughputResults {
  durationS: number;
  warmupS: number;
  reps: number;
  concurrencies: number[];
  processes: number[];
  rows: ThroughputRow[];
}

export async function throughputSuite(options: {
  durationS: number;
  warmupS: number;
  reps: number;
  concurrencies: number[];
  processes: number[];
  logDir: string;
  log: (line: string) => void;
}): Promise<ThroughputResults> {
  const setup = benchSetup();
  const rows: ThroughputRow[] = [];
  try {
    for (const processes of options.processes) {
      const servers: RunningServer[] = [];
      try {
        servers.push(await startServer(setup, 'bare', processes, options.logDir));
        await sleep(200); // SoftHSM rewrites the token file on login: never two logins at once
        servers.push(await startServer(setup, 'proxy', processes, options.logDir));
        const body = encryptBody(32);
        const requests = new Map<RunningServer, Awaited<ReturnType<typeof signedRequest>>>();
        for (const server of servers) {
          const req = await signedRequest(setup, server.host, 'keys/foo/encrypt', body, 'encrypt-32');
          const check = await post(server.url, req, setup.tls.cert);
          if (check.status !== 200) throw new Error(`${server.kind}: ${check.status} ${check.text}`);
          requests.set(server, req);
        }
        const load = (server: RunningServer, connections: number, durationS: number) =>
          runLoad({
            url: server.url,
            requests: [requests.get(server) as NonNullable<ReturnType<typeof requests.get>>],
            connections,
            durationS,
          });
        const top = Math.max(...options.concurrencies);
        for (const server of servers) await load(server, top, options.warmupS);
        for (const connections of options.concurrencies) {
          const runs = new Map<RunningServer, LoadResult[]>(servers.map((s) => [s, []]));
          const inProxy = new Map<LoadResult, number>();
          for (let rep = 0; rep < options.reps; rep++) {
            const order = rep % 2 === 0 ? servers : [...servers].reverse();
            for (const server of order) {
              const logFrom = fileSize(server.logFile);
              const result = await load(server, connections, options.durationS);
              runs.get(server)?.push(result);
              if (server.kind === 'proxy') {
                const latencies: number[] = [];
                scanLines(server.logFile, logFrom, (line) => {
                  const request = requestLatency(line);
                  if (request) latencies.push(request.ms);
                });
                if (latencies.length > 0)
                  inProxy.set(result, quantile(Float64Array.from(latencies).sort(), 0.99));
              }
              options.log(
                `  ${server.kind.padEnd(5)} ${processes}p c=${String(connections).padEnd(3)} ${String(result.rps).padStart(6)} req/s  p50 ${result.latency?.p50.toFixed(2)} ms  p99 ${result.latency?.p99.toFixed(2)} ms  non-2xx ${result.non2xx}  errors ${result.errors}`,
              );
            }
          }
          for (const server of servers) {
            const list = runs.get(server) ?? [];
            rows.push({
              server: server.kind,
              processes,
              connections,
              rps: Math.round(median(list.map((r) => r.rps))),
              p50Ms: round(median(list.map((r) => r.latency?.p50 ?? Number.NaN)), 3),
              p99Ms: round(median(list.map((r) => r.latency?.p99 ?? Number.NaN)), 3),
              ...(server.kind === 'proxy'
                ? { proxyP99Ms: round(median(list.map((r) => inProxy.get(r) ?? Number.NaN)), 3) }
                : {}),
              non2xx: list.reduce((n, r) => n + r.non2xx, 0),
              errors: list.reduce((n, r) => n + r.errors + r.timeouts, 0),
              runs: list.map((r) => ({
                rps: r.rps,
                completed: r.completed,
                non2xx: r.non2xx,
                errors: r.errors,
                durationS: r.durationS,
                p50Ms: round(r.latency?.p50 ?? Number.NaN, 3),
                p99Ms: round(r.latency?.p99 ?? Number.NaN, 3),
                ...(inProxy.has(r) ? { proxyP99Ms: round(inProxy.get(r) as number, 3) } : {}),
              })),
            });
          }
        }
      } finally {
        for (const server of servers) await server.stop();
      }
    }
  } finally {
    removeSetup(setup);
  }
  return {
    durationS: options.durationS,
    warmupS: options.warmupS,
    reps: options.reps,
    concurrencies: options.concurrencies,
    processes: options.processes,
    rows,
  };
}
