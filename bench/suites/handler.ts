// Suite 1: handler cost. Runs bench/handler-child.ts in a child process whose stdout (Powertools
// logs and EMF metrics) goes to a file, then the same child once more under `node --cpu-prof` for
// one route, to say where the time goes.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DIRECT, type Launch } from '../lib/cgroup.ts';
import { analyzeProfile, type ProfileAnalysis } from '../lib/profile.ts';
import { type BenchSetup, benchSetup, removeSetup } from '../lib/requests.ts';
import { children } from '../lib/servers.ts';
import { ROOT, round, type Summary } from '../lib/util.ts';

/** One route as bench/handler-child.ts measures it (times in microseconds). */
export interface HandlerMeasurement {
  id: string;
  name: string;
  bareName: string | undefined;
  handler: Summary;
  bare: Summary | undefined;
  handlerCdf: Array<[number, number]>;
  bareCdf: Array<[number, number]> | undefined;
}

/** Each timed call of one route, in order (bench/handler-child.ts --samples). */
export interface HandlerSamples {
  /** Handler calls made before the first timed one (each writes one request line). */
  firstCall: number;
  /** Each timed call's time, µs. */
  us: number[];
  /** The timed calls (indices into `us`) that a garbage collection pause of the thread fell into. */
  gc: number[];
  /** The timed calls during which the proxy collected (functions/young-gc.ts). */
  forcedGc: number[];
}

export interface HandlerRow extends HandlerMeasurement {
  /** handler p50 / bare p50: information (a Lambda bills whole milliseconds; a network HSM takes several). */
  ratio: number | undefined;
}

export interface HandlerResults {
  iterations: number;
  warmup: number;
  rounds: number;
  logBytes: number;
  rows: HandlerRow[];
  /** process.env reads per request, by route and variable (Proxy-counted, after the timed loops). */
  envReads: Record<string, Record<string, number>>;
  /**
   * What any implementation must do with the largest Encrypt's bytes (Base64, SHA-256, JSON), step
   * by step in µs: the part of the handler's time that no framework change removes.
   */
  dataFloor: { bodyBytes: number; steps: Record<string, number>; totalUs: number } | undefined;
  /** CPU profiles (node --cpu-prof) of single routes. */
  profiles: Array<ProfileAnalysis & { id: string; route: string; iterations: number; command: string }>;
}

/** What Lambda puts in the environment, so that Powertools behaves as it does there. */
export const LAMBDA_ENV = {
  // As serverless.yml sets it (functions/young-gc.ts).
  NODE_OPTIONS: '--expose-gc',
  AWS_LAMBDA_FUNCTION_NAME: 'xks-bench',
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '1024',
  AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
  AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
  AWS_REGION: 'us-east-1',
  AWS_DEFAULT_REGION: 'us-east-1',
};

/** The handler child's environment: Lambda's variables, the configuration and token of `setup`, `extra`. */
export function handlerEnv(setup: BenchSetup, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...LAMBDA_ENV,
    XKS_PROXY_CONFIG: setup.configFile,
    SOFTHSM2_CONF: setup.softhsmConf,
    ...extra,
  };
}

/**
 * Encrypt 32 B alone, one request at a time, without the bare calls (suites 6 and 7): its summary
 * (µs) and, with `samples`, each call's time and the handler calls before the first (proxy-share.ts).
 * `gapMs`: idle time before each timed call.
 */
export async function encryptAlone(options: {
  env: NodeJS.ProcessEnv;
  iterations: number;
  warmup: number;
  samples: boolean;
  gapMs?: number;
  launch: Launch;
  /** Where the results and the child's stdout go (`<path>.json`, `<path>.log`). */
  path: string;
}): Promise<{ handler: Summary; samples?: HandlerSamples; logFile: string }> {
  const args = [
    '--only',
    'encrypt-32',
    '--no-bare',
    '--rounds',
    '1',
    ...(options.samples ? ['--samples'] : []),
    ...(options.gapMs ? ['--gap-ms', String(options.gapMs)] : []),
  ];
  const loop = ['--iterations', String(options.iterations), '--warmup', String(options.warmup)];
  const out = `${options.path}.json`;
  const logFile = `${options.path}.log`;
  await runChild([], ['--out', out, ...args, ...loop], options.env, logFile, 300_000, options.launch);
  const { results } = JSON.parse(readFileSync(out, 'utf8')) as {
    results: Array<{ handler: Summary; samples?: HandlerSamples }>;
  };
  const result = results[0];
  if (result === undefined) throw new Error('the handler child measured nothing');
  return { ...result, logFile };
}

/** Runs bench/handler-child.ts, its stdout appended to `logFile`. */
export function runChild(
  nodeArgs: string[],
  childArgs: string[],
  env: NodeJS.ProcessEnv,
  logFile: string,
  timeoutMs: number,
  launch: Launch = DIRECT,
): Promise<void> {
  const out = openSync(logFile, 'a');
  const { command, args } = launch(process.execPath, [
    ...nodeArgs,
    join(ROOT, 'bench/handler-child.ts'),
    ...childArgs,
  ]);
  const child = spawn(command, args, {
    cwd: ROOT,
    env,
    stdio: ['ignore', out, 'pipe'],
  });
  closeSync(out);
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-20_000);
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (code === 0) resolvePromise();
      else reject(new Error(`handler benchmark child failed (${code ?? signal}):\n${stderr}`));
    });
  });
}

export async function handlerSuite(options: {
  iterations: number;
  warmup: number;
  rounds: number;
  /** Routes to profile, and how many iterations each. */
  profiles: Array<{ id: string; iterations: number }>;
  workDir: string;
}): Promise<HandlerResults> {
  const setup = benchSetup();
  try {
    const env = handlerEnv(setup);
    const out = join(options.workDir, 'handler.json');
    const logFile = join(options.workDir, 'handler-stdout.log');
    const loopArgs = [
      '--iterations',
      String(options.iterations),
      '--warmup',
      String(options.warmup),
      '--rounds',
      String(options.rounds),
    ];
    await runChild([], ['--out', out, ...loopArgs], env, logFile, 300_000);
    const measured = JSON.parse(readFileSync(out, 'utf8')) as {
      results: HandlerMeasurement[];
      envReads: HandlerResults['envReads'];
      dataFloor: HandlerResults['dataFloor'];
    };
    const rows: HandlerRow[] = measured.results.map((r) => ({
      ...r,
      ratio: r.bare ? round(r.handler.p50 / r.bare.p50, 2) : undefined,
    }));

    const profiles: HandlerResults['profiles'] = [];
    for (const { id, iterations } of options.profiles) {
      const profDir = join(options.workDir, `cpu-profile-${id}`);
      mkdirSync(profDir, { recursive: true });
      const profOut = join(options.workDir, `handler-profile-${id}.json`);
      const nodeArgs = ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', profDir];
      const childArgs = ['--only', id, '--no-bare', '--iterations', String(iterations), '--rounds', '1'];
      const outArgs = ['--out', profOut];
      await runChild(
        nodeArgs,
        [...childArgs, ...outArgs],
        env,
        join(options.workDir, 'profile-stdout.log'),
        300_000,
      );
      const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
      if (file === undefined) throw new Error('node --cpu-prof wrote no profile');
      const { loop } = JSON.parse(readFileSync(profOut, 'utf8')) as {
        loop: { startUs: number; endUs: number };
      };
      profiles.push({
        ...analyzeProfile(join(profDir, file), loop, 40),
        id,
        route: rows.find((r) => r.id === id)?.name ?? id,
        iterations,
        command: `node --cpu-prof --cpu-prof-interval 100 bench/handler-child.ts ${childArgs.join(' ')}`,
      });
    }
    return {
      iterations: options.iterations,
      warmup: options.warmup,
      rounds: options.rounds,
      logBytes: statSync(logFile).size,
      rows,
      envReads: measured.envReads,
      dataFloor: measured.dataFloor,
      profiles,
    };
  } finally {
    removeSetup(setup);
  }
}
