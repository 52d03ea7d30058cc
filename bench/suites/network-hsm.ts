// Suite 7: a network-distance HSM. SoftHSM answers in ~20 µs in-process; a real HSM is a network
// round trip away for every PKCS#11 call. The fault-injecting module (test/fault-pkcs11) puts
// SoftHSM `distanceMs` ± `jitterMs` away (`* delay 2 jitter=0.5`), and then:
//   a. the Lambda handler (bench/handler-child.ts, one request at a time) at full CPU and at the
//      1024 MB CPU share: handler time, HSM time, and the proxy's own share (handler − HSM); the
//      requests a GC pause fell into, and those the proxy collected during (in the HSM call:
//      functions/young-gc.ts), with their HSM time; and, as a control, the same handler with no
//      distance, back to back and with an idle gap as long as the HSM's wait before each request
//      (what idling alone does to the same work);
//   b. a slow HSM's tail with a call deadline: the local server, one connection, one C_EncryptInit
//      in `every` taking `slowMs`, at two values of hsm.callTimeoutMs;
//   c. the local server's throughput while one request waits on a slow HSM call;
//   d. the cold start of suite 3 (each bundle and both floors) with the HSM at that distance.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  type CgroupSupport,
  cgroupSupport,
  cpuShare,
  createCpuGroup,
  DIRECT,
  type Launch,
} from '../lib/cgroup.ts';
import { post } from '../lib/https.ts';
import { runLoad } from '../lib/load.ts';
import { proxyShare, requestTimesOf } from '../lib/proxy-share.ts';
import { encryptBody, faultBenchSetup, removeSetup } from '../lib/requests.ts';
import { startServer } from '../lib/servers.ts';
import { signedRequest } from '../lib/signed.ts';
import { median, round, roundSummary, type Summary } from '../lib/util.ts';
import { type ColdStartResults, coldStartSuite } from './coldstart.ts';
import { encryptAlone, handlerEnv } from './handler.ts';

/** The proxy's own share of a request must stay within this at p99, at the 1024 MB CPU share. */
export const PROXY_SHARE_LIMIT_MS = 1;
export const PROXY_SHARE_MEMORY_MB = 1024;

/**
 * The distance measured: 2 ms ± 0.5 per PKCS#11 call (a real HSM is 1-5 ms away). The soak at that
 * distance runs at `soakRate` (docs/benchmarks.md, suite 8: Little's law and the worker pool).
 */
export const NETWORK_HSM = { distanceMs: 2, jitterMs: 0.5, soakRate: 800 };

/** Every PKCS#11 call `ms` ± `jitterMs` away. */
export function distanceRule(ms: number, jitterMs: number): string {
  return `* delay ${ms} jitter=${jitterMs}`;
}

export interface NetworkHandlerRow {
  /** Undefined: full CPU. */
  memoryMb: number | undefined;
  cpuShare: number | undefined;
  iterations: number;
  /** Idle time before each request (ms); 0: back to back. */
  gapMs: number;
  /** Milliseconds per request. */
  handler: Summary;
  hsm: Summary;
  share: Summary;
  /** Requests a garbage collection pause of the handler's thread fell into, and the share of the others. */
  gcCalls: number;
  shareWithoutGc: Summary;
  /** Requests the proxy collected during, in the HSM wait (functions/young-gc.ts), and their HSM time. */
  forcedGcCalls: number;
  hsmWithForcedGc: Summary | undefined;
}

export interface DeadlineRow {
  callTimeoutMs: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  statusCodes: Record<string, number>;
  /**
   * 503s answered in less than half the deadline: refused without waiting for the HSM, i.e. while
   * the HSM's circuit breaker was open (layers/pkcs11/fleet.ts: 3 failures in a row open it).
   */
  refused: number;
}

export interface SlowRequestResults {
  delayMs: number;
  connections: number;
  /** Requests answered in each healthy second, and in each second with one slow call. */
  healthy: number[];
  slow: number[];
  slowP99Ms: number[];
  slowNon2xx: number;
}

export interface NetworkHsmResults {
  distanceMs: number;
  jitterMs: number;
  handler: NetworkHandlerRow[];
  /**
   * The control, at the target's CPU share: the same handler with SoftHSM in-process (the
   * fault-injecting module without rules), back to back and with an idle gap before each request.
   */
  noDistance: NetworkHandlerRow[];
  /** Why the CPU-share rows are missing (no root or no cgroup v1 cpu controller). */
  cpuShareSkipped: string | undefined;
  target: { memoryMb: number; limitMs: number; p99Ms: number | undefined; pass: boolean | undefined };
  deadline: { slowMs: number; every: number; durationS: number; rows: DeadlineRow[] };
  slowRequest: SlowRequestResults;
  /** Suite 3 with the HSM at the distance (bundles and floors alike). */
  coldStart: ColdStartResults;
}

async function handlerAtDistance(options: {
  rules: string[];
  iterations: number;
  warmup: number;
  memoryMb: number | undefined;
  gapMs?: number;
  launch: Launch;
  workDir: string;
}): Promise<NetworkHandlerRow> {
  const gapMs = options.gapMs ?? 0;
  const label = `${options.memoryMb === undefined ? 'full' : `${options.memoryMb}mb`}-${options.rules.length > 0 ? 'distance' : 'in-process'}-gap${gapMs}`;
  const { setup, control } = faultBenchSetup(options.workDir, 100);
  try {
    control.set(options.rules);
    const { samples, logFile } = await encryptAlone({
      env: handlerEnv(setup, control.env()),
      iterations: options.iterations,
      warmup: options.warmup,
      samples: true,
      gapMs,
      launch: options.launch,
      path: join(options.workDir, `network-handler-${label}`),
    });
    if (samples === undefined) throw new Error('handler-child wrote no samples');
    const share = proxyShare(
      samples.us,
      samples.firstCall,
      requestTimesOf(logFile),
      samples.gc,
      samples.forcedGc,
    );
    return {
      memoryMb: options.memoryMb,
      cpuShare: options.memoryMb === undefined ? undefined : round(cpuShare(options.memoryMb), 3),
      iterations: samples.us.length,
      gapMs,
      handler: roundSummary(share.handler, 3),
      hsm: roundSummary(share.hsm, 3),
      share: roundSummary(share.share, 3),
      gcCalls: share.gcCalls,
      shareWithoutGc: roundSummary(share.shareWithoutGc, 3),
      forcedGcCalls: share.forcedGcCalls,
      hsmWithForcedGc: share.hsmWithForcedGc && roundSummary(share.hsmWithForcedGc, 3),
    };
  } finally {
    removeSetup(setup);
  }
}

/** One connection to the local server, for `durationS`, over an HSM whose every `every`th C_EncryptInit takes `slowMs`. */
async function deadlineRun(options: {
  rules: string[];
  slowMs: number;
  every: number;
  callTimeoutMs: number;
  durationS: number;
  workDir: string;
}): Promise<DeadlineRow> {
  const { setup, control } = faultBenchSetup(options.workDir, options.callTimeoutMs);
  const server = await startServer(setup, 'proxy', 1, options.workDir, [], control.env());
  try {
    const request = await signedRequest(setup, server.host, 'keys/foo/encrypt', encryptBody(32), 'encrypt');
    const check = await post(server.url, request, setup.tls.cert);
    if (check.status !== 200) throw new Error(`${check.status} ${check.text}`);
    control.set([`C_EncryptInit delay ${options.slowMs} every=${options.every}`, ...options.rules]);
    let refused = 0;
    const result = await runLoad({
      url: server.url,
      requests: [request],
      connections: 1,
      durationS: options.durationS,
      onResponse: (_at, status, latencyMs) => {
        if (status === 503 && latencyMs < options.callTimeoutMs / 2) refused++;
      },
    });
    control.clear();
    const latency = result.latency;
    return {
      callTimeoutMs: options.callTimeoutMs,
      requests: result.completed,
      p50Ms: round(latency?.p50 ?? Number.NaN, 2),
      p99Ms: round(latency?.p99 ?? Number.NaN, 2),
      maxMs: round(latency?.max ?? Number.NaN, 2),
      statusCodes: result.statusCodes,
      refused,
    };
  } finally {
    await server.stop();
    removeSetup(setup);
  }
}

/**
 * The local server at concurrency `connections`, in rounds: a second with a healthy HSM, then a
 * second in which one C_EncryptInit takes `delayMs` (within the call deadline: answered, not
 * abandoned). Also bench/slow-hsm.ts.
 */
export async function slowRequestThroughput(options: {
  delayMs: number;
  rounds: number;
  connections: number;
  /** The HSM's rules besides the slow call (its distance); none: SoftHSM as it is. */
  rules: string[];
  workDir: string;
  log: (line: string) => void;
}): Promise<SlowRequestResults> {
  const { setup, control } = faultBenchSetup(options.workDir, options.delayMs * 4);
  const server = await startServer(setup, 'proxy', 1, options.workDir, [], control.env());
  try {
    control.set(options.rules);
    const request = await signedRequest(setup, server.host, 'keys/foo/encrypt', encryptBody(32), 'encrypt');
    const check = await post(server.url, request, setup.tls.cert);
    if (check.status !== 200) throw new Error(`${check.status} ${check.text}`);
    const second = () =>
      runLoad({ url: server.url, requests: [request], connections: options.connections, durationS: 1 });
    await second(); // warm-up
    const results: SlowRequestResults = {
      delayMs: options.delayMs,
      connections: options.connections,
      healthy: [],
      slow: [],
      slowP99Ms: [],
      slowNon2xx: 0,
    };
    for (let r = 1; r <= options.rounds; r++) {
      results.healthy.push((await second()).ok);
      control.set([`C_EncryptInit delay ${options.delayMs} count=1`, ...options.rules]);
      const slow = await second();
      control.set(options.rules);
      results.slow.push(slow.ok);
      results.slowP99Ms.push(round(slow.latency?.p99 ?? Number.NaN, 1));
      results.slowNon2xx += slow.non2xx;
      options.log(
        `  round ${r}: ${results.healthy.at(-1)} answered in a healthy second, ${slow.ok} in a second with one ` +
          `${options.delayMs} ms call (p99 ${slow.latency?.p99.toFixed(1)} ms, non-2xx ${slow.non2xx})`,
      );
    }
    return results;
  } finally {
    await server.stop();
    removeSetup(setup);
  }
}

export async function networkHsmSuite(options: {
  distanceMs: number;
  jitterMs: number;
  iterations: number;
  warmup: number;
  deadline: { slowMs: number; every: number; durationS: number; callTimeoutsMs: number[] };
  slowRequest: { delayMs: number; rounds: number; connections: number };
  coldStartRuns: number;
  workDir: string;
  log: (line: string) => void;
}): Promise<NetworkHsmResults> {
  const workDir = join(options.workDir, 'network-hsm');
  mkdirSync(workDir, { recursive: true });
  const rules = [distanceRule(options.distanceMs, options.jitterMs)];
  const loop = { rules, iterations: options.iterations, warmup: options.warmup, workDir };
  const handler = [await handlerAtDistance({ ...loop, memoryMb: undefined, launch: DIRECT })];
  const noDistance: NetworkHandlerRow[] = [];
  const support: CgroupSupport = cgroupSupport();
  if (support.ok) {
    const group = createCpuGroup(PROXY_SHARE_MEMORY_MB);
    try {
      const atDistance = await handlerAtDistance({
        ...loop,
        memoryMb: PROXY_SHARE_MEMORY_MB,
        launch: group.launch,
      });
      handler.push(atDistance);
      // The control: no distance, back to back, then idle as long as the HSM's median wait.
      const inProcess = { ...loop, rules: [], memoryMb: PROXY_SHARE_MEMORY_MB, launch: group.launch };
      noDistance.push(await handlerAtDistance(inProcess));
      noDistance.push(
        await handlerAtDistance({ ...inProcess, gapMs: Math.max(1, Math.round(atDistance.hsm.p50)) }),
      );
    } finally {
      await group.remove();
    }
  }
  for (const row of [...handler, ...noDistance]) {
    const where = `${row.memoryMb === undefined ? 'full CPU' : `${row.memoryMb} MB share`}${handler.includes(row) ? '' : `, no distance, ${row.gapMs} ms idle before each`}`;
    options.log(
      `  handler, ${where}: p50 ${row.handler.p50.toFixed(2)} ms p99 ${row.handler.p99.toFixed(2)} ms; HSM p50 ` +
        `${row.hsm.p50.toFixed(2)} ms; proxy share p50 ${row.share.p50.toFixed(3)} ms p99 ${row.share.p99.toFixed(3)} ms ` +
        `(${row.gcCalls} requests with a GC pause; p99 without them ${row.shareWithoutGc.p99.toFixed(3)} ms; ` +
        `${row.forcedGcCalls} collected during the HSM call)`,
    );
  }
  const atShare = handler.find((row) => row.memoryMb === PROXY_SHARE_MEMORY_MB);
  const deadlineRows: DeadlineRow[] = [];
  for (const callTimeoutMs of options.deadline.callTimeoutsMs) {
    const row = await deadlineRun({ ...options.deadline, rules, callTimeoutMs, workDir });
    options.log(
      `  slow HSM (every ${options.deadline.every}th C_EncryptInit ${options.deadline.slowMs} ms), callTimeoutMs ${callTimeoutMs}: ` +
        `${row.requests} requests, p50 ${row.p50Ms} ms p99 ${row.p99Ms} ms max ${row.maxMs} ms, statuses ${JSON.stringify(row.statusCodes)} (${row.refused} refused at once)`,
    );
    deadlineRows.push(row);
  }
  const slowRequest = await slowRequestThroughput({
    ...options.slowRequest,
    rules,
    workDir,
    log: options.log,
  });
  options.log(
    `  median: ${median(slowRequest.healthy)} healthy, ${median(slowRequest.slow)} with one slow call`,
  );
  const coldStart = await coldStartSuite({
    runs: options.coldStartRuns,
    workDir: join(workDir, 'cold'),
    hsmRules: rules,
  });
  options.log(
    `  cold start (${options.coldStartRuns} runs): ` +
      coldStart.rows.map((row) => `${row.name} ${row.medianMs} ms`).join(', ') +
      `; HSM floor ${coldStart.hsmFloorMs} ms`,
  );
  return {
    distanceMs: options.distanceMs,
    jitterMs: options.jitterMs,
    handler,
    noDistance,
    cpuShareSkipped: support.ok ? undefined : support.reason,
    target: {
      memoryMb: PROXY_SHARE_MEMORY_MB,
      limitMs: PROXY_SHARE_LIMIT_MS,
      p99Ms: atShare?.share.p99,
      pass: atShare === undefined ? undefined : atShare.share.p99 <= PROXY_SHARE_LIMIT_MS,
    },
    deadline: {
      slowMs: options.deadline.slowMs,
      every: options.deadline.every,
      durationS: options.deadline.durationS,
      rows: deadlineRows,
    },
    slowRequest,
    coldStart,
  };
}
