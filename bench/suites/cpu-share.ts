// Suite 6: at Lambda's CPU share. Lambda gives a function memory/1769 of a vCPU; the cold-start
// suite and the handler (Encrypt 32 B, one request at a time) run again with every child inside a
// cgroup v1 `cpu` group with that CFS quota (bench/lib/cgroup.ts), one group per memory size, and
// once without a quota beside them (same method and counts, for the comparison).
import { join } from 'node:path';
import { cgroupSupport, cpuShare, createCpuGroup, DIRECT, type Launch } from '../lib/cgroup.ts';
import { benchSetup, removeSetup } from '../lib/requests.ts';
import { round, type Summary } from '../lib/util.ts';
import { coldStartSuite } from './coldstart.ts';
import { encryptAlone, handlerEnv } from './handler.ts';

export interface CpuShareRow {
  /** Undefined: no quota (the whole machine). */
  memoryMb: number | undefined;
  cpuShare: number | undefined;
  quotaUs: number | undefined;
  periodUs: number | undefined;
  /** Spawn → first response, median per bundle (ms), and the floors run in the same group. */
  coldStart: Array<{ name: string; medianMs: number }>;
  hsmFloorMs: number;
  nodeFloorMs: number;
  /** Encrypt 32 B, warm, back to back, µs. */
  handler: Summary;
}

export interface CpuShareResults {
  /** Why nothing was measured (no root, no cgroup v1 cpu controller). */
  skipped: string | undefined;
  memorySizes: number[];
  coldStartRuns: number;
  iterations: number;
  rows: CpuShareRow[];
}

async function measure(options: {
  memoryMb: number | undefined;
  launch: Launch;
  periodUs: number | undefined;
  quotaUs: number | undefined;
  coldStartRuns: number;
  iterations: number;
  warmup: number;
  workDir: string;
}): Promise<CpuShareRow> {
  const label = options.memoryMb === undefined ? 'full' : `${options.memoryMb}mb`;
  const cold = await coldStartSuite({
    runs: options.coldStartRuns,
    workDir: join(options.workDir, `cold-${label}`),
    launch: options.launch,
  });
  const setup = benchSetup();
  try {
    const { handler } = await encryptAlone({
      env: handlerEnv(setup),
      iterations: options.iterations,
      warmup: options.warmup,
      samples: false,
      launch: options.launch,
      path: join(options.workDir, `cpu-share-handler-${label}`),
    });
    return {
      memoryMb: options.memoryMb,
      cpuShare: options.memoryMb === undefined ? undefined : round(cpuShare(options.memoryMb), 3),
      quotaUs: options.quotaUs,
      periodUs: options.periodUs,
      coldStart: cold.rows.map((r) => ({ name: r.name, medianMs: r.medianMs })),
      hsmFloorMs: cold.hsmFloorMs,
      nodeFloorMs: cold.nodeFloorMs,
      handler,
    };
  } finally {
    removeSetup(setup);
  }
}

export async function cpuShareSuite(options: {
  memorySizes: number[];
  coldStartRuns: number;
  iterations: number;
  warmup: number;
  workDir: string;
  log: (line: string) => void;
}): Promise<CpuShareResults> {
  const base = {
    memorySizes: options.memorySizes,
    coldStartRuns: options.coldStartRuns,
    iterations: options.iterations,
  };
  const support = cgroupSupport();
  if (!support.ok) {
    options.log(`  skipped: ${support.reason}`);
    return { ...base, skipped: support.reason, rows: [] };
  }
  const common = { ...options, periodUs: undefined, quotaUs: undefined };
  const rows: CpuShareRow[] = [];
  const report = (row: CpuShareRow) => {
    const encrypt = row.coldStart.find((c) => c.name === 'encrypt');
    options.log(
      `  ${row.memoryMb === undefined ? 'no quota' : `${row.memoryMb} MB (${row.cpuShare} vCPU)`}: cold start encrypt ` +
        `${encrypt?.medianMs} ms (HSM floor ${row.hsmFloorMs} ms), handler p50 ${row.handler.p50} µs p99 ${row.handler.p99} µs`,
    );
  };
  rows.push(await measure({ ...common, memoryMb: undefined, launch: DIRECT }));
  report(rows[0] as CpuShareRow);
  for (const memoryMb of options.memorySizes) {
    const group = createCpuGroup(memoryMb);
    try {
      const row = await measure({
        ...common,
        memoryMb,
        launch: group.launch,
        periodUs: group.periodUs,
        quotaUs: group.quotaUs,
      });
      rows.push(row);
      report(row);
    } finally {
      await group.remove();
    }
  }
  return { ...base, skipped: undefined, rows };
}
