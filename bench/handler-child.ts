// Suite 1, the measuring process: each route's Lambda handler called in-process with signed API
// Gateway events, beside the bare PKCS#11 calls the request needs, alternating in rounds so that the
// machine's noise hits both alike. Production configuration: SigV4, validation, Powertools logging
// and metrics all on; the parent points this process's stdout (where the logs and EMF metrics go)
// at a file. Results go to --out as JSON.
//
//   XKS_PROXY_CONFIG=... SOFTHSM2_CONF=... node bench/handler-child.ts --out r.json
//     [--iterations 5000] [--warmup 500] [--rounds 10] [--only encrypt-32] [--no-bare] [--samples]
//
// --samples: each timed handler call's time too, in order, with how many handler calls came before
// the first (to pair each with its log line: bench/lib/proxy-share.ts), and which of them a garbage
// collection pause fell into (node:perf_hooks 'gc' entries): one of V8's own, or one the proxy made
// while the request waited for the HSM (forced: functions/young-gc.ts).
// --gap-ms N: N ms of idle time before each timed handler call (outside the timed window), as a
// Lambda environment idles between requests and while an HSM call is on the network.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { constants, PerformanceObserver, performance } from 'node:perf_hooks';
import { setImmediate } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import type { ProxyConfig } from '../functions/config.ts';
import { lambdaContext, signedEvent } from '../test/helpers/events.ts';
import type { Credential } from '../test/helpers/sign.ts';
import { BareHsm, specAad } from './lib/bare-hsm.ts';
import {
  decryptBody,
  type EncryptResponse,
  encryptBody,
  healthBody,
  MAX_AAD,
  MAX_DATA,
  metadataBody,
  xksPath,
} from './lib/requests.ts';
import { cdfPoints, round, roundSummary, sleep, summarize } from './lib/util.ts';
import type { HandlerMeasurement, HandlerSamples } from './suites/handler.ts';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string' },
    iterations: { type: 'string', default: '5000' },
    warmup: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '10' },
    only: { type: 'string' },
    bare: { type: 'boolean', default: true },
    samples: { type: 'boolean', default: false },
    'gap-ms': { type: 'string', default: '0' },
  },
  allowNegative: true,
});
const iterations = Number(args.iterations);
const warmup = Number(args.warmup);
const rounds = Math.max(1, Math.min(Number(args.rounds), iterations));
const gapMs = Number(args['gap-ms']);

type Handler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;
const load = async (name: string) => (await import(`../functions/${name}.ts`)).handler as Handler;
const handlers = {
  health: await load('getHealthStatus'),
  metadata: await load('getKeyMetadata'),
  encrypt: await load('encrypt'),
  decrypt: await load('decrypt'),
};

const config = JSON.parse(readFileSync(process.env.XKS_PROXY_CONFIG as string, 'utf8')) as ProxyConfig;
const credential = config.keystores[0]?.credentials?.[0] as Credential;
const event = (route: string, body: unknown) =>
  // Base64, as API Gateway delivers bodies with binaryMediaTypes */* (the deployed API).
  signedEvent({ path: xksPath(route), body, credential, base64: true });

/**
 * What Lambda's runtime does between two invocations (it asks the Runtime API for the next event):
 * the event loop turns. What the function left for it after a response then runs, as in a Lambda
 * environment: the HSM worker thread's start after the first (functions/runtime.ts). Without it,
 * a loop of invocations whose HSM calls all answer on this thread (an on-demand start's first
 * calls) would never let the worker start, and would measure a function that never uses it.
 */
const nextInvocation = () => setImmediate();

/** Handler calls made so far: each writes one request line to stdout. */
let calls = 0;
const call = async (handler: Handler, e: APIGatewayProxyEvent, context: Context) => {
  calls++;
  const result = await handler(e, context);
  if (result.statusCode !== 200) throw new Error(`${result.statusCode} ${result.body}`);
  return result;
};

const small = encryptBody(32);
const large = encryptBody(MAX_DATA, MAX_AAD);
const context: Context = { ...lambdaContext('xks-bench'), memoryLimitInMB: '1024' };
const encrypted = async (body: typeof small) =>
  JSON.parse(
    (await call(handlers.encrypt, await event('keys/foo/encrypt', body), context)).body,
  ) as EncryptResponse;
const smallCt = await encrypted(small);
const largeCt = await encrypted(large);

const hsm = new BareHsm({
  modulePath: config.hsm.modulePath,
  tokenLabel: config.hsm.tokenLabel,
  pin: config.hsm.pin as string,
  keyLabel: 'foo',
});
const b64 = (s: string | undefined) => (s === undefined ? Buffer.alloc(0) : Buffer.from(s, 'base64'));
const bareEncrypt = (body: typeof small) => {
  const plaintext = b64(body.plaintext);
  const aad = specAad(b64(body.additionalAuthenticatedData));
  return () => hsm.encrypt(plaintext, aad);
};
const bareDecrypt = (body: typeof small) => {
  const aad = specAad(b64(body.additionalAuthenticatedData));
  const { iv, data } = hsm.encrypt(b64(body.plaintext), aad);
  return () => hsm.decrypt(iv, data, aad);
};

interface Variant {
  id: string;
  name: string;
  handler: Handler;
  event: APIGatewayProxyEvent;
  /** The PKCS#11 calls this request needs, and what they are. */
  bare?: () => unknown;
  bareName?: string;
}

const variants: Variant[] = [
  {
    id: 'health',
    name: 'GetHealthStatus',
    handler: handlers.health,
    event: await event('health', healthBody()),
  },
  {
    id: 'metadata',
    name: 'GetKeyMetadata',
    handler: handlers.metadata,
    event: await event('keys/foo/metadata', metadataBody()),
    bare: () => hsm.attributes(),
    bareName: 'C_GetAttributeValue (9 attributes)',
  },
  {
    id: 'encrypt-32',
    name: 'Encrypt 32 B',
    handler: handlers.encrypt,
    event: await event('keys/foo/encrypt', small),
    bare: bareEncrypt(small),
    bareName: 'C_GenerateRandom + C_EncryptInit + C_Encrypt',
  },
  {
    id: 'encrypt-max',
    name: 'Encrypt 4300 B + 8 KiB AAD',
    handler: handlers.encrypt,
    event: await event('keys/foo/encrypt', large),
    bare: bareEncrypt(large),
    bareName: 'C_GenerateRandom + C_EncryptInit + C_Encrypt',
  },
  {
    id: 'decrypt-32',
    name: 'Decrypt 32 B',
    handler: handlers.decrypt,
    event: await event('keys/foo/decrypt', decryptBody(smallCt, undefined)),
    bare: bareDecrypt(small),
    bareName: 'C_DecryptInit + C_Decrypt',
  },
  {
    id: 'decrypt-max',
    name: 'Decrypt 4300 B + 8 KiB AAD',
    handler: handlers.decrypt,
    event: await event('keys/foo/decrypt', decryptBody(largeCt, large.additionalAuthenticatedData)),
    bare: bareDecrypt(large),
    bareName: 'C_DecryptInit + C_Decrypt',
  },
].filter((v) => args.only === undefined || v.id === args.only);
if (variants.length === 0) throw new Error(`no variant ${args.only}`);

/**
 * Garbage collection pauses of this thread: start and end, performance.now() ms. Apart: the
 * collections the proxy forces while a request waits for the HSM (functions/young-gc.ts).
 */
const gcPauses: Array<[number, number]> = [];
const forcedPauses: Array<[number, number]> = [];
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const { flags } = (e as unknown as { detail: { flags: number } }).detail;
    const forced = flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED;
    (forced ? forcedPauses : gcPauses).push([e.startTime, e.startTime + e.duration]);
  }
});
if (args.samples) gcObserver.observe({ entryTypes: ['gc'] });

const results: Array<HandlerMeasurement & { samples?: HandlerSamples }> = [];
/** Per result: its timed calls' start and end (performance.now() ms), for the GC pauses. */
const spansOf: Array<Array<[number, number]>> = [];
// For the CPU profile: the measured loop's start and end on the monotonic clock V8's profiler uses.
const loop = { startUs: Number(process.hrtime.bigint() / 1000n), endUs: 0 };
for (const v of variants) {
  const withBare = args.bare && v.bare !== undefined;
  for (let i = 0; i < warmup; i++) {
    await nextInvocation();
    await call(v.handler, v.event, context);
    if (withBare) v.bare?.();
  }
  const handlerUs: number[] = [];
  const spans: Array<[number, number]> = [];
  const bareUs: number[] = [];
  const firstCall = calls;
  const perRound = Math.ceil(iterations / rounds);
  for (let r = 0; r < rounds; r++) {
    if (withBare && v.bare) {
      const bare = v.bare;
      for (let i = 0; i < perRound; i++) {
        const start = performance.now();
        bare();
        bareUs.push((performance.now() - start) * 1000);
      }
    }
    for (let i = 0; i < perRound; i++) {
      if (gapMs > 0) await sleep(gapMs);
      await nextInvocation();
      const start = performance.now();
      await call(v.handler, v.event, context);
      const end = performance.now();
      handlerUs.push((end - start) * 1000);
      if (args.samples) spans.push([start, end]);
    }
  }
  results.push({
    id: v.id,
    name: v.name,
    bareName: withBare ? v.bareName : undefined,
    handler: roundSummary(summarize(handlerUs)),
    bare: withBare ? roundSummary(summarize(bareUs)) : undefined,
    handlerCdf: cdfPoints(handlerUs, 200).map(([x, q]) => [round(x, 2), q]),
    bareCdf: withBare ? cdfPoints(bareUs, 200).map(([x, q]) => [round(x, 2), q]) : undefined,
    ...(args.samples
      ? { samples: { firstCall, us: handlerUs.map((v) => round(v, 2)), gc: [], forcedGc: [] } }
      : {}),
  });
  spansOf.push(spans);
}
if (args.samples) {
  // The observer is called asynchronously: let it see the loop's last pauses.
  await sleep(20);
  gcObserver.disconnect();
  /** The spans (indices) that one of `pauses` overlaps. */
  const within = (pauses: Array<[number, number]>, spans: Array<[number, number]>) =>
    spans.flatMap(([start, end], i) => (pauses.some(([s, e]) => s < end && e > start) ? [i] : []));
  results.forEach((r, k) => {
    if (r.samples) {
      r.samples.gc = within(gcPauses, spansOf[k] ?? []);
      r.samples.forcedGc = within(forcedPauses, spansOf[k] ?? []);
    }
  });
}
loop.endUs = Number(process.hrtime.bigint() / 1000n);

// Diagnostic, not timed: the process.env reads one request makes (a read costs ~0.2-0.3 µs in Node,
// and libraries can make many per request).
const envReads: Record<string, Record<string, number>> = {};
const realEnv = process.env;
let counts = new Map<string, number>();
process.env = new Proxy(realEnv, {
  get(target, key) {
    if (typeof key === 'string') counts.set(key, (counts.get(key) ?? 0) + 1);
    return Reflect.get(target, key);
  },
});
try {
  for (const v of variants) {
    counts = new Map();
    const n = 20;
    for (let i = 0; i < n; i++) {
      await nextInvocation();
      await call(v.handler, v.event, context);
    }
    envReads[v.id] = Object.fromEntries([...counts].map(([key, count]) => [key, count / n]));
  }
} finally {
  process.env = realEnv;
}
hsm.close();

// Diagnostic: what any implementation must do with the largest Encrypt's bytes, whatever its
// framework: the API Gateway body from Base64, SHA-256 over it (SigV4), JSON.parse, the data fields
// from Base64 with the canonical check, the ciphertext to Base64 and the response to JSON. Minimum
// of 20 batches (the machine is shared), in µs.
const dataFloor = (() => {
  const largeEvent = variants.find((v) => v.id === 'encrypt-max')?.event;
  if (largeEvent === undefined) return undefined;
  const raw = Buffer.from(largeEvent.body ?? '', 'base64');
  const parsed = JSON.parse(raw.toString('utf8')) as Record<string, string>;
  const ciphertext = Buffer.from(parsed.plaintext ?? '', 'base64');
  const response = {
    ciphertext: ciphertext.toString('base64'),
    ciphertextMetadata: 'AQ==',
    initializationVector: 'AAAAAAAAAAAAAAAA',
    authenticationTag: 'AAAAAAAAAAAAAAAAAAAAAA==',
  };
  const time = (fn: () => unknown) => {
    for (let i = 0; i < 200; i++) fn();
    let best = Number.POSITIVE_INFINITY;
    for (let b = 0; b < 20; b++) {
      const start = performance.now();
      for (let i = 0; i < 200; i++) fn();
      best = Math.min(best, ((performance.now() - start) * 1000) / 200);
    }
    return round(best, 2);
  };
  const canonical = (s: string) => {
    const bytes = Buffer.from(s, 'base64');
    if (bytes.toString('base64') !== s) throw new Error('not canonical');
    return bytes;
  };
  const steps: Record<string, number> = {
    'event body from Base64': time(() => Buffer.from(largeEvent.body ?? '', 'base64')),
    'SHA-256 of the body (SigV4)': time(() => createHash('sha256').update(raw).digest('hex')),
    'JSON.parse of the body': time(() => JSON.parse(raw.toString('utf8'))),
    'plaintext and AAD from Base64 (canonical check)': time(() => {
      canonical(parsed.plaintext ?? '');
      canonical(parsed.additionalAuthenticatedData ?? '');
    }),
    'ciphertext to Base64': time(() => ciphertext.toString('base64')),
    'JSON.stringify of the response': time(() => JSON.stringify(response)),
  };
  const totalUs = round(
    Object.values(steps).reduce((n, us) => n + us, 0),
    2,
  );
  return { bodyBytes: raw.length, steps, totalUs };
})();

const out = { node: process.version, iterations, warmup, rounds, loop, results, envReads, dataFloor };
if (args.out) writeFileSync(args.out, JSON.stringify(out));
else process.stderr.write(`${JSON.stringify(out, null, 2)}\n`);
