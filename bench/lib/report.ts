// Turns bench/results.json into docs/benchmarks.md and its SVG plots. Everything in the document
// comes from the results (or from the sources it points at, for line numbers), so a re-run
// regenerates it completely.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ColdStartResults } from '../suites/coldstart.ts';
import type { CostResults } from '../suites/cost.ts';
import type { CpuShareResults } from '../suites/cpu-share.ts';
import type { HandlerResults } from '../suites/handler.ts';
import type { NetworkHsmResults } from '../suites/network-hsm.ts';
import { RSS_LIMIT_PERCENT, type SoakResults } from '../suites/soak.ts';
import type { ThroughputResults, ThroughputRow } from '../suites/throughput.ts';
import { costSection, costTargetRows } from './cost-report.ts';
import { cpuShareSection, cpuShareSvg, networkHsmSection, networkSoakRate } from './lambda-report.ts';
import type { Machine } from './machine.ts';
import type { ProfileAnalysis } from './profile.ts';
import { barChart, chart, PALETTE, type Series } from './svg.ts';
import { ROOT, table } from './util.ts';

export interface BenchResults {
  mode: 'full' | 'smoke';
  machine: Machine;
  commands: string[];
  startedAt: string;
  durationS: number;
  handler?: HandlerResults;
  throughput?: ThroughputResults;
  coldStart?: ColdStartResults;
  soak?: SoakResults;
  cost?: CostResults;
  cpuShare?: CpuShareResults;
  networkHsm?: NetworkHsmResults;
  /** The soak again with the HSM a network distance away. */
  soakNetwork?: SoakResults;
}

export interface TargetRow {
  suite: string;
  measure: string;
  measured: string;
  floor: string;
  ratio: string;
  target: string;
  pass: boolean | undefined;
}

const us = (v: number) => `${v.toFixed(1)} µs`;
const ms = (v: number) => `${v.toFixed(2)} ms`;
const x = (v: number) => `${v.toFixed(2)}×`;
const verdict = (pass: boolean | undefined) => (pass === undefined ? '—' : pass ? '**pass**' : '**FAIL**');
const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;

function throughputRow(t: ThroughputResults, server: string, processes: number, connections: number) {
  return t.rows.find(
    (r) => r.server === server && r.processes === processes && r.connections === connections,
  );
}

/** A measurement shown beside the targets, with none of its own. */
const INFORMATION = '— (information)';

/**
 * Every benchmark target, measured, with its floor from the same run; and, without a target
 * (pass undefined), the ratios to an in-process SoftHSM: a Lambda environment serves one request at
 * a time and bills whole milliseconds, and a real HSM is milliseconds away (suite 7), so
 * microseconds against SoftHSM are information, not goals.
 */
export function targetRows(r: BenchResults): TargetRow[] {
  const rows: TargetRow[] = [];
  for (const h of r.handler?.rows ?? []) {
    if (h.bare === undefined || h.ratio === undefined) continue;
    rows.push({
      suite: '1 Handler',
      measure: `${h.name} p50`,
      measured: us(h.handler.p50),
      floor: `${us(h.bare.p50)} (${h.bareName})`,
      ratio: x(h.ratio),
      target: INFORMATION,
      pass: undefined,
    });
  }
  const t = r.throughput;
  if (t) {
    for (const c of t.concurrencies) {
      const proxy = throughputRow(t, 'proxy', 1, c);
      const bare = throughputRow(t, 'bare', 1, c);
      if (proxy && bare) {
        const ratio = proxy.rps / bare.rps;
        rows.push({
          suite: '2 Throughput',
          measure: `Encrypt 32 B req/s, 1 process, concurrency ${c}`,
          measured: `${proxy.rps}`,
          floor: `${bare.rps} (bare https + pkcs11js)`,
          ratio: x(ratio),
          target: INFORMATION,
          pass: undefined,
        });
      }
    }
    const proxy10 = throughputRow(t, 'proxy', 1, 10);
    const bare10 = throughputRow(t, 'bare', 1, 10);
    if (proxy10 && bare10) {
      rows.push({
        suite: '2 Throughput',
        measure: 'p99 latency, 1 process, concurrency 10',
        measured: ms(proxy10.p99Ms),
        floor: ms(bare10.p99Ms),
        ratio: x(proxy10.p99Ms / bare10.p99Ms),
        target: INFORMATION,
        pass: undefined,
      });
    }
  }
  const c = r.coldStart;
  if (c) {
    for (const row of c.rows) {
      rows.push({
        suite: '3 Cold start',
        measure: `${row.name}: spawn → first response (median of ${c.runs})`,
        measured: ms(row.medianMs),
        floor: `${ms(c.hsmFloorMs)} (node + pkcs11js login + 1 encrypt)`,
        ratio: x(row.medianMs / c.hsmFloorMs),
        target: coldStartTarget(row),
        pass: row.passTime,
      });
      rows.push({
        suite: '3 Cold start',
        measure: `${row.name}: bundle size (loaded at cold start)`,
        measured: kb(row.bundleBytes),
        floor: '—',
        ratio: '—',
        // What the cold start loads: its time is the target.
        target: INFORMATION,
        pass: undefined,
      });
    }
  }
  if (r.soak) rows.push(...soakTargetRows(r.soak, '4 Soak'));
  if (r.cost) rows.push(...costTargetRows(r.cost));
  const n = r.networkHsm;
  if (n) {
    const atShare = n.handler.find((h) => h.memoryMb === n.target.memoryMb);
    rows.push({
      suite: '7 Network HSM',
      measure: `proxy's share (handler − HSM), Encrypt 32 B p99, ${n.target.memoryMb} MB CPU share, HSM ${n.distanceMs} ms away`,
      measured: n.target.p99Ms === undefined ? `skipped: ${n.cpuShareSkipped}` : ms(n.target.p99Ms),
      floor: atShare ? `${ms(atShare.handler.p99)} handler p99` : '—',
      ratio: '—',
      target: `≤ ${n.target.limitMs} ms`,
      pass: n.target.pass,
    });
    for (const row of n.coldStart?.rows ?? []) {
      rows.push({
        suite: '7 Network HSM',
        measure: `${row.name}: cold start, HSM ${n.distanceMs} ms away (median of ${n.coldStart.runs})`,
        measured: ms(row.medianMs),
        floor: `${ms(n.coldStart.hsmFloorMs)} (the HSM floor, its calls as far)`,
        ratio: x(row.medianMs / n.coldStart.hsmFloorMs),
        target: INFORMATION,
        pass: undefined,
      });
    }
  }
  if (r.soakNetwork) rows.push(...soakTargetRows(r.soakNetwork, '8 Soak, network HSM'));
  return rows;
}

/** The soak's targets (no errors, RSS growth), and its rate and drift as information. */
function soakTargetRows(s: SoakResults, suite: string): TargetRow[] {
  return [
    {
      suite,
      measure: `errors (non-2xx, socket errors) in ${s.completed} requests`,
      measured: `${s.non2xx + s.errors}`,
      floor: '—',
      ratio: '—',
      target: '0',
      pass: s.pass.errors,
    },
    {
      suite,
      measure: 'server RSS growth after warm-up',
      measured: `${s.rssEndMb} MB`,
      floor: `${s.rssBaselineMb} MB`,
      ratio: `${s.rssGrowthPercent >= 0 ? '+' : ''}${s.rssGrowthPercent}%`,
      target: `< +${RSS_LIMIT_PERCENT}%`,
      pass: s.pass.rss,
    },
    {
      suite,
      measure: `achieved rate (fixed ${s.rate} req/s)`,
      measured: `${s.achievedRps} req/s`,
      floor: '—',
      ratio: x(s.achievedRps / s.rate),
      target: INFORMATION,
      pass: undefined,
    },
    {
      suite,
      measure: `p99 drift: last ${s.windowS} s vs first ${s.windowS} s`,
      measured: ms(s.lastP99Ms),
      floor: ms(s.firstP99Ms),
      ratio: x(s.driftRatio),
      target: INFORMATION,
      pass: undefined,
    },
  ];
}

/** `functions/x.ts:N` of the first line containing `needle`, or the file alone. */
function lineOf(file: string, needle: string, after = 0): string {
  try {
    const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
    const i = lines.findIndex((l, n) => n >= after && l.includes(needle));
    return i === -1 ? file : `${file}:${i + 1}`;
  } catch {
    return file;
  }
}

/** Share (percent of busy CPU) of the frames whose name matches, in a profile. */
function share(p: ProfileAnalysis | undefined, match: (name: string, location: string) => boolean): number {
  if (!p) return 0;
  return (
    Math.round(p.top.filter((e) => match(e.name, e.location)).reduce((n, e) => n + e.percent, 0) * 10) / 10
  );
}

function frameShare(p: ProfileAnalysis | undefined, locationPrefix: string, name?: string): number {
  if (!p) return 0;
  const sum = p.byProjectFrame
    .filter((f) => f.location.startsWith(locationPrefix) && (name === undefined || f.name === name))
    .reduce((n, f) => n + f.percent, 0);
  return Math.round(sum * 10) / 10;
}

function profileSection(
  profiles: HandlerResults['profiles'],
  envReads?: HandlerResults['envReads'],
  dataFloor?: HandlerResults['dataFloor'],
  handlerRows?: HandlerResults['rows'],
): string {
  const out: string[] = [];
  const small = profiles.find((p) => p.id === 'encrypt-32');
  for (const p of profiles) {
    out.push(
      `### ${p.route}: ${p.iterations} handler calls under \`node --cpu-prof\``,
      '',
      `\`${p.command}\` (stdout to a file, as in suite 1). ${p.windowed ? 'Only samples inside the measured loop count' : 'Whole process (the loop window could not be matched)'}: ` +
        `${p.busyMs} ms of CPU, of which the PKCS#11 calls (pkcs11js + SoftHSM, in this thread) ${p.hsmMs} ms ` +
        `(${((100 * p.hsmMs) / Math.max(p.busyMs, 1)).toFixed(0)}%), handing HSM calls to the HSM worker thread and ` +
        `waiting for them ${p.hsmHopMs ?? 0} ms (${((100 * (p.hsmHopMs ?? 0)) / Math.max(p.busyMs, 1)).toFixed(0)}%), ` +
        `and garbage collection ${p.gcMs} ms.`,
      '',
      'Top self time beyond the HSM call:',
      '',
      table(
        ['#', 'function', 'where', 'self ms', '% of CPU'],
        p.top
          .filter((e) => !e.location.includes('node_modules/pkcs11js'))
          .slice(0, 12)
          .map((e, i) => [
            String(i + 1),
            `\`${e.name}\``,
            `\`${e.location}\``,
            e.ms.toFixed(1),
            `${e.percent}%`,
          ]),
      ),
      '',
      'The same time charged to the nearest frame in `functions/` or `layers/` (library time beneath it included):',
      '',
      table(
        ['frame', 'where', '% of CPU', 'mostly'],
        p.byProjectFrame.slice(0, 10).map((f) => [
          `\`${f.name}\``,
          `\`${f.location}\``,
          `${f.percent}%`,
          f.beneath
            .slice(0, 3)
            .map((b) => `${b.name} ${b.percent}%`)
            .join('; '),
        ]),
      ),
      '',
    );
  }
  const envShare = share(small, (n) => n === 'getStringFromEnv' || n === 'shouldUseInvokeStore');
  const reads = envReads?.['encrypt-32'] ?? {};
  const readList = Object.entries(reads)
    .sort((a, b) => b[1] - a[1])
    .map(([key, n]) => `\`${key}\` ${n}×`)
    .join(', ');
  const pctOf = (p: ProfileAnalysis | undefined, ms: number | undefined) =>
    p ? ((100 * (ms ?? 0)) / Math.max(p.busyMs, 1)).toFixed(0) : '0';
  // The request's line and metrics: `finish` and what it calls in functions/ (the audit record apart).
  const respondShare =
    Math.round(
      10 *
        (frameShare(small, 'functions/middleware.ts', 'finish') +
          frameShare(small, 'functions/middleware.ts', 'writeLine') +
          frameShare(small, 'functions/metrics.ts')),
    ) / 10;
  const sigv4Share = frameShare(small, 'functions/sigv4.ts');
  const mw = 'functions/middleware.ts';
  const largeRow = handlerRows?.find((r) => r.id === 'encrypt-max');
  const bareP50 = largeRow?.bare?.p50;
  out.push(
    '### What is left',
    '',
    `1. **The HSM worker thread** (${pctOf(small, small?.hsmHopMs)}% of the main thread's CPU for a 32-byte ` +
      `Encrypt, in \`${lineOf('layers/pkcs11/worker-hsm.ts', 'export class WorkerHsm')}\`): every HSM call is ` +
      'a message to a worker thread and back (per-call deadlines) while the bare floor calls pkcs11js ' +
      'in-process; each message wakes the thread that receives it.',
    `2. **SigV4** (\`${lineOf('functions/sigv4.ts', 'export function verifySigV4')}\` and callees: ${sigv4Share}%): ` +
      'SHA-256 of the body, SHA-256 of the canonical request and one HMAC (the signing key is cached), plus ' +
      'parsing. Header lookups, the canonical URI and the signing-key lookup are already cached or scan-free.',
    `3. **The log line and the metrics** (\`finish\` in \`${lineOf(mw, 'const finish =')}\` with \`writeLine\` ` +
      `and \`publishRequestMetrics\`: ${respondShare}%): the request line (with its audit record) through ` +
      "Powertools Logger and one EMF document through Powertools Metrics, each its own write to stdout; Powertools' " +
      `public API, kept for its format and behaviour (environment reads per 32-byte Encrypt: ` +
      `${readList || 'none'}; \`getStringFromEnv\`/\`shouldUseInvokeStore\` ${envShare}% of the CPU).`,
    dataFloor
      ? `4. **The data itself** (${largeRow?.name ?? 'largest Encrypt'}, a ${dataFloor.bodyBytes}-byte body): ` +
          Object.entries(dataFloor.steps)
            .map(([step, us]) => `${step} ${us} µs`)
            .join(', ') +
          `; ${dataFloor.totalUs} µs in all, measured in this run` +
          (bareP50 !== undefined
            ? `, ${(dataFloor.totalUs / bareP50).toFixed(1)}× the bare operation's p50 by themselves: ` +
              'no framework makes the handler a small multiple of an in-process SoftHSM call at this size.'
            : '.')
      : '4. (The largest requests were not measured in this run.)',
    '5. **Against a network HSM** (1-5 ms per PKCS#11 call) the same overhead is a few percent (suite 7): the ' +
      'SoftHSM floor is unusually cheap (in-process, no network).',
    '',
  );
  return out.join('\n');
}

function coldStartTarget(row: ColdStartResults['rows'][number]): string {
  // Absent from results recorded before the target was a ratio.
  return row.targetRatio === undefined ? '—' : `≤ ${row.targetRatio}× floor`;
}

function coldStartRecommendations(c: ColdStartResults): string {
  const encrypt = c.rows.find((r) => r.name === 'encrypt');
  if (!encrypt) return '';
  const hsm = c.initProfile.find((p) => p.name === 'layers/pkcs11/')?.ms ?? 0;
  const total = c.initProfile.reduce((n, p) => n + p.ms, 0);
  const b = encrypt.breakdownMs;
  return [
    `- **What a cold start loads** is one file, the entry file: ${kb(encrypt.bundleBytes)} ` +
      'for the encrypt bundle, the size counted against the 300 KiB target. The AWS SDK Secrets Manager client ' +
      `(${kb(encrypt.lazyBytes ?? 0)}) is in a file of its own beside it (\`secrets-manager.mjs\`, \`scripts/build.ts\`), read only ` +
      `when the dynamic import in \`${lineOf('functions/aws.ts', "await import('@aws-lambda-powertools/parameters/secrets')")}\` ` +
      'runs, i.e. when a PIN or credentials secret ARN is configured: a deployment that reads its PIN from Secrets ' +
      'Manager loads it in its init phase too (measured here without secrets).',
    '- **ajv compiles at build time**: the validators of `functions/config.ts` and `functions/schemas.ts` are ' +
      "ajv's standalone code in the bundle, each object and array of a schema a function of its own (V8 compiles " +
      "only those a document reaches); ajv's compiler is not in it.",
    `- **Where the time goes now** (encrypt, medians): Node bootstrap ${b.bootstrap} ms, module load and init ` +
      `${b.importInit} ms, first invocation ${b.firstInvoke} ms, then ${b.warmInvoke} ms warm. On demand (as here: ` +
      '`AWS_LAMBDA_INITIALIZATION_TYPE` `on-demand`) the main thread loads pkcs11js, logs in and makes the first ' +
      "request's PKCS#11 calls itself, with no round trip of the init's own, and the HSM worker thread starts after " +
      `the first response: in the profiled cold start the main thread spent ${hsm} ms of ${total.toFixed(0)} ms ` +
      `sampled in \`layers/pkcs11/\`, against the floor of one process doing the same PKCS#11 start-up ` +
      `(${c.hsmFloorMs} ms from spawn). The first invocation pays, beyond a warm one, for the login when the init ` +
      "has not finished it, the handler code's first run (V8 compiles each function at its first call) and the " +
      'first lookup of the customer key.',
    '- In Lambda the init phase also includes the runtime bootstrap, the layer and Secrets Manager calls for the PIN ' +
      'and credentials (network round trips), so real cold starts are longer than these local numbers: they do not ' +
      "fit KMS's 250 ms per-request budget, hence provisioned concurrency (suite 5).",
  ].join('\n');
}

export function renderMarkdown(r: BenchResults, images: Images): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(
    '# Benchmarks',
    '',
    `Generated by \`node bench/run.ts${r.mode === 'smoke' ? ' --smoke' : ''}\` on ${m.date.slice(0, 10)} ` +
      `(${r.durationS.toFixed(0)} s). **Do not edit by hand**: \`npm run bench\` rewrites this file, ` +
      '`bench/results.json` and the SVG plots beside this file. Every target is a ratio against a floor measured in the ' +
      'same run (the machine is noisy, ±25% between runs), except the absolute latency, time and size limits. ' +
      'What was changed to get here, with the numbers before and after each change, and the price of the HSM ' +
      'worker threads (per-call deadlines): [performance.md](performance.md).',
    '',
    r.mode === 'smoke'
      ? '> **Smoke run**: a few seconds per suite, far too short for the numbers to mean anything.\n'
      : '',
    '## Summary',
    '',
    table(
      ['suite', 'measure', 'measured', 'floor (same run)', 'ratio', 'target', 'result'],
      targetRows(r).map((t) => [t.suite, t.measure, t.measured, t.floor, t.ratio, t.target, verdict(t.pass)]),
    ),
    '',
    '## Machine',
    '',
    table(
      ['', ''],
      [
        ['CPUs (`nproc`)', String(m.nproc)],
        ['CPU model', m.cpuModel],
        ['Memory', `${m.memoryGiB} GiB`],
        ['Kernel', m.kernel],
        ['Node.js', m.node],
        ['SoftHSM (`softhsm2-util --version`)', m.softhsm],
        ['pkcs11js', m.pkcs11js],
        ['autocannon', m.autocannon],
        ['Commit', m.commit],
        ['Date', m.date],
      ],
    ),
    '',
    'Client (autocannon) and servers share the same cores: every throughput number includes the load generator ' +
      'competing for CPU, for the proxy and its floor alike.',
    '',
    '## Commands',
    '',
    '```sh',
    ...r.commands,
    '```',
    '',
  );

  const h = r.handler;
  if (h) {
    out.push(
      '## 1. Handler cost',
      '',
      `Each route's Lambda handler (\`functions/*.ts\`) called in-process with signed API Gateway REST events ` +
        '(Base64 bodies, as the deployed API delivers them with `binaryMediaTypes */*`), in the production ' +
        'configuration: SigV4, schema validation, Powertools logging and metrics all on, Lambda environment variables ' +
        `set. The handler process's stdout (a JSON log line and an EMF document per request) goes to a file ` +
        `(${(h.logBytes / 1e6).toFixed(1)} MB written). Beside each route, in the same process, the bare PKCS#11 calls ` +
        `that request needs, with pkcs11js on the same token and session type. ${h.iterations} calls each after ` +
        `${h.warmup} warm-up calls, in ${h.rounds} alternating rounds (bare, handler, bare, ...). Times in µs.`,
      '',
      table(
        [
          'route',
          'handler p50',
          'p90',
          'p99',
          'bare operation',
          'bare p50',
          'bare p99',
          'ratio p50 (information)',
        ],
        h.rows.map((row) => [
          row.name,
          row.handler.p50.toFixed(1),
          row.handler.p90.toFixed(1),
          row.handler.p99.toFixed(1),
          row.bareName ?? '— (health result cached 10 s)',
          row.bare?.p50.toFixed(1) ?? '—',
          row.bare?.p99.toFixed(1) ?? '—',
          row.ratio === undefined ? '—' : x(row.ratio),
        ]),
      ),
      '',
      `![Handler latency CDF](${images.latency})`,
      '',
      'GetKeyMetadata reads nothing from the HSM per request (key attributes are cached for `keyCacheSeconds`); its ' +
        'floor is still the one attribute read a metadata request would need uncached.',
      '',
    );
    if (h.profiles.length > 0) {
      out.push('## Where the time goes', '', profileSection(h.profiles, h.envReads, h.dataFloor, h.rows));
    }
  }

  const t = r.throughput;
  if (t) {
    const rowsFor = (p: number) => t.rows.filter((row) => row.processes === p);
    const scale = (server: string, c: number) => {
      const one = throughputRow(t, server, 1, c);
      const many = throughputRow(t, server, Math.max(...t.processes), c);
      return one && many && many.processes !== one.processes ? x(many.rps / one.rps) : '—';
    };
    out.push(
      '## 2. Server throughput',
      '',
      'The local HTTPS server (`local/main.ts --config`, the same handlers behind an API Gateway event adapter) against ' +
        '`bench/bare-server.ts` (node:https keep-alive, the same TLS options and ECDSA P-256 certificate, one ' +
        'pkcs11js AES-GCM encrypt per request, no SigV4, validation, logging or metrics). Load: autocannon in the ' +
        `bench process, one pre-signed Encrypt 32 B request replayed, ${t.durationS} s per run after a ` +
        `${t.warmupS} s warm-up, ${t.reps} repetition${t.reps === 1 ? '' : 's'} alternating bare and proxy (medians shown); ` +
        'for both servers the client opens a new connection after every 1000 requests, as the proxy asks ' +
        '(`Connection: close`, `localServer.maxRequestsPerSocket`). ' +
        'Multi-process: `bench/cluster-proxy.ts --processes N` (node:cluster; each worker imports `local/main.ts` ' +
        'with the same arguments, so each has its own HSM session; logins staggered by 200 ms). "p99 ms in the ' +
        'proxy": the proxy\'s own latencyMs from its log lines (the event handed to the handlers → the answer), ' +
        'the rest of the client-side latency is waiting: for the server thread (busy with the other requests in ' +
        'flight) and for a core (autocannon shares them).',
      '',
      table(
        [
          'server',
          'processes',
          'concurrency',
          'req/s',
          'p50 ms',
          'p99 ms',
          'p99 ms in the proxy',
          'non-2xx',
          'errors',
          'proxy / bare',
        ],
        t.processes.flatMap((p) =>
          rowsFor(p).map((row: ThroughputRow) => {
            const bare = throughputRow(t, 'bare', row.processes, row.connections);
            return [
              row.server,
              String(row.processes),
              String(row.connections),
              String(row.rps),
              row.p50Ms.toFixed(2),
              row.p99Ms.toFixed(2),
              row.proxyP99Ms === undefined ? '' : row.proxyP99Ms.toFixed(2),
              String(row.non2xx),
              String(row.errors),
              row.server === 'proxy' && bare ? x(row.rps / bare.rps) : '',
            ];
          }),
        ),
      ),
      '',
      t.processes.length > 1
        ? `Scaling from 1 to ${Math.max(...t.processes)} processes: proxy ${t.concurrencies.map((c) => `${scale('proxy', c)} at concurrency ${c}`).join(', ')}; ` +
            `bare ${t.concurrencies.map((c) => `${scale('bare', c)} at concurrency ${c}`).join(', ')}. ` +
            `On ${m.nproc} cores shared with the load generator, a second server process can only take what autocannon leaves.`
        : '',
      '',
      `![Throughput versus concurrency](${images.throughput})`,
      '',
    );
  }

  const c = r.coldStart;
  if (c) {
    out.push(
      '## 3. Cold start',
      '',
      'Each bundle built by `buildFunctions` (`scripts/build.ts`, the esbuild output that deploys) into a temporary ' +
        'folder, pkcs11js only on `NODE_PATH` and the HSM worker bundle where the layer provides them, Lambda ' +
        'environment variables set. Bundle size: the entry file (all that a cold start loads), then the file ' +
        'loaded only on demand (the Secrets Manager client). A fresh ' +
        '`node` process per run, timed from `spawn` to the first successful response to a signed event (module ' +
        'load, C_Initialize/C_OpenSession/C_Login, first invocation; the child says so on stderr at once, and its ' +
        `warm calls after it are timed apart). Median of ${c.runs} run${c.runs === 1 ? '' : 's'}, interleaved. ` +
        `Floors from the same run: an empty Node process ${ms(c.nodeFloorMs)}; Node + require pkcs11js + login + one ` +
        `encrypt ${ms(c.hsmFloorMs)}` +
        (c.hsmFloorRunsMs ? ` (runs: ${c.hsmFloorRunsMs.map((v) => v.toFixed(0)).join(', ')}).` : '.'),
      '',
      table(
        [
          'function',
          'median ms',
          '× HSM floor',
          'runs ms',
          'bootstrap',
          'import + init',
          'first invoke',
          'warm invoke',
          'bundle (cold start + on demand)',
          'largest parts of what a cold start loads',
          'target',
          'result',
        ],
        c.rows.map((row) => [
          row.name,
          row.medianMs.toFixed(1),
          x(row.medianMs / c.hsmFloorMs),
          row.runsMs.map((v) => v.toFixed(0)).join(', '),
          row.breakdownMs.bootstrap.toFixed(1),
          row.breakdownMs.importInit.toFixed(1),
          row.breakdownMs.firstInvoke.toFixed(1),
          // Absent from results recorded before it was measured.
          row.breakdownMs.warmInvoke?.toFixed(2) ?? '',
          `${kb(row.bundleBytes)} + ${kb(row.lazyBytes ?? 0)}`,
          row.composition
            .slice(0, 5)
            .map((g) => `${g.name} ${g.percent}%`)
            .join(', '),
          coldStartTarget(row),
          verdict(row.passTime),
        ]),
      ),
      '',
      "One more Encrypt cold start under `--cpu-prof`, frames mapped back to their sources through the bundle's " +
        'source map (self CPU ms, profiler overhead included):',
      '',
      table(
        ['where', 'ms'],
        c.initProfile.map((p) => [
          p.name === '?' ? '(bundle code without a source mapping)' : p.name,
          p.ms.toFixed(1),
        ]),
      ),
      '',
      coldStartRecommendations(c),
      '',
    );
  }

  if (r.soak) out.push(...soakSection(r.soak, '## 4. Soak', images.soak));

  if (r.cost) out.push(...costSection(r.cost));
  if (r.cpuShare) out.push(...cpuShareSection(r.cpuShare, images.cpuShare));
  if (r.networkHsm) out.push(...networkHsmSection(r.networkHsm));
  if (r.soakNetwork) {
    const why = networkSoakRate(r.soakNetwork, r.networkHsm);
    out.push(
      ...soakSection(r.soakNetwork, '## 8. Soak, the HSM a network distance away', images.soakNetwork, why),
    );
  }

  out.push(
    '## Caveats',
    '',
    '- SoftHSM runs in-process: its ~20 µs operations make every ratio against the HSM floor look worse than it would ' +
      'against a network HSM; only suites 7 and 8 put it a (simulated) network distance away.',
    "- The load generator shares the machine's cores with the servers; absolute req/s are lower than on a separate " +
      'client machine, for the floor and the proxy alike.',
    '- Cold starts are local process starts, not Lambda init phases (no runtime bootstrap, layer mount, VPC or ' +
      'Secrets Manager).',
    '- The cost estimate is arithmetic on these measurements and list prices; it is not a quote.',
    '',
  );
  return out.filter((line, i, all) => !(line === '' && all[i - 1] === '')).join('\n');
}

/** The soak's section (suites 4 and 8). */
function soakSection(s: SoakResults, heading: string, image: string, why?: string): string[] {
  return [
    heading,
    '',
    ...(s.hsmRules === undefined
      ? []
      : [
          `The same soak with the HSM a network distance away: the fault-injecting module in front of the token, rule ` +
            `${s.hsmRules.map((rule) => `\`${rule}\``).join(', ')} (suite 7), at ${s.rate} req/s.`,
          '',
          why ?? '',
          '',
        ]),
    `The local proxy (one fresh process) at a fixed ${s.rate} req/s (autocannon \`overallRate\`, ${s.connections} ` +
      `connections) for ${s.durationS} s after a ${s.warmupS} s warm-up, the four routes in turn (GetHealthStatus, ` +
      'GetKeyMetadata, Encrypt 32 B, Decrypt 32 B; requests signed once, dated mid-run so that they stay within ' +
      "the 5-minute window). VmRSS of the server from `/proc/<pid>/status` every second. autocannon's rate " +
      "limiter sends each connection's quota for the second back to back, so the load arrives in bursts at the " +
      'start of every second: the p99 includes that queueing. Each connection is closed by the client after ' +
      '1000 requests, when the server answers with `Connection: close` (`localServer.maxRequestsPerSocket`): ' +
      'autocannon would otherwise send one more request there and mis-time every answer after it (bench/lib/load.ts).',
    '',
    table(
      ['', ''],
      [
        ['requests', String(s.completed)],
        ['achieved rate', `${s.achievedRps} req/s`],
        ['non-2xx / socket errors', `${s.non2xx} / ${s.errors}${statusList(s)}`],
        [
          'per route (2xx / other)',
          Object.entries(s.byRoute)
            .map(([route, v]) => `${route} ${v.ok}/${v.other}`)
            .join(', '),
        ],
        [
          `p99, first ${s.windowS} s → last ${s.windowS} s`,
          `${ms(s.firstP99Ms)} → ${ms(s.lastP99Ms)} (${x(s.driftRatio)})`,
        ],
        ...(s.serverFirstP99Ms === undefined
          ? []
          : [
              [
                "the same in the proxy (its log lines' `latencyMs`: event in → answer out)",
                `${ms(s.serverFirstP99Ms)} → ${ms(s.serverLastP99Ms)}`,
              ],
            ]),
        ['RSS after warm-up → end', `${s.rssBaselineMb} MB → ${s.rssEndMb} MB (${s.rssGrowthPercent}%)`],
        ...rssShape(s),
        ...(s.gc && s.gc.count > 0
          ? [
              [
                `live heap after full GC (${s.gc.count} Mark-Compacts, \`--trace-gc\`)`,
                `first ${s.gc.firstLiveMb} MB, last ${s.gc.lastLiveMb} MB, largest ${s.gc.maxLiveMb} MB`,
              ],
              [
                'heap committed by V8 at those GCs',
                `${s.gc.firstCommittedMb} MB → ${s.gc.lastCommittedMb} MB`,
              ],
            ]
          : []),
      ],
    ),
    '',
    rssVerdict(s),
    '',
    `![Soak timeline](${image})`,
    '',
  ];
}

/** The statuses other than 2xx, when there were any: " (3× 503)". */
function statusList(s: SoakResults): string {
  const other = Object.entries(s.statusCodes ?? {}).filter(([code]) => !code.startsWith('2'));
  return other.length === 0 ? '' : ` (${other.map(([code, n]) => `${n}× ${code}`).join(', ')})`;
}

/** How the RSS grew: over the second half, and the largest one-second step. */
function rssShape(s: SoakResults): string[][] {
  const points = s.timeline.flatMap((p) =>
    p.rssMb === undefined ? [] : [[p.t, p.rssMb] as [number, number]],
  );
  if (points.length < 4) return [];
  const mid = points[Math.floor(points.length / 2)] as [number, number];
  const end = points[points.length - 1] as [number, number];
  let step = { at: 0, mb: 0 };
  for (let i = 1; i < points.length; i++) {
    const d = (points[i] as [number, number])[1] - (points[i - 1] as [number, number])[1];
    if (d > step.mb) step = { at: (points[i] as [number, number])[0], mb: d };
  }
  return [
    [
      'RSS over the second half',
      `${mid[1]} MB → ${end[1]} MB (${((100 * (end[1] - mid[1])) / mid[1]).toFixed(1)}%)`,
    ],
    ['largest one-second RSS step', `+${step.mb.toFixed(1)} MB at ${step.at} s`],
  ];
}

function rssVerdict(s: SoakResults): string {
  if (!s.gc || s.gc.count === 0 || s.pass.rss) return '';
  const liveGrowth = (100 * (s.gc.lastLiveMb - s.gc.firstLiveMb)) / s.gc.firstLiveMb;
  const committedGrowth = s.gc.lastCommittedMb - s.gc.firstCommittedMb;
  if (liveGrowth < 10 && committedGrowth > 0) {
    return (
      'The RSS target is missed, but not through a leak: the live JavaScript heap after full GCs does not grow ' +
      `(first ${s.gc.firstLiveMb} MB, last ${s.gc.lastLiveMb} MB, never above ${s.gc.maxLiveMb} MB), while V8 grows the heap it has committed (${s.gc.firstCommittedMb} → ` +
      `${s.gc.lastCommittedMb} MB, in steps: the young generation is resized up under this allocation rate). ` +
      'A fixed young generation (`node --max-semi-space-size=…`) or a longer warm-up would make the RSS flat; ' +
      'the allocation rate itself comes from the per-request work in "Where the time goes".'
    );
  }
  return `The RSS target is missed and the live heap after full GCs grew ${liveGrowth.toFixed(0)}%: look for a leak.`;
}

/** The plots, by name: their SVG text, or (in renderMarkdown) their file names. */
type Images = Record<'latency' | 'throughput' | 'soak' | 'soakNetwork' | 'cpuShare', string>;

export function renderSvgs(r: BenchResults): Images {
  const h = r.handler;
  const latencySeries: Series[] = [];
  (h?.rows ?? []).forEach((row, i) => {
    const color = PALETTE[i % PALETTE.length];
    latencySeries.push({ name: `${row.name}`, points: row.handlerCdf.map(([v, q]) => [v, q * 100]), color });
    if (row.bareCdf) {
      latencySeries.push({
        name: `  bare (${row.id})`,
        points: row.bareCdf.map(([v, q]) => [v, q * 100]),
        color,
        dashed: true,
      });
    }
  });
  const latency = chart(
    [
      {
        title: 'Handler latency distribution (CDF): handler solid, bare PKCS#11 operation dashed',
        xLabel: 'latency per call, µs (log scale)',
        yLabel: 'percent of calls at or below',
        series: latencySeries,
        xLog: true,
      },
    ],
    980,
    520,
  );
  const t = r.throughput;
  const categories = (t?.concurrencies ?? []).map((c) => `concurrency ${c}`);
  const groups = (t?.processes ?? []).flatMap((p) =>
    (['bare', 'proxy'] as const).map((server) => ({
      name: `${server}, ${p} process${p > 1 ? 'es' : ''}`,
      values: (t?.concurrencies ?? []).map((c) =>
        t ? (throughputRow(t, server, p, c)?.rps ?? Number.NaN) : Number.NaN,
      ),
      color: server === 'bare' ? (p > 1 ? '#3182bd' : '#9ecae1') : p > 1 ? '#de2d26' : '#fcae91',
    })),
  );
  const throughput = barChart({
    title: 'Encrypt 32 B throughput: bare https + pkcs11js vs the proxy, 1 vs N processes',
    yLabel: 'requests per second (2xx)',
    categories,
    groups,
  });
  return {
    latency,
    throughput,
    soak: soakSvg(r.soak),
    soakNetwork: soakSvg(r.soakNetwork),
    cpuShare: cpuShareSvg(r.cpuShare),
  };
}

function soakSvg(s: SoakResults | undefined): string {
  const timeline = s?.timeline ?? [];
  return chart(
    [
      {
        title: `Soak at ${s?.rate ?? 0} req/s: responses per second`,
        xLabel: 'seconds',
        yLabel: 'responses / s',
        series: [{ name: 'responses/s', points: timeline.map((p) => [p.t, p.rps]) }],
      },
      {
        title: 'p99 latency per second',
        xLabel: 'seconds',
        yLabel: 'p99 ms',
        series: [
          { name: 'p99 ms (client)', points: timeline.map((p) => [p.t, p.p99Ms]), color: PALETTE[1] },
          {
            name: 'p99 ms (in the proxy)',
            points: timeline.flatMap((p) =>
              p.serverP99Ms === undefined ? [] : [[p.t, p.serverP99Ms] as [number, number]],
            ),
            color: PALETTE[3],
          },
        ],
      },
      {
        title: 'Server RSS (VmRSS)',
        xLabel: 'seconds',
        yLabel: 'MB',
        yZero: false,
        series: [
          {
            name: 'RSS MB',
            points: timeline.flatMap((p) =>
              p.rssMb === undefined ? [] : [[p.t, p.rssMb] as [number, number]],
            ),
            color: PALETTE[2],
          },
        ],
      },
    ],
    900,
    300,
  );
}

export function writeReport(r: BenchResults, docsDir: string): string[] {
  const svgs = renderSvgs(r);
  const names: Images = {
    latency: 'bench-latency.svg',
    throughput: 'bench-throughput.svg',
    soak: 'bench-soak.svg',
    soakNetwork: 'bench-soak-network.svg',
    cpuShare: 'bench-cpu-share.svg',
  };
  const written: string[] = [];
  for (const key of Object.keys(names) as Array<keyof Images>) {
    const file = join(docsDir, names[key]);
    writeFileSync(file, svgs[key]);
    written.push(file);
  }
  const md = join(docsDir, 'benchmarks.md');
  writeFileSync(md, renderMarkdown(r, names));
  written.push(md);
  return written;
}
