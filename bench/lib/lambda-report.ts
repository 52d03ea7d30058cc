// The sections of docs/benchmarks.md that measure the proxy as Lambda runs it: at Lambda's CPU share
// (suite 6, bench/suites/cpu-share.ts) and with the HSM a network distance away (suite 7,
// bench/suites/network-hsm.ts; the soak at that distance, suite 8, is rendered with suite 4's
// section). Every figure comes from results.json.
import type { CpuShareResults, CpuShareRow } from '../suites/cpu-share.ts';
import type { NetworkHandlerRow, NetworkHsmResults } from '../suites/network-hsm.ts';
import type { SoakResults } from '../suites/soak.ts';
import { barChart } from './svg.ts';
import { median, table } from './util.ts';

/** KMS's budget for a whole request (TCP, TLS and the proxy's answer). */
const KMS_BUDGET_MS = 250;

const f1 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(1));
const f2 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(2));
const f3 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(3));
const sizeOf = (row: { memoryMb: number | undefined }) =>
  row.memoryMb === undefined ? 'no quota (2 cores)' : `${row.memoryMb} MB`;

function encryptCold(row: CpuShareRow): number | undefined {
  return row.coldStart.find((c) => c.name === 'encrypt')?.medianMs;
}

function slowest(row: CpuShareRow): { name: string; medianMs: number } | undefined {
  return [...row.coldStart].sort((a, b) => b.medianMs - a.medianMs)[0];
}

export function cpuShareSection(c: CpuShareResults, image: string): string[] {
  const out = [
    "## 6. At Lambda's CPU share",
    '',
    'Lambda gives a function CPU in proportion to its memory: 1769 MB is one vCPU, 1024 MB 0.58 of one. Here each ' +
      'child process of suites 1 and 3 runs inside a cgroup v1 `cpu` group whose CFS quota is the period × ' +
      'memory / 1769 (`bench/lib/cgroup.ts`: a shell puts itself in the group and then execs node, so the child is ' +
      'in it from its first instruction), one group per memory size, and once without a quota beside them. ' +
      `Cold start as in suite 3 (all four bundles, the floors run in the same group), median of ${c.coldStartRuns} ` +
      `run${c.coldStartRuns === 1 ? '' : 's'}: fewer than suite 3, to keep the run short. Warm: the Encrypt 32 B ` +
      `handler as in suite 1, ${c.iterations} calls back to back after a warm-up, one at a time, stdout to a file.`,
    '',
    '`node bench/run.ts --only cpu-share` (as root; output to a temporary folder)',
    '',
  ];
  if (c.skipped !== undefined) {
    out.push(`**Skipped**: ${c.skipped}.`, '');
    return out;
  }
  out.push(
    table(
      [
        'memory',
        'vCPU',
        'quota / period (µs)',
        'cold start, encrypt (ms)',
        'slowest bundle (ms)',
        'HSM floor (ms)',
        'encrypt / floor',
        'node floor (ms)',
        'warm Encrypt 32 B p50 (µs)',
        'p99 (µs)',
        'max (µs)',
      ],
      c.rows.map((row) => {
        const cold = encryptCold(row);
        const worst = slowest(row);
        return [
          sizeOf(row),
          row.cpuShare === undefined ? '—' : row.cpuShare.toFixed(2),
          row.quotaUs === undefined ? '—' : `${row.quotaUs} / ${row.periodUs}`,
          f1(cold),
          worst ? `${worst.name} ${f1(worst.medianMs)}` : '—',
          f1(row.hsmFloorMs),
          cold === undefined ? '—' : `${(cold / row.hsmFloorMs).toFixed(2)}×`,
          f1(row.nodeFloorMs),
          f1(row.handler.p50),
          f1(row.handler.p99),
          f1(row.handler.max),
        ];
      }),
    ),
    '',
    `What this means for KMS's ${KMS_BUDGET_MS} ms: a cold start here is only the part of a Lambda init phase this ` +
      'machine can show (no runtime bootstrap, layer, Secrets Manager or network HSM login). Where it alone takes a large part of the budget, an on-demand cold start fails the KMS request that ' +
      'triggers it: [deploy.md](deploy.md#memory-size) picks the memory size from this table. Warm requests ' +
      'use a fraction of a millisecond of CPU each: the quota shows in the tail (a request that meets the end ' +
      "of the period's quota waits for the next period, up to 100 ms × (1 − share)), not in the median.",
    '',
    `![Cold start by memory size](${image})`,
    '',
  );
  return out;
}

export function cpuShareSvg(c: CpuShareResults | undefined): string {
  const rows = c?.rows ?? [];
  return barChart({
    title: "Cold start at Lambda's CPU share (spawn → first response, median)",
    yLabel: 'ms',
    categories: rows.map(sizeOf),
    groups: [
      { name: 'encrypt bundle', values: rows.map((r) => encryptCold(r) ?? Number.NaN), color: '#de2d26' },
      { name: 'HSM floor', values: rows.map((r) => r.hsmFloorMs), color: '#3182bd' },
      { name: 'node floor', values: rows.map((r) => r.nodeFloorMs), color: '#9ecae1' },
    ],
  });
}

/**
 * Suite 7a's rows: handler, HSM and the proxy's share (ms), the requests a GC pause fell into, and
 * those collected during their HSM call with their HSM time.
 */
function shareTable(rows: NetworkHandlerRow[], label: (row: NetworkHandlerRow) => string): string {
  return table(
    [
      'run',
      'requests',
      'handler p50',
      'p99',
      'HSM p50',
      'HSM p99',
      'proxy share p50',
      'p99',
      'max',
      'requests with a GC pause',
      'share p99 without them',
      'collected during the HSM call',
      'their HSM p50',
    ],
    rows.map((row) => [
      label(row),
      String(row.iterations),
      f2(row.handler.p50),
      f2(row.handler.p99),
      f2(row.hsm.p50),
      f2(row.hsm.p99),
      f3(row.share.p50),
      f3(row.share.p99),
      f3(row.share.max),
      String(row.gcCalls),
      f3(row.shareWithoutGc.p99),
      String(row.forcedGcCalls),
      row.hsmWithForcedGc === undefined ? '—' : f2(row.hsmWithForcedGc.p50),
    ]),
  );
}

/** Suite 7d: suite 3's cold starts with every PKCS#11 call at the distance. */
function coldStartAtDistance(n: NetworkHsmResults): string[] {
  const c = n.coldStart;
  return [
    `### d. Cold start, the HSM ${n.distanceMs} ± ${n.jitterMs} ms away`,
    '',
    `Suite 3 (a fresh process per run, spawn to the first response to a signed event, median of ${c.runs} ` +
      'interleaved runs per bundle, on-demand as there) with the fault-injecting module in front of the token: ' +
      "the bundles' calls and the HSM floor's alike are a network distance away. Each call on the way counts: " +
      "the login's, the first request's key lookup and its operation. Information, no target.",
    '',
    table(
      ['bundle', 'cold start (ms)', '× HSM floor', 'first invocation (ms)'],
      c.rows.map((row) => [
        row.name,
        f1(row.medianMs),
        `${(row.medianMs / c.hsmFloorMs).toFixed(2)}×`,
        f1(row.breakdownMs.firstInvoke),
      ]),
    ),
    '',
    `HSM floor at the distance (its process: load pkcs11js, log in, find the key, encrypt once): ${f1(c.hsmFloorMs)} ms; ` +
      `node floor ${f1(c.nodeFloorMs)} ms.`,
    '',
  ];
}

export function networkHsmSection(n: NetworkHsmResults): string[] {
  const d = `${n.distanceMs} ± ${n.jitterMs} ms`;
  const out = [
    `## 7. The HSM a network distance away (${d} per PKCS#11 call)`,
    '',
    'A real HSM is a network round trip away for every PKCS#11 call; SoftHSM answers in-process in ~20 µs. The ' +
      `fault-injecting module (\`test/fault-pkcs11\`) in front of SoftHSM makes every call sleep ${d} ` +
      `(uniform jitter), rule \`* delay ${n.distanceMs} jitter=${n.jitterMs}\`, then forwards it.`,
    '',
    '### a. The handler, and the proxy’s own share',
    '',
    'The Encrypt 32 B Lambda handler as in suite 1 (one request at a time, stdout to a file), at full CPU and ' +
      'in the 1024 MB CPU group of suite 6. Per request: the handler time (around the handler call), the HSM ' +
      "time (`hsmLatencyMs` of the request's log line: from the handler's call into the HSM layer to the answer, " +
      'so the hop to the HSM worker thread and back counts as HSM time), and the proxy’s own share, their ' +
      'difference (`bench/lib/proxy-share.ts` pairs each call with its log line). Milliseconds.',
    '',
    '`node bench/run.ts --only network-hsm`',
    '',
    shareTable(n.handler, (row) =>
      row.memoryMb === undefined ? 'full (2 cores)' : `${row.memoryMb} MB share (${row.cpuShare} vCPU)`,
    ),
    '',
    n.target.p99Ms === undefined
      ? `The ${n.target.memoryMb} MB row was **skipped**: ${n.cpuShareSkipped}.`
      : `Target: the proxy's share at p99 at the ${n.target.memoryMb} MB share ≤ ${n.target.limitMs} ms: ` +
        `${f3(n.target.p99Ms)} ms, **${n.target.pass ? 'pass' : 'FAIL'}**.`,
    '',
    "A request with a GC pause: one that a garbage collection pause of the handler's thread fell into " +
      "(node:perf_hooks 'gc' entries), made by V8 when the young generation was full. Collected during " +
      'the HSM call: the requests during whose HSM call the function collected its young generation ' +
      '(`functions/young-gc.ts`, with `NODE_OPTIONS=--expose-gc` as deployed): that pause is in the HSM ' +
      'time, and only delays the request where it outlasts the HSM’s answer; their HSM p50 beside the ' +
      'run’s shows whether it did.',
    ...(n.noDistance.length === 0
      ? []
      : [
          '',
          `The control: the same handler at the ${n.target.memoryMb} MB share with SoftHSM in-process (the ` +
            'fault-injecting module without rules), back to back, and with the thread idle before each request ' +
            'as long as the HSM made it wait above (a timer, outside the timed call): what idling alone does to ' +
            'the same work, whose caches and CPU come back cold. A Lambda environment idles between requests as ' +
            'well as during HSM calls. Back to back the process wants more than its share of the CPU, so CFS ' +
            'throttles it now and then (the max).',
          '',
          shareTable(n.noDistance, (row) =>
            row.gapMs === 0 ? 'no distance, back to back' : `no distance, ${row.gapMs} ms idle before each`,
          ),
        ]),
    '',
    `### b. A slow HSM's tail, and the call deadline`,
    '',
    `The local server (one process), one connection sending Encrypt 32 B back to back for ${n.deadline.durationS} s, ` +
      `the HSM ${d} away and every ${n.deadline.every}th C_EncryptInit taking ${n.deadline.slowMs} ms ` +
      `(\`C_EncryptInit delay ${n.deadline.slowMs} every=${n.deadline.every}\`), at two values of ` +
      '`hsm.callTimeoutMs`. A call past its deadline is answered 503 DependencyTimeoutException at the deadline and ' +
      'its worker thread is abandoned (a new one logs in); without a deadline shorter than the slow call, the ' +
      `request waits the whole ${n.deadline.slowMs} ms, past KMS's ${KMS_BUDGET_MS} ms, and KMS gives up on it anyway.` +
      (n.deadline.rows.some((row) => (row.statusCodes['503'] ?? 0) > row.requests / n.deadline.every + 1)
        ? ' Where there are more 503s than slow calls, the others are requests that came while the replacement ' +
          'worker was still connecting (thread start, C_Initialize, C_Login, each PKCS#11 call a round trip) and ' +
          'waited longer than the deadline for it ("took more than N ms to connect" in the server\'s log), and, ' +
          "refused at once, those that came while the HSM's circuit breaker was open: three failures in a row " +
          'open it for 2 s, doubled at each failed trial (`layers/pkcs11/fleet.ts`). A replacement worker that ' +
          'connects more slowly than the deadline can turn one slow call into seconds of refusals.'
        : ''),
    '',
    table(
      [
        'hsm.callTimeoutMs',
        'requests',
        'slow calls (≈)',
        'p50 ms',
        'p99 ms',
        'max ms',
        '503',
        'of which refused at once',
        'other non-2xx',
      ],
      n.deadline.rows.map((row) => {
        const codes = row.statusCodes;
        const other = Object.entries(codes)
          .filter(([code]) => code !== '200' && code !== '503')
          .reduce((sum, [, count]) => sum + count, 0);
        return [
          String(row.callTimeoutMs),
          String(row.requests),
          String(Math.floor(row.requests / n.deadline.every)),
          f2(row.p50Ms),
          f2(row.p99Ms),
          f2(row.maxMs),
          String(codes['503'] ?? 0),
          String(row.refused ?? '—'),
          String(other),
        ];
      }),
    ),
    '',
    '### c. The local server while one request waits on a slow HSM',
    '',
    `The local server at concurrency ${n.slowRequest.connections}, Encrypt 32 B, the HSM ${d} away: ` +
      `${n.slowRequest.healthy.length} round${n.slowRequest.healthy.length === 1 ? '' : 's'} of a second with a healthy HSM, then a second in which one ` +
      `C_EncryptInit takes ${n.slowRequest.delayMs} ms (within the deadline: answered, not abandoned). While that ` +
      'call holds one HSM worker thread, the other requests go to the others (up to 4): the main thread never ' +
      'waits for the HSM.',
    '',
    `\`node bench/slow-hsm.ts --delay ${n.slowRequest.delayMs} --rounds ${n.slowRequest.healthy.length} ` +
      `--connections ${n.slowRequest.connections} --distance ${n.distanceMs} --jitter ${n.jitterMs}\` (the same, standalone)`,
    '',
    table(
      ['', 'requests answered per second (each round)', 'median'],
      [
        ['healthy HSM', n.slowRequest.healthy.join(', '), String(median(n.slowRequest.healthy))],
        [
          `one ${n.slowRequest.delayMs} ms call in the second`,
          n.slowRequest.slow.join(', '),
          String(median(n.slowRequest.slow)),
        ],
      ],
    ),
    '',
    `Non-2xx in the slow seconds: ${n.slowRequest.slowNon2xx}; client p99 in them: ${n.slowRequest.slowP99Ms.join(', ')} ms.`,
    '',
    ...(n.coldStart ? coldStartAtDistance(n) : []),
  ];
  return out;
}

/**
 * Why the soak at the HSM's distance runs at a lower rate than suite 4: Little's law, with the HSM
 * time per Encrypt measured in suite 7.
 */
export function networkSoakRate(s: SoakResults, n: NetworkHsmResults | undefined): string {
  const full = n?.handler.find((row) => row.memoryMb === undefined);
  const encrypt = full?.hsm.mean;
  const perRequest = encrypt === undefined ? undefined : (encrypt + (2 / 3) * encrypt) / 4;
  const capacity = perRequest === undefined ? undefined : 4 / (perRequest / 1000);
  return (
    "Why this rate: by Little's law a server holds λ × W requests in progress, and here what is held is an HSM " +
    'worker thread (the local server has at most 4; a PKCS#11 call blocks its thread for the whole round trip). ' +
    (encrypt === undefined
      ? 'An Encrypt holds one for three PKCS#11 calls (C_GenerateRandom, C_EncryptInit, C_Encrypt), a Decrypt for two, '
      : `An Encrypt holds one for ${encrypt.toFixed(2)} ms (suite 7a, mean: three PKCS#11 calls), a Decrypt for two calls, `) +
    'GetHealthStatus and GetKeyMetadata mostly for none (cached). Over the four routes in turn that is ' +
    (perRequest === undefined || capacity === undefined
      ? 'a few ms per request on average, '
      : `about ${perRequest.toFixed(1)} ms per request on average, so 4 workers answer at most about ${Math.round(capacity)} req/s, `) +
    `below suite 4's 2000 req/s: at 2000 req/s the same soak (20 connections) settles at what the workers can do, ` +
    'with no errors (the connections wait), which would test the pool at saturation, not over time. At ' +
    `${s.rate} req/s the pool is busy about ${capacity === undefined ? 'two thirds' : `${Math.round((100 * s.rate) / capacity)}%`} of the time ` +
    "and grows to all 4 workers in autocannon's bursts at the start of each second: the same property as suite 4 " +
    '(no errors, no growth over minutes) with HSM calls in flight on several worker threads. The call deadline is ' +
    "suite 4's (`callTimeoutMs` 2000 of the test configuration); suite 7b measures the production deadline."
  );
}
