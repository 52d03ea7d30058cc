// Suite 4: soak. The local proxy (one process, fresh) at a fixed request rate (autocannon
// overallRate) mixed across the four routes, for minutes: errors, latency drift (p99 of the first
// vs the last window), and the server's RSS (VmRSS from /proc every second) after a warm-up.
import { performance } from 'node:perf_hooks';
import { post } from '../lib/https.ts';
import { type LoadRequest, runLoad } from '../lib/load.ts';
import {
  benchSetup,
  decryptBody,
  type EncryptResponse,
  encryptBody,
  faultBenchSetup,
  healthBody,
  metadataBody,
  removeSetup,
} from '../lib/requests.ts';
import { startServer } from '../lib/servers.ts';
import { signedRequest } from '../lib/signed.ts';
import { median, quantile, requestLatency, round, rssKb, scanLines } from '../lib/util.ts';

export interface SoakSecond {
  t: number;
  rps: number;
  p99Ms: number;
  /** p99 of the proxy's own latencyMs (its log lines) in the same second: the server's share. */
  serverP99Ms: number | undefined;
  rssMb: number | undefined;
}

export interface SoakResults {
  /** The HSM's fault-module rules (its network distance); absent: SoftHSM as it is. */
  hsmRules?: string[];
  rate: number;
  durationS: number;
  warmupS: number;
  connections: number;
  completed: number;
  achievedRps: number;
  non2xx: number;
  /** Responses by HTTP status. */
  statusCodes?: Record<string, number>;
  errors: number;
  byRoute: Record<string, { ok: number; other: number }>;
  /** The comparison windows for drift (the first and last minute, or fifth of shorter runs). */
  windowS: number;
  firstP99Ms: number;
  lastP99Ms: number;
  driftRatio: number;
  /** The same windows from the proxy's log (latencyMs, from the request's arrival to its answer). */
  serverFirstP99Ms: number;
  serverLastP99Ms: number;
  rssBaselineMb: number;
  rssEndMb: number;
  rssGrowthPercent: number;
  timeline: SoakSecond[];
  /** The server's full (Mark-Compact) GCs during the measured soak, from --trace-gc. */
  gc: GcSummary;
  pass: { errors: boolean; drift: boolean; rss: boolean; rate: boolean };
}

export interface GcSummary {
  count: number;
  /** Live heap after the first and last full GC, and the largest (MB). */
  firstLiveMb: number;
  lastLiveMb: number;
  maxLiveMb: number;
  /** Heap V8 had committed at the first and last full GC (MB). */
  firstCommittedMb: number;
  lastCommittedMb: number;
}

/**
 * From the server's log, after `fromMs` (process time): its full GCs (`Mark-Compact 53.0 (93.4) ->
 * 19.1 (91.4) MB` lines of --trace-gc), and each request line's latencyMs by second since
 * `startEpochMs` (the line's timestamp).
 */
function scanServerLog(
  logFile: string,
  fromMs: number,
  startEpochMs: number,
  seconds: number,
): { gc: GcSummary; latencies: number[][] } {
  const pattern =
    /^\[\d+:0x[0-9a-f]+\]\s+(\d+) ms: Mark-Compact [\d.]+ \([\d.]+\) -> ([\d.]+) \(([\d.]+)\) MB/;
  const gcs: Array<{ live: number; committed: number }> = [];
  const latencies: number[][] = Array.from({ length: seconds }, () => []);
  scanLines(logFile, 0, (line) => {
    const request = requestLatency(line);
    if (request) {
      const second = Math.floor((request.epochMs - startEpochMs) / 1000);
      if (second >= 0 && second < seconds) latencies[second]?.push(request.ms);
      return;
    }
    if (!line.includes('Mark-Compact')) return;
    const m = pattern.exec(line);
    if (m && Number(m[1]) >= fromMs) gcs.push({ live: Number(m[2]), committed: Number(m[3]) });
  });
  const first = gcs[0];
  const last = gcs[gcs.length - 1];
  const gc = {
    count: gcs.length,
    firstLiveMb: first?.live ?? Number.NaN,
    lastLiveMb: last?.live ?? Number.NaN,
    maxLiveMb: gcs.length === 0 ? Number.NaN : Math.max(...gcs.map((g) => g.live)),
    firstCommittedMb: first?.committed ?? Number.NaN,
    lastCommittedMb: last?.committed ?? Number.NaN,
  };
  return { gc, latencies };
}

/** Latency drift target: the last window's p99 at most this multiple of the first's (noise is ±25%). */
export const DRIFT_LIMIT = 1.5;
export const RSS_LIMIT_PERCENT = 10;

export async function soakSuite(options: {
  rate: number;
  durationS: number;
  warmupS: number;
  connections: number;
  /** Rules for the fault-injecting module in front of the token (e.g. a network distance). */
  hsmRules?: string[];
  logDir: string;
  log: (line: string) => void;
}): Promise<SoakResults> {
  const { setup, control } =
    options.hsmRules === undefined
      ? { setup: benchSetup(), control: undefined }
      : faultBenchSetup(options.logDir);
  control?.set(options.hsmRules ?? []);
  // --trace-gc: one line per GC in the server's stdout (its log file), to tell a leak (live heap
  // after full GCs growing) from V8 sizing its heap up (committed heap growing, live heap flat).
  const server = await startServer(setup, 'proxy', 1, options.logDir, ['--trace-gc'], control?.env());
  try {
    const pid = server.pids[0] as number;
    // Signed for the middle of the run: valid 5 minutes either side of X-Amz-Date.
    const total = options.warmupS + options.durationS;
    const date = new Date(Date.now() + Math.min(total / 2, 240) * 1000);
    const sign = (route: string, body: unknown, label: string) =>
      signedRequest(setup, server.host, route, body, label, date);
    const encrypt = await sign('keys/foo/encrypt', encryptBody(32), 'encrypt');
    const once = await post(server.url, encrypt, setup.tls.cert);
    if (once.status !== 200) throw new Error(`soak set-up: ${once.status} ${once.text}`);
    const requests: LoadRequest[] = [
      await sign('health', healthBody(), 'health'),
      await sign('keys/foo/metadata', metadataBody(), 'metadata'),
      encrypt,
      await sign(
        'keys/foo/decrypt',
        decryptBody(JSON.parse(once.text) as EncryptResponse, undefined),
        'decrypt',
      ),
    ];
    const mixed = { url: server.url, requests, connections: options.connections, overallRate: options.rate };

    await runLoad({ ...mixed, durationS: options.warmupS, keepLatencies: false });

    const seconds = Math.ceil(options.durationS) + 2;
    const perSecond: number[][] = Array.from({ length: seconds }, () => []);
    const byRoute: Record<string, { ok: number; other: number }> = {};
    const rss: Array<number | undefined> = [];
    const soakStartMs = performance.now() - server.spawnedAt;
    const soakStartEpochMs = Date.now();
    const sampler = setInterval(() => rss.push(rssKb(pid)), 1000);
    rss.push(rssKb(pid));
    let result: Awaited<ReturnType<typeof runLoad>>;
    try {
      result = await runLoad({
        ...mixed,
        durationS: options.durationS,
        keepLatencies: false,
        onResponse: (atMs, status, latencyMs, route) => {
          const s = Math.min(seconds - 1, Math.floor(atMs / 1000));
          perSecond[s]?.push(latencyMs);
          const entry = byRoute[route] ?? { ok: 0, other: 0 };
          byRoute[route] = entry;
          if (status >= 200 && status < 300) entry.ok++;
          else entry.other++;
        },
      });
    } finally {
      clearInterval(sampler);
    }
    // V8 writes --trace-gc through C stdio, buffered when stdout is a file: read it after the exit.
    await server.stop();
    const { gc, latencies } = scanServerLog(server.logFile, soakStartMs, soakStartEpochMs, seconds);
    const used = perSecond.slice(0, Math.ceil(options.durationS));
    const serverUsed = latencies.slice(0, used.length);
    const p99 = (list: number[]) => round(quantile(Float64Array.from(list).sort(), 0.99), 3);
    const timeline: SoakSecond[] = used.map((list, t) => {
      const kb = rss[t + 1];
      const server = serverUsed[t] ?? [];
      return {
        t,
        rps: list.length,
        p99Ms: p99(list),
        serverP99Ms: server.length === 0 ? undefined : p99(server),
        rssMb: kb === undefined ? undefined : round(kb / 1024, 1),
      };
    });
    const windowS = Math.max(1, Math.min(60, Math.floor(options.durationS / 5)));
    const p99Of = (lists: number[][]) => p99(lists.flat());
    const firstP99Ms = p99Of(used.slice(0, windowS));
    const lastP99Ms = p99Of(used.slice(-windowS));
    const serverFirstP99Ms = p99Of(serverUsed.slice(0, windowS));
    const serverLastP99Ms = p99Of(serverUsed.slice(-windowS));
    const samples = rss.filter((v): v is number => v !== undefined);
    const edge = Math.max(1, Math.min(10, Math.floor(samples.length / 3)));
    const rssBaselineMb = round(median(samples.slice(0, edge)) / 1024, 1);
    const rssEndMb = round(median(samples.slice(-edge)) / 1024, 1);
    const rssGrowthPercent = round((100 * (rssEndMb - rssBaselineMb)) / rssBaselineMb, 1);
    const errors = result.errors + result.timeouts;
    // autocannon stops at the first 1-second tick after the duration: divide by the time it really ran.
    const achievedRps = Math.round(result.completed / Math.max(result.durationS, options.durationS));
    const driftRatio = round(lastP99Ms / firstP99Ms, 2);
    options.log(
      `  soak: ${result.completed} requests, ${achievedRps} req/s, non-2xx ${result.non2xx}, errors ${errors}, p99 first ${firstP99Ms} ms last ${lastP99Ms} ms (in the proxy: ${serverFirstP99Ms} -> ${serverLastP99Ms} ms), RSS ${rssBaselineMb} -> ${rssEndMb} MB, live heap after full GC ${gc.firstLiveMb} -> ${gc.lastLiveMb} MB (${gc.count} full GCs)`,
    );
    return {
      ...(options.hsmRules === undefined ? {} : { hsmRules: options.hsmRules }),
      rate: options.rate,
      durationS: options.durationS,
      warmupS: options.warmupS,
      connections: options.connections,
      completed: result.completed,
      achievedRps,
      non2xx: result.non2xx,
      statusCodes: result.statusCodes,
      errors,
      byRoute,
      windowS,
      firstP99Ms,
      lastP99Ms,
      driftRatio,
      serverFirstP99Ms,
      serverLastP99Ms,
      rssBaselineMb,
      rssEndMb,
      rssGrowthPercent,
      timeline,
      gc,
      pass: {
        errors: result.non2xx === 0 && errors === 0,
        drift: driftRatio <= DRIFT_LIMIT,
        rss: rssGrowthPercent < RSS_LIMIT_PERCENT,
        rate: achievedRps >= options.rate * 0.95,
      },
    };
  } finally {
    await server.stop();
    removeSetup(setup);
  }
}
