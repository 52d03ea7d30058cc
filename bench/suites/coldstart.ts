// Suite 3: cold start. Each Lambda bundle exactly as scripts/build.ts builds it (esbuild, the output
// that deploys), in a folder of its own with pkcs11js only where the layer puts it (NODE_PATH): a
// fresh Node process from spawn to its first successful response to a signed event, module load and
// HSM login included. Beside it, the floor: a fresh Node process that only loads pkcs11js, logs in
// and encrypts once. Bundle composition from esbuild's metafile.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildHsmWorker } from '../../layers/build.ts';
import { type Bundle, buildFunctions, FUNCTIONS } from '../../scripts/build.ts';
import { signedEvent } from '../../test/helpers/events.ts';
import { DIRECT, type Launch } from '../lib/cgroup.ts';
import {
  benchSetup,
  decryptBody,
  type EncryptResponse,
  encryptBody,
  faultBenchSetup,
  healthBody,
  metadataBody,
  removeSetup,
  xksPath,
} from '../lib/requests.ts';
import { children } from '../lib/servers.ts';
import { median, ROOT, round } from '../lib/util.ts';
import { LAMBDA_ENV } from './handler.ts';

export interface ColdStartRow {
  name: string;
  /** What a cold start loads: the entry file. */
  bundleBytes: number;
  /** The file loaded only on demand (the Secrets Manager client, when a secret is configured). */
  lazyBytes: number;
  /** Spawn to the response in the parent, per run (ms). */
  runsMs: number[];
  medianMs: number;
  /**
   * Inside the child: Node bootstrap until the script runs, the import (module load + HSM login), the
   * first invocation, and the median of the next few (warm) invocations of the same request.
   */
  breakdownMs: { bootstrap: number; importInit: number; firstInvoke: number; warmInvoke: number };
  /** What the bundle holds, largest first (esbuild metafile, bytes in the output). */
  composition: Array<{ name: string; bytes: number; percent: number }>;
  /** The target: medianMs at most this many times hsmFloorMs. */
  targetRatio: number;
  targetBytes: number;
  passTime: boolean;
  passSize: boolean;
}

export interface ColdStartResults {
  runs: number;
  /** A fresh Node process that prints and exits. */
  nodeFloorMs: number;
  /** A fresh process: require pkcs11js, C_Initialize, C_OpenSession, C_Login, find the key, one encrypt. */
  hsmFloorMs: number;
  /** The same, per run, in order (absent in results written before it was kept). */
  hsmFloorRunsMs?: number[];
  rows: ColdStartRow[];
  /** Self CPU time of one profiled Encrypt cold start (spawn to first response), by package. */
  initProfile: Array<{ name: string; ms: number }>;
}

/**
 * A cold start may take at most this many times the HSM floor measured in the same run: a fresh Node
 * process doing the same PKCS#11 start-up and one encrypt. A ratio, so that the target holds on any
 * machine and through the noise of a shared one.
 */
const TARGET_RATIO = 1.5;
const TARGET_BYTES = 300 * 1024;

interface ChildTimes {
  /** Spawn to the child's FIRST line (its first response), or to its RESULT line when it writes none. */
  totalMs: number;
  line: string;
  /** Resolves when the child has exited (its CPU profile, if any, is written then). */
  exited: Promise<void>;
}

/**
 * Spawns `node -e script` and resolves when it writes a RESULT line to stderr, timed to its FIRST
 * line when it writes one before (what came after the first response is not the cold start's).
 */
function timeChild(
  script: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
  nodeArgs: string[] = [],
  launch: Launch = DIRECT,
): Promise<ChildTimes> {
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const { command, args } = launch(process.execPath, [...nodeArgs, '--input-type=module', '-e', script]);
    const child = spawn(command, args, {
      cwd,
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.add(child);
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    let stderr = '';
    let done = false;
    let firstMs: number | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
      const lines = stderr.split('\n');
      if (firstMs === undefined && lines.some((l) => l === 'FIRST')) firstMs = performance.now() - started;
      const line = lines.find((l) => l.startsWith('RESULT '));
      if (line && !done) {
        done = true;
        const totalMs = firstMs ?? performance.now() - started;
        resolvePromise({ totalMs, line: line.slice(7), exited });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      children.delete(child);
      if (!done) reject(new Error(`cold start child exited (${code}) without a result:\n${stderr}`));
    });
  });
}

/**
 * Where a cold start's CPU time goes, by package: one more run under --cpu-prof, each sampled frame
 * in the bundle mapped back to its source through the bundle's source map.
 */
function initProfile(profileFile: string, bundle: string): Array<{ name: string; ms: number }> {
  const profile = JSON.parse(readFileSync(profileFile, 'utf8')) as {
    nodes: Array<{
      id: number;
      callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
    }>;
    samples: number[];
    timeDeltas: number[];
  };
  // The entry (and any other file of the bundle's folder), each with its own source map.
  const bundleDir = pathToFileURL(dirname(bundle)).href;
  const maps = new Map<string, SourceMap>();
  const mapOf = (url: string) => {
    let map = maps.get(url);
    if (map === undefined) {
      map = new SourceMap(JSON.parse(readFileSync(`${fileURLToPath(url)}.map`, 'utf8')));
      maps.set(url, map);
    }
    return map;
  };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const frame = byId.get(profile.samples[i] as number)?.callFrame;
    if (frame === undefined || frame.functionName === '(idle)') continue;
    let key: string;
    if (frame.url.startsWith(`${bundleDir}/`) && frame.url.endsWith('.mjs')) {
      const entry = mapOf(frame.url).findEntry(frame.lineNumber, frame.columnNumber) as {
        originalSource?: string;
      };
      const source = entry.originalSource ?? '?';
      const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(source);
      key = pkg
        ? (pkg[1] as string)
        : source.startsWith('ajv-precompiled:')
          ? 'ajv validators (precompiled)'
          : source.replace(/^.*\/(functions|layers)\//, '$1/').replace(/\/[^/]+$/, '/');
    } else if (frame.url.includes('/node_modules/pkcs11js/')) key = 'pkcs11js (layer)';
    else if (frame.url.startsWith('node:')) key = 'node: core (module loader, bootstrap)';
    else if (frame.url === '')
      key = frame.functionName.startsWith('(') ? frame.functionName : 'native / V8 builtins';
    else key = frame.url;
    self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  return [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 10)
    .map(([name, us]) => ({ name, ms: round(us / 1000, 1) }));
}

/** Bytes a cold start loads per package (node_modules/<pkg>) or project folder, largest first. */
function composition(bundle: Bundle): ColdStartRow['composition'] {
  const sizes = new Map<string, number>();
  let total = 0;
  for (const [input, bytes] of Object.entries(bundle.inputBytes)) {
    const nm = input.lastIndexOf('node_modules/');
    let group: string;
    if (nm >= 0) {
      const parts = input.slice(nm + 'node_modules/'.length).split('/');
      group = parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? input);
    } else if (input.startsWith('ajv-precompiled:')) {
      group = 'ajv validators (precompiled)';
    } else {
      group = `${input.split('/')[0]}/`;
    }
    sizes.set(group, (sizes.get(group) ?? 0) + bytes);
    total += bytes;
  }
  return [...sizes]
    .sort((a, b) => b[1] - a[1])
    .map(([group, bytes]) => ({ name: group, bytes, percent: round((100 * bytes) / total, 1) }));
}

export async function coldStartSuite(options: {
  runs: number;
  workDir: string;
  /** How each child is started (inside a CPU group: bench/lib/cgroup.ts); as it is when absent. */
  launch?: Launch;
  /**
   * The HSM behind the fault-injecting module with these rules (a network distance: suite 7), for
   * the bundles and the floors alike; SoftHSM as it is when absent.
   */
  hsmRules?: string[];
}): Promise<ColdStartResults> {
  const fault = options.hsmRules ? faultBenchSetup(options.workDir) : undefined;
  fault?.control.set(options.hsmRules ?? []);
  const setup = fault?.setup ?? benchSetup();
  try {
    const task = join(options.workDir, 'task');
    const bundles = await buildFunctions(task);
    // The layer's layout: /opt/nodejs/node_modules/pkcs11js, and the HSM worker thread's bundle.
    const layer = join(options.workDir, 'opt/nodejs/node_modules');
    mkdirSync(layer, { recursive: true });
    symlinkSync(join(ROOT, 'node_modules/pkcs11js'), join(layer, 'pkcs11js'));
    const worker = join(options.workDir, 'opt/nodejs/hsm-worker.mjs');
    await buildHsmWorker(worker);
    const env = {
      PATH: process.env.PATH,
      ...LAMBDA_ENV,
      NODE_PATH: layer,
      XKS_HSM_WORKER: worker,
      XKS_PROXY_CONFIG: setup.configFile,
      SOFTHSM2_CONF: setup.softhsmConf,
      ...fault?.control.env(),
    };
    const event = (route: string, body: unknown) =>
      signedEvent({ path: xksPath(route), body, credential: setup.credential, base64: true });

    const runBundle = async (name: string, e: unknown, nodeArgs: string[] = []) => {
      const eventFile = join(options.workDir, `${name}-event.json`);
      writeFileSync(eventFile, JSON.stringify(e));
      const script = [
        'const t0 = performance.now();',
        `const { handler } = await import(${JSON.stringify(join(task, name, 'index.mjs'))});`,
        'const t1 = performance.now();',
        // Not `import('node:fs')`: Node's ES module wrapper of node:fs loads fs/promises and readline,
        // which this script would pay for inside the first invocation's time.
        "const { readFileSync } = process.getBuiltinModule('node:fs');",
        `const event = JSON.parse(readFileSync(${JSON.stringify(eventFile)}, 'utf8'));`,
        "const context = { functionName: 'xks-bench', awsRequestId: 'cold', getRemainingTimeInMillis: () => 3000 };",
        'const result = await handler(event, context);',
        'const t2 = performance.now();',
        // The cold start ends here; the warm calls below (and the HSM worker's start after the first
        // response) are timed apart.
        "process.stderr.write('FIRST\\n');",
        'const warm = [];',
        'for (let i = 0; i < 5; i++) { const s = performance.now(); await handler(event, context); warm.push(performance.now() - s); }',
        'const warmMs = warm.sort((a, b) => a - b)[2];',
        "process.stderr.write('RESULT ' + JSON.stringify({ t0, t1, t2, warmMs, result }) + '\\n');",
      ].join('\n');
      const { totalMs, line, exited } = await timeChild(
        script,
        env,
        options.workDir,
        nodeArgs,
        options.launch,
      );
      await exited;
      const parsed = JSON.parse(line) as {
        t0: number;
        t1: number;
        t2: number;
        warmMs: number;
        result: { statusCode: number; body: string };
      };
      if (parsed.result.statusCode !== 200) {
        throw new Error(`${name}: ${parsed.result.statusCode} ${parsed.result.body}`);
      }
      return { totalMs, ...parsed };
    };

    const small = encryptBody(32);
    // A real ciphertext for the Decrypt bundle: from the Encrypt bundle itself.
    const first = await runBundle('encrypt', await event('keys/foo/encrypt', small));
    const ciphertext = JSON.parse(first.result.body) as EncryptResponse;
    const events: Record<(typeof FUNCTIONS)[number], unknown> = {
      getHealthStatus: await event('health', healthBody()),
      getKeyMetadata: await event('keys/foo/metadata', metadataBody()),
      encrypt: await event('keys/foo/encrypt', small),
      decrypt: await event('keys/foo/decrypt', decryptBody(ciphertext, undefined)),
    };

    const floors = { node: [] as number[], hsm: [] as number[] };
    const hsmScript = [
      "const { createRequire } = await import('node:module');",
      "const P = createRequire(import.meta.url)('pkcs11js');",
      'const c = JSON.parse(process.env.BENCH_HSM);',
      'const lib = new P.PKCS11(); lib.load(c.modulePath);',
      'lib.C_Initialize({ flags: P.CKF_OS_LOCKING_OK });',
      "const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.replace(/[\\s\\0]+$/, '') === c.tokenLabel);",
      'const session = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION);',
      'lib.C_Login(session, P.CKU_USER, c.pin);',
      "lib.C_FindObjectsInit(session, [{ type: P.CKA_CLASS, value: P.CKO_SECRET_KEY }, { type: P.CKA_LABEL, value: 'foo' }]);",
      'const [key] = lib.C_FindObjects(session, 1); lib.C_FindObjectsFinal(session);',
      'const iv = lib.C_GenerateRandom(session, Buffer.alloc(12));',
      'lib.C_EncryptInit(session, { mechanism: P.CKM_AES_GCM, parameter: { type: P.CK_PARAMS_AES_GCM, iv, ivBits: 96, aad: Buffer.from([0, 0, 1, 1]), tagBits: 128 } }, key);',
      'lib.C_Encrypt(session, Buffer.alloc(32), Buffer.alloc(48));',
      "process.stderr.write('RESULT {}\\n');",
    ].join('\n');
    const hsmEnv = {
      ...env,
      BENCH_HSM: JSON.stringify({
        modulePath: setup.config.hsm.modulePath,
        tokenLabel: setup.config.hsm.tokenLabel,
        pin: setup.config.hsm.pin,
      }),
    };
    const rows: ColdStartRow[] = [];
    const runs = new Map<string, Array<Awaited<ReturnType<typeof runBundle>>>>(FUNCTIONS.map((n) => [n, []]));
    // Interleaved: run r of every bundle (and of the floors) before run r + 1 of any.
    // Each process is waited for to its exit before the next starts: one still exiting would take
    // CPU from the next one's start.
    const floor = async (script: string, scriptEnv: NodeJS.ProcessEnv) => {
      const times = await timeChild(script, scriptEnv, options.workDir, [], options.launch);
      await times.exited;
      return times.totalMs;
    };
    for (let r = 0; r < options.runs; r++) {
      floors.node.push(await floor("process.stderr.write('RESULT {}\\n');", env));
      floors.hsm.push(await floor(hsmScript, hsmEnv));
      for (const name of FUNCTIONS) runs.get(name)?.push(await runBundle(name, events[name]));
    }
    const hsmFloorMs = round(median(floors.hsm), 1);
    for (const name of FUNCTIONS) {
      const list = runs.get(name) ?? [];
      const bundle = bundles[name];
      const bytes = bundle?.bytes ?? 0;
      const medianMs = round(median(list.map((x) => x.totalMs)), 1);
      rows.push({
        name,
        bundleBytes: bytes,
        lazyBytes: bundle?.lazyBytes ?? 0,
        runsMs: list.map((x) => round(x.totalMs, 1)),
        medianMs,
        breakdownMs: {
          bootstrap: round(median(list.map((x) => x.t0)), 1),
          importInit: round(median(list.map((x) => x.t1 - x.t0)), 1),
          firstInvoke: round(median(list.map((x) => x.t2 - x.t1)), 1),
          warmInvoke: round(median(list.map((x) => x.warmMs)), 2),
        },
        composition: bundle ? composition(bundle) : [],
        targetRatio: TARGET_RATIO,
        targetBytes: TARGET_BYTES,
        passTime: medianMs <= TARGET_RATIO * hsmFloorMs,
        passSize: bytes < TARGET_BYTES,
      });
    }
    // One more Encrypt cold start, under the CPU profiler (not timed: the profiler slows it down).
    const profDir = join(options.workDir, 'cold-profile');
    await runBundle('encrypt', events.encrypt, [
      '--cpu-prof',
      '--cpu-prof-interval',
      '100',
      '--cpu-prof-dir',
      profDir,
    ]);
    const profFile = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    return {
      runs: options.runs,
      initProfile:
        profFile === undefined
          ? []
          : initProfile(join(profDir, profFile), join(task, 'encrypt', 'index.mjs')),
      nodeFloorMs: round(median(floors.node), 1),
      hsmFloorMs,
      hsmFloorRunsMs: floors.hsm.map((v) => round(v, 1)),
      rows,
    };
  } finally {
    removeSetup(setup);
  }
}
