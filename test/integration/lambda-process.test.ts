// What the function does to its own process in Lambda, where it serves one request at a time,
// checked in a fresh process running the Encrypt handler as Lambda does, through the fault module:
// - with gc() (node --expose-gc, as serverless.yml sets NODE_OPTIONS), it collects its young
//   generation while a request waits for the HSM, here 2 ms away (functions/young-gc.ts), so that
//   no scavenge pauses a request after the HSM has answered: each V8 collection of its main thread
//   observed (node:perf_hooks 'gc' entries, whose flags tell a forced one);
// - after its first response, V8's background threads run at the lowest priority
//   (functions/background-threads.ts), the request's thread and the HSM's worker thread at theirs.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { COUNT_WORKERS } from '../helpers/count-workers.ts';
import { signedEvent } from '../helpers/events.ts';
import { buildFaultModule, faultHsmInThisProcess } from '../helpers/fault-hsm.ts';
import { metadata, PREFIX, ROOT } from '../helpers/proxy.ts';

const { setup, control, dir } = faultHsmInThisProcess('xks-lambda-process');
const modulePath = buildFaultModule();
const REQUESTS = 400;
/** Requests before the ones counted: the young generation grows to its size meanwhile. */
const WARMUP = 50;

interface Report {
  statuses: number[];
  /** Worker threads started: the HSM's, which takes the calls after the first response. */
  workers: number;
  /** Minor collections (scavenges) in the counted requests' time: forced ones, and the others. */
  forced: number;
  unforced: number;
  /** The nice value of each of the process's threads at the end, by thread name (/proc). */
  nice: Record<string, number[]>;
}

/** REQUESTS Encrypt requests, one at a time, through the Lambda handler in a fresh process. */
async function run(nodeArgs: string[]): Promise<Report> {
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify({ ...setup.config, hsm: { ...setup.config.hsm, modulePath } }));
  const event = await signedEvent({
    path: `${PREFIX}/kms/xks/v1/keys/foo/encrypt`,
    body: {
      requestMetadata: metadata('Encrypt'),
      plaintext: Buffer.from('young generation').toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
    },
    credential: setup.credentials[0] as NonNullable<Parameters<typeof signedEvent>[0]['credential']>,
  });
  const script = [
    "import { PerformanceObserver, constants } from 'node:perf_hooks';",
    "import { setImmediate } from 'node:timers/promises';",
    `import { threadsOfThisProcess } from ${JSON.stringify(join(ROOT, 'test/helpers/threads.ts'))};`,
    ...COUNT_WORKERS,
    'const scavenges = [];',
    'new PerformanceObserver((list) => {',
    '  for (const e of list.getEntries()) if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR)',
    '    scavenges.push({ at: e.startTime, forced: (e.detail.flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) !== 0 });',
    "}).observe({ entryTypes: ['gc'] });",
    `const { handler } = await import(${JSON.stringify(join(ROOT, 'functions/encrypt.ts'))});`,
    'const event = JSON.parse(process.env.TEST_EVENT);',
    "const context = { functionName: 'xks-test', awsRequestId: 'r', getRemainingTimeInMillis: () => 3000 };",
    'const statuses = [];',
    'let from = 0;',
    `for (let i = 0; i < ${REQUESTS}; i++) {`,
    `  if (i === ${WARMUP}) from = performance.now();`,
    // Between invocations the event loop turns, as in Lambda: the HSM worker starts after the
    // first response and takes the calls from then on (functions/runtime.ts).
    '  await setImmediate();',
    '  statuses.push((await handler(event, context)).statusCode);',
    '}',
    // The observer's entries come after the loop's last await.
    'await new Promise((resolve) => setTimeout(resolve, 50));',
    'const counted = scavenges.filter((s) => s.at >= from);',
    'const forced = counted.filter((s) => s.forced).length;',
    'const nice = {};',
    'for (const thread of threadsOfThisProcess()) (nice[thread.name] ??= []).push(thread.nice);',
    "process.stderr.write('REPORT ' + JSON.stringify({ statuses, workers, forced, unforced: counted.length - forced, nice }) + '\\n');",
    'process.exit(0);',
  ].join('\n');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, '--input-type=module', '-e', script], {
      env: {
        ...process.env,
        // Lambda's (functions/aws.ts): a function, one request at a time.
        AWS_LAMBDA_FUNCTION_NAME: 'xks-test',
        AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
        XKS_PROXY_CONFIG: configFile,
        TEST_EVENT: JSON.stringify(event),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let output = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stderr.on('data', (data: Buffer) => {
      output += data.toString();
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      const line = output.split('\n').find((l) => l.startsWith('REPORT '));
      if (line !== undefined) resolve(JSON.parse(line.slice('REPORT '.length)));
      else reject(new Error(`the child ended with ${code} and no report:\n${output}`));
    });
  });
}

test('with gc() and the HSM a network distance away, every scavenge is made during an HSM call', async () => {
  control.set(['* delay 2 jitter=0.5']);
  try {
    const { statuses, workers, forced, unforced } = await run(['--expose-gc']);
    assert.deepEqual(new Set(statuses), new Set([200]));
    assert.equal(workers, 1, 'the HSM worker thread took the calls');
    // About 60 KB of garbage per request: the young generation (1-8 MB) fills several times.
    assert.ok(forced >= 2, `${forced} collections during HSM calls`);
    assert.equal(unforced, 0, `${unforced} scavenges came when the young generation was full`);
  } finally {
    control.clear();
  }
});

test('without gc(), the young generation is collected when full, as V8 does by itself', async () => {
  control.set(['* delay 2 jitter=0.5']);
  try {
    const { statuses, forced, unforced } = await run([]);
    assert.deepEqual(new Set(statuses), new Set([200]));
    assert.equal(forced, 0);
    assert.ok(unforced >= 2, `${unforced} scavenges`);
  } finally {
    control.clear();
  }
});

test('after its first response, V8 background threads have the lowest priority, the others their own', {
  skip: process.platform !== 'linux' && 'needs /proc',
}, async () => {
  const { statuses, workers, nice } = await run([]);
  assert.deepEqual(new Set(statuses), new Set([200]));
  assert.equal(workers, 1);
  // The child's threads start at this process's priority; Node names them (/proc/<tid>/comm).
  const own = getPriority();
  assert.ok((nice.V8Worker ?? []).length >= 1, `threads: ${JSON.stringify(nice)}`);
  assert.deepEqual(new Set(nice.V8Worker), new Set([19]));
  assert.deepEqual(nice.MainThread, [own], "the requests' thread");
  assert.deepEqual(nice.WorkerThread, [own], "the HSM's worker thread");
});
