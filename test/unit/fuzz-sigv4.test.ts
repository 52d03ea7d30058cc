// Property-based tests (fast-check) of the SigV4 verifier (functions/sigv4.ts; spec: Authentication,
// Appendix A). The oracles do not use the verifier's own code: real signers (@smithy/signature-v4,
// aws4) say what a valid signature is, and each single mutation of a signed request is classified by
// the SigV4 canonicalization rules, neutral (accepted, same identity) or not (401). Path mutations are
// also re-signed by the same real signer, to check the classification itself.
//
// CI: FUZZ_RUNS cases per property (default 300), fixed seed. Long runs and replays:
//   FUZZ_RUNS=100000 node --test test/unit/fuzz-sigv4.test.ts      (or scripts/fuzz.sh sigv4 100000)
//   FUZZ_SEED=<seed> FUZZ_PATH=<path> node --test-name-pattern='<property>' test/unit/fuzz-sigv4.test.ts
// (FUZZ_SEED=random: a new seed each run; a failure prints the seed and path to replay it.)
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import aws4 from 'aws4';
import fc from 'fast-check';
import { XksError } from '../../functions/errors.ts';
import { type SignedRequest, type Verified, type VerifyOptions, verifySigV4 } from '../../functions/sigv4.ts';
import { fuzzParameters, positiveInt, SEED } from '../helpers/fuzz.ts';
import {
  aws4Sign,
  CRED_A,
  CRED_B,
  type Credential,
  OTHER_SECRET,
  smithySign,
  toAmzDate,
} from '../helpers/sign.ts';

// ---------------------------------------------------------------------------------------------
// Run configuration

const RUNS = positiveInt(process.env.FUZZ_RUNS) ?? 300;
const FILE = 'test/unit/fuzz-sigv4.test.ts';
/**
 * Not a performance target (a verification takes ~10 µs) but a guard against hostile input that
 * makes the verifier's work grow faster than the input (backtracking, quadratic scans): such input
 * would cost a large share of KMS's 250 ms budget. The min of 3 tries, so that a GC pause is not a
 * failure.
 */
const MAX_VERIFY_MS = 50;

function params<T>(name: string, numRuns = RUNS): fc.Parameters<T> {
  return fuzzParameters(FILE, name, numRuns, redact);
}

/** Counterexamples in the report: long strings and buffers shortened; never a secret (none is generated). */
function redact(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (_key === 'secretAccessKey') return '<secret>';
    if (typeof v === 'string' && v.length > 120) return `${v.slice(0, 60)}...(${v.length} chars)`;
    if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer') {
      const data = (v as { data: number[] }).data;
      return `<${data.length} bytes: ${Buffer.from(data.slice(0, 24)).toString('hex')}...>`;
    }
    return v;
  });
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const SERVICE = 'kms-xks-proxy';
const MINUTE = 60_000;
const SKEW = 5 * MINUTE; // spec (Authentication): 5 minutes either way
const SECRETS = [CRED_A.secretAccessKey, CRED_B.secretAccessKey, OTHER_SECRET];
const KNOWN = new Map([CRED_A, CRED_B].map((c) => [c.accessKeyId, c.secretAccessKey]));
const REGIONS = ['us-east-1', 'us-west-2', 'eu-west-1', 'ap-southeast-2', 'cn-north-1', 'us-gov-west-1'];

type HeaderList = Array<[string, string[]]>;

/** A request as it reaches the verifier, with headers kept in order (case variants may repeat). */
interface Wire {
  method: string;
  path: string;
  query: Array<[string, string]>;
  headers: HeaderList;
  body: Buffer;
}

function toSigned(wire: Wire): SignedRequest {
  // Own properties only: 'constructor' or 'toString' are header names too (RFC 9110 tokens).
  const headers: Record<string, string[]> = {};
  for (const [name, values] of wire.headers) {
    const before = Object.hasOwn(headers, name) ? (headers[name] as string[]) : [];
    Object.defineProperty(headers, name, {
      value: [...before, ...values],
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return { method: wire.method, path: wire.path, query: wire.query, headers, body: wire.body };
}

type Outcome = { ok: true; verified: Verified } | { ok: false; error: unknown };

/** Verifies, timing it; a slow try is repeated (twice at most) so that one GC pause does not count. */
function verify(request: SignedRequest, options: VerifyOptions): Outcome {
  let best = Number.POSITIVE_INFINITY;
  let outcome: Outcome | undefined;
  for (let attempt = 0; attempt < 3 && best > MAX_VERIFY_MS; attempt++) {
    const started = performance.now();
    try {
      outcome = { ok: true, verified: verifySigV4(request, options) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    best = Math.min(best, performance.now() - started);
  }
  assert.ok(best <= MAX_VERIFY_MS, `verification took ${best.toFixed(1)} ms (limit ${MAX_VERIFY_MS})`);
  return outcome as Outcome;
}

function assertAccepted(outcome: Outcome, expected: Verified, why: string): void {
  if (!outcome.ok) {
    const message = outcome.error instanceof Error ? outcome.error.message : String(outcome.error);
    assert.fail(`expected acceptance (${why}), got: ${message}`);
  }
  assert.deepEqual(outcome.verified, expected, why);
}

/** Rejected the module's way only: XksError AuthenticationFailedException (401), nothing secret said. */
function assertRejected(outcome: Outcome, why: string, hidden: readonly string[] = []): void {
  assert.ok(!outcome.ok, `expected rejection (${why}), but the request was accepted`);
  const { error } = outcome;
  assert.ok(error instanceof XksError, `expected an XksError (${why}), got ${String(error)}`);
  assert.equal(error.errorName, 'AuthenticationFailedException', why);
  assert.equal(error.statusCode, 401, why);
  for (const secret of [...SECRETS, ...hidden]) {
    assert.ok(!error.message.includes(secret), `the error message gives a secret or signature away (${why})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const ALNUM = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'];
// RFC 3986 pchar punctuation (unreserved, sub-delims, ':' '@') plus '%' and space, as clients may send.
const PUNCT = [..."-._~!$&'()*+,;=:@% "];
const segmentChar = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...ALNUM) },
  { weight: 2, arbitrary: fc.constantFrom(...PUNCT) },
  {
    weight: 1,
    arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }).filter((c) => !/[/?#]/.test(c)),
  },
);
/** A path segment that normalization keeps (not empty, not '.' or '..'). */
const regularSegment = fc
  .string({ unit: segmentChar, minLength: 1, maxLength: 10 })
  .filter((s) => s !== '.' && s !== '..');

/** A normalized path: no empty or dot segments; an XKS route or arbitrary segments. */
const normalPath = fc.oneof(
  fc
    .tuple(
      fc.array(regularSegment, { maxLength: 3 }),
      fc.constantFrom('health', 'keys/foo/metadata', 'keys/foo/encrypt', 'keys/a.b-c_d/decrypt'),
    )
    .map(([prefix, route]) => `${prefix.map((s) => `/${s}`).join('')}/kms/xks/v1/${route}`),
  fc
    .tuple(fc.array(regularSegment, { minLength: 1, maxLength: 6 }), fc.boolean())
    .map(([segments, trailing]) => `/${segments.join('/')}${trailing ? '/' : ''}`),
);

/** Any path a client may send: also empty, '.' and '..' segments (normalized by every SigV4 signer). */
const rawPath = fc
  .tuple(
    fc.array(fc.oneof({ weight: 5, arbitrary: regularSegment }, fc.constantFrom('', '.', '..')), {
      minLength: 1,
      maxLength: 8,
    }),
    fc.boolean(),
  )
  .map(([segments, trailing]) => `/${segments.join('/')}${trailing ? '/' : ''}`);

const RESERVED_HEADERS = new Set([
  'host',
  'authorization',
  'content-type',
  'content-length',
  'connection',
  'expect',
  'user-agent',
  'range',
  'presigned-expires',
  'x-amzn-trace-id',
  'cache-control',
  'from',
  'keep-alive',
  'max-forwards',
  'pragma',
  'referer',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'x-list',
  'x-words',
]);
/** Lower-case header names (RFC 9110 tokens), none that a signer treats specially. */
const headerName = fc
  .oneof(
    fc.stringMatching(/^x-[a-z0-9][a-z0-9-]{0,14}$/),
    fc.stringMatching(/^[a-z0-9!#$%&'*+.^_`|~-]{1,16}$/),
  )
  .filter(
    (n) =>
      !RESERVED_HEADERS.has(n) &&
      !n.startsWith('x-amz') &&
      !n.startsWith('x-unsigned') &&
      !n.startsWith('proxy-') &&
      !n.startsWith('sec-'),
  );
const HEX = fc.constantFrom(...'0123456789abcdef');
const VISIBLE = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i));
const TOKEN = fc.string({
  unit: fc.constantFrom(...VISIBLE.filter((c) => c !== ',')),
  minLength: 1,
  maxLength: 8,
});
/** Header values: visible ASCII with single spaces inside (every signer agrees on their canonical form). */
const headerValue = fc.array(TOKEN, { minLength: 1, maxLength: 4 }).map((words) => words.join(' '));

interface Spec {
  signer: 'smithy' | 'smithy-kms' | 'aws4';
  host: string;
  path: string;
  region: string;
  credential: Credential;
  date: Date;
  /** Extra signed headers; x-list (commas) and x-words (spaces) are always there, for the mutations. */
  extra: Record<string, string>;
  body: Buffer;
}

const spec = (path: fc.Arbitrary<string>): fc.Arbitrary<Spec> =>
  fc.record({
    signer: fc.constantFrom('smithy', 'smithy-kms', 'aws4'),
    host: fc.oneof(
      fc.constantFrom('xks.example.com', '127.0.0.1:8443', 'xks-proxy.internal:443'),
      fc
        .tuple(fc.domain(), fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }))
        .map(([domain, port]) => (port === undefined ? domain : `${domain}:${port}`)),
    ),
    path,
    region: fc.oneof(fc.constantFrom(...REGIONS), fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,19}$/)),
    credential: fc.constantFrom(CRED_A, CRED_B),
    date: fc.date({
      min: new Date('2000-01-01T00:00:00Z'),
      max: new Date('2099-12-31T23:59:59Z'),
      noInvalidDate: true,
    }),
    extra: fc
      .tuple(
        fc.dictionary(headerName, headerValue, { maxKeys: 3 }),
        fc.array(TOKEN, { minLength: 2, maxLength: 4 }),
        fc.array(TOKEN, { minLength: 2, maxLength: 4 }),
      )
      .map(([extra, list, words]) => ({ ...extra, 'x-list': list.join(','), 'x-words': words.join(' ') })),
    body: fc.oneof(
      fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)),
      fc.json().map((j) => Buffer.from(j)),
    ),
  });

interface SignedCase {
  spec: Spec;
  wire: Wire;
  /** What the verifier must return for the unmutated request. */
  expected: Verified;
  signedHeaders: string[];
  signature: string;
  /** The X-Amz-Date time, whole seconds. */
  signedAt: number;
}

async function sign(s: Spec, service = SERVICE): Promise<Record<string, string>> {
  const common = {
    service,
    host: s.host,
    path: s.path,
    body: s.body,
    credential: s.credential,
    region: s.region,
    date: s.date,
  };
  if (s.signer === 'aws4') return aws4Sign({ ...common, path: onTheWire(s.path), headers: s.extra });
  return smithySign({
    ...common,
    headers: s.extra,
    ...(s.signer === 'smithy-kms' ? { unsigned: ['x-amz-content-sha256'] } : {}),
  });
}

async function signed(s: Spec): Promise<SignedCase> {
  const headers = await sign(s);
  const authorization = headers.authorization ?? '';
  const signedHeaders = /SignedHeaders=([^,\s]+)/.exec(authorization)?.[1]?.split(';') ?? [];
  const signature = /Signature=([0-9a-f]{64})/.exec(authorization)?.[1] ?? '';
  assert.ok(signedHeaders.length > 0 && signature !== '', 'the signer produced no Authorization header');
  return {
    spec: s,
    wire: {
      method: 'POST',
      path: s.signer === 'aws4' ? onTheWire(s.path) : s.path,
      query: [],
      headers: Object.entries(headers).map(([name, value]) => [name, [value]]),
      body: s.body,
    },
    expected: { accessKeyId: s.credential.accessKeyId, region: s.region },
    signedHeaders,
    signature,
    signedAt: Math.floor(s.date.getTime() / 1000) * 1000,
  };
}

function optionsFor(c: SignedCase, overrides: Partial<VerifyOptions> = {}): VerifyOptions {
  return { service: SERVICE, secretOf: (id) => KNOWN.get(id), now: c.signedAt, ...overrides };
}

// ---------------------------------------------------------------------------------------------
// Mutations: each returns the mutated request and whether SigV4 canonicalization makes it neutral.

interface Mutated {
  wire: Wire;
  accept: boolean;
  why: string;
}

/** Random choices for one mutation, made by fast-check so that they shrink and replay. */
interface Recipe {
  kind: MutationKind;
  a: number;
  b: number;
  text: string;
  char: string;
  ws: string;
}

const MUTATION_KINDS = [
  'method',
  'path-replace',
  'path-insert',
  'path-delete',
  'path-percent',
  'path-trailing-slash',
  'path-neutral',
  'query',
  'name-case',
  'value-whitespace',
  'value-split',
  'value-repeat',
  'value-change',
  'remove-signed',
  'remove-unsigned',
  'add-unsigned',
  'body',
  'date-shift',
  'authorization-wrong',
  'authorization-spacing',
] as const;
type MutationKind = (typeof MUTATION_KINDS)[number];

const recipe: fc.Arbitrary<Recipe> = fc.record({
  kind: fc.constantFrom(...MUTATION_KINDS),
  a: fc.nat(),
  b: fc.nat(),
  text: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }),
  char: segmentChar,
  ws: fc.string({ unit: fc.constantFrom(' ', '\t'), minLength: 1, maxLength: 4 }),
});

const clone = (w: Wire): Wire => ({
  ...w,
  query: [...w.query],
  headers: w.headers.map(([n, v]) => [n, [...v]]),
  body: Buffer.from(w.body),
});

const pick = <T>(items: readonly T[], n: number): T => items[n % items.length] as T;

function header(w: Wire, lower: string): [string, string[]] {
  const entry = w.headers.find(([n]) => n.toLowerCase() === lower);
  assert.ok(entry !== undefined, `no ${lower} header`);
  return entry;
}

function mutate(c: SignedCase, r: Recipe): Mutated {
  const w = clone(c.wire);
  const signed = c.signedHeaders;
  const chars = Array.from(w.path); // code points: a surrogate pair is one character
  switch (r.kind) {
    case 'method': {
      // The method is the canonical request's first line.
      w.method = pick(['GET', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'POSTS', 'CONNECT'], r.a);
      return { wire: w, accept: false, why: `method ${w.method}` };
    }
    case 'path-replace': {
      // Any change inside a regular segment changes the canonical URI (each segment is encoded
      // injectively; a segment turned into '.' or '..' removes segments); so does replacing a '/'.
      const at = 1 + (r.a % (chars.length - 1));
      chars[at] = chars[at] === r.char ? (r.char === 'A' ? 'B' : 'A') : r.char;
      return onWire(c, w, chars, { accept: false, why: `path character ${at} replaced` });
    }
    case 'path-insert': {
      const at = 1 + (r.a % chars.length);
      chars.splice(at, 0, r.char);
      return onWire(c, w, chars, { accept: false, why: `character inserted in the path at ${at}` });
    }
    case 'path-delete': {
      // Not the leading '/': a path without it has no origin-form on the wire.
      const at = 1 + (r.a % (chars.length - 1));
      chars.splice(at, 1);
      return onWire(c, w, chars, { accept: false, why: `path character ${at} deleted` });
    }
    case 'path-percent': {
      // '%61' for 'a': SigV4 encodes the path as sent (again), so '%' becomes '%25': not neutral.
      const positions = chars.flatMap((ch, i) => (i > 0 && ch !== '/' ? [i] : []));
      const at = pick(positions, r.a);
      const hex = [...Buffer.from(chars[at] as string)].map((b) => b.toString(16).padStart(2, '0'));
      chars[at] = hex.map((h) => `%${r.b % 2 === 0 ? h.toUpperCase() : h}`).join('');
      return onWire(c, w, chars, { accept: false, why: `path character ${at} percent-encoded` });
    }
    case 'path-trailing-slash': {
      if (chars.at(-1) === '/') chars.pop();
      else chars.push('/');
      return onWire(c, w, chars, { accept: false, why: 'trailing slash toggled' });
    }
    case 'path-neutral': {
      // RFC 3986 normalization (SigV4, non-S3): empty and dot segments are removed.
      const slashes = chars.flatMap((ch, i) => (ch === '/' ? [i] : []));
      const at = pick(slashes, r.a) + 1;
      const cleaned = r.text.replace(/[/?#]/g, '');
      const segment = cleaned === '' || cleaned === '.' || cleaned === '..' ? 'x' : cleaned;
      const insert = pick(['/', './', `${segment}/../`], r.b);
      chars.splice(at, 0, insert);
      return onWire(c, w, chars, { accept: true, why: `'${insert}' inserted in the path` });
    }
    case 'query': {
      // XKS requests have no query; a query parameter is in the canonical request.
      w.query.push([r.text, String(r.b)]);
      return { wire: w, accept: false, why: 'query parameter added' };
    }
    case 'name-case': {
      // Header names are case-insensitive (RFC 9110); SigV4 lower-cases them.
      w.headers = w.headers.map(([name, values], i) => [randomCase(name, r.a + i * 7919), values]);
      return { wire: w, accept: true, why: 'header names in other case' };
    }
    case 'value-whitespace': {
      // SigV4 trims header values and folds whitespace runs to one space; HTTP strips OWS (SP, HTAB).
      const name = pick(['x-words', 'x-list', 'host', 'x-amz-date', 'authorization'], r.a);
      const entry = header(w, name);
      const value = entry[1][0] as string;
      if (name === 'x-words' && r.b % 2 === 0) {
        const spaces = [...value.matchAll(/ /g)].map((m) => m.index);
        const at = pick(spaces, r.a);
        entry[1] = [`${value.slice(0, at)}${r.ws}${r.ws}${value.slice(at + 1)}`];
        return { wire: w, accept: true, why: 'inner space of x-words widened' };
      }
      entry[1] = [
        r.b % 3 === 0 ? `${r.ws}${value}` : r.b % 3 === 1 ? `${value}${r.ws}` : `${r.ws}${value}${r.ws}`,
      ];
      return { wire: w, accept: true, why: `${name} padded with whitespace` };
    }
    case 'value-split': {
      // Repeated headers are one comma-separated list (SigV4: values joined with ',').
      const entry = header(w, 'x-list');
      const items = (entry[1][0] as string).split(',');
      const at = 1 + (r.a % (items.length - 1));
      const [first, second] = [items.slice(0, at).join(','), items.slice(at).join(',')];
      if (r.b % 2 === 0) entry[1] = [first, second];
      else {
        entry[1] = [first];
        w.headers.splice(w.headers.indexOf(entry) + 1, 0, ['X-List', [second]]);
      }
      return { wire: w, accept: true, why: 'x-list sent as two header lines' };
    }
    case 'value-repeat': {
      const name = pick([...signed, 'authorization'], r.a);
      const entry = header(w, name);
      entry[1] = [entry[1][0] as string, entry[1][0] as string];
      return { wire: w, accept: false, why: `${name} sent twice` };
    }
    case 'value-change': {
      const name = pick(signed, r.a);
      const entry = header(w, name);
      const value = Array.from(entry[1][0] as string);
      const visible = value.flatMap((ch, i) => (/\s/.test(ch) ? [] : [i]));
      const at = pick(visible, r.b);
      const replacement = pick(VISIBLE, r.b + 1 + r.a);
      value[at] = replacement === value[at] ? (replacement === 'A' ? 'B' : 'A') : replacement;
      entry[1] = [value.join('')];
      return { wire: w, accept: false, why: `signed header ${name} changed` };
    }
    case 'remove-signed': {
      const name = pick(signed, r.a);
      w.headers = w.headers.filter(([n]) => n.toLowerCase() !== name);
      return { wire: w, accept: false, why: `signed header ${name} removed` };
    }
    case 'remove-unsigned': {
      const unsigned = w.headers.filter(([n]) => !signed.includes(n.toLowerCase()) && n !== 'authorization');
      if (unsigned.length === 0) return { wire: w, accept: true, why: 'nothing unsigned to remove' };
      const [victim] = pick(unsigned, r.a);
      w.headers = w.headers.filter(([n]) => n !== victim);
      return { wire: w, accept: true, why: `unsigned header ${victim} removed` };
    }
    case 'add-unsigned': {
      const name = `x-unsigned-${r.a % 1000}`;
      w.headers.push([r.b % 2 === 0 ? name : name.toUpperCase(), [r.text]]);
      return { wire: w, accept: true, why: 'unsigned header added' };
    }
    case 'body': {
      const body = w.body;
      const mode = body.length === 0 ? 0 : r.b % 3;
      if (mode === 0) w.body = Buffer.concat([body, Buffer.from([r.a % 256])]);
      else if (mode === 1) w.body = body.subarray(0, body.length - 1);
      else {
        const at = r.a % body.length;
        body.writeUInt8((body.readUInt8(at) ^ (1 << (r.b % 8))) & 0xff, at);
      }
      return { wire: w, accept: false, why: 'body changed' };
    }
    case 'date-shift': {
      // Within the 5 minutes, so that only the signature can reject it.
      const seconds = (1 + (r.a % 240)) * (r.b % 2 === 0 ? 1 : -1);
      header(w, 'x-amz-date')[1] = [toAmzDate(new Date(c.signedAt + seconds * 1000))];
      return { wire: w, accept: false, why: `X-Amz-Date moved by ${seconds} s` };
    }
    case 'authorization-wrong': {
      const entry = header(w, 'authorization');
      const [changed, why] = pick(wrongAuthorizations(entry[1][0] as string, c, r), r.b + r.a);
      assert.notEqual(changed, entry[1][0], `mutation '${why}' changed nothing`);
      entry[1] = [changed];
      return { wire: w, accept: false, why: `Authorization: ${why}` };
    }
    case 'authorization-spacing': {
      // The spec's format (Appendix A) separates the parts by ', ' and the algorithm by ' '; runs of
      // spaces there are accepted, like the signers' own output variations.
      const entry = header(w, 'authorization');
      const { credential, signedHeaders, signature } = parts(entry[1][0] as string);
      const sp = (n: number) => ' '.repeat(n);
      entry[1] = [
        `AWS4-HMAC-SHA256${sp(1 + (r.a % 4))}Credential=${credential}${sp(r.b % 3)},${sp((r.a >> 2) % 3)}` +
          `SignedHeaders=${signedHeaders}${sp((r.b >> 2) % 3)},${sp((r.a >> 4) % 3)}Signature=${signature}`,
      ];
      return { wire: w, accept: true, why: 'Authorization spacing varied' };
    }
  }
}

/** The mutated path as the client would send it (aws4 sends it percent-encoded: see onTheWire). */
function onWire(c: SignedCase, w: Wire, chars: string[], m: Omit<Mutated, 'wire'>): Mutated {
  const path = chars.join('');
  w.path = c.spec.signer === 'aws4' ? onTheWire(path) : path;
  return { wire: w, ...m };
}

/**
 * What aws4 sends and signs for a path: it percent-encodes every character outside its set (and
 * would first decode the path, which fails on a stray '%'); encoding those characters ourselves
 * first leaves the path unchanged by aws4. Injective per character, and '/' and '.' stay as they
 * are, so it keeps every mutation's classification.
 */
function onTheWire(path: string): string {
  return path.replace(/[^0-9A-Za-z;,/?:@&=+$\-_.!~*'()#%]/gu, (ch) => encodeURIComponent(ch));
}

function randomCase(name: string, seed: number): string {
  return Array.from(name)
    .map((ch, i) => (((seed >> (i % 24)) ^ i) & 1 ? ch.toUpperCase() : ch.toLowerCase()))
    .join('');
}

function parts(authorization: string): { credential: string; signedHeaders: string; signature: string } {
  const m = /^AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(
    authorization,
  );
  assert.ok(m !== null, 'signer output is not in the spec format');
  return { credential: m[1] as string, signedHeaders: m[2] as string, signature: m[3] as string };
}

/** Non-neutral changes of the Authorization header, one of each kind: every one must be rejected. */
function wrongAuthorizations(authorization: string, c: SignedCase, r: Recipe): Array<[string, string]> {
  const { credential, signedHeaders, signature } = parts(authorization);
  const build = (cr = credential, sh = signedHeaders, sg = signature, alg = 'AWS4-HMAC-SHA256') =>
    `${alg} Credential=${cr}, SignedHeaders=${sh}, Signature=${sg}`;
  const scope = credential.split('/');
  const variants: Array<() => [string, string]> = [
    () => {
      const alg = pick(
        ['aws4-hmac-sha256', 'AWS4-HMAC-SHA512', 'AWS4-ECDSA-P256-SHA256', 'AWS4', 'Aws4-Hmac-Sha256'],
        r.a,
      );
      return [build(credential, signedHeaders, signature, alg), `algorithm ${alg}`];
    },
    () => {
      // One scope part replaced: access key id (the other known one, or unknown), date, region, service.
      const i = r.a % 5;
      const old = scope[i] as string;
      const replacement = [
        pick(
          [
            c.spec.credential === CRED_A ? CRED_B.accessKeyId : CRED_A.accessKeyId,
            'AKIAUNKNOWNKEY234567',
            '',
          ],
          r.b,
        ),
        toAmzDate(new Date(c.signedAt + (r.b % 2 === 0 ? 1 : -1) * 86_400_000)).slice(0, 8),
        pick(REGIONS.filter((x) => x !== old).concat(`${old}x`), r.b),
        pick(['kms', 'execute-api', 'kms-xks-proxy2', 'KMS-XKS-PROXY', ''], r.b),
        pick(['aws4_requesT', 'aws4_request2', 'aws5_request', ''], r.b),
      ][i] as string;
      const next = [...scope];
      next[i] = replacement === old ? `${old}0` : replacement;
      return [build(next.join('/')), `credential scope part ${i} replaced`];
    },
    () => {
      const next = [...scope];
      if (r.b % 2 === 0) next.splice(r.a % 6, 0, r.text.replace(/[,\s/]/g, '') || 'x');
      else next.splice(r.a % 5, 1);
      return [build(next.join('/')), 'credential scope with a part added or removed'];
    },
    () => {
      const list = signedHeaders.split(';');
      const choices: Array<[string[], string]> = [
        [list.filter((_, i) => i !== r.b % list.length), 'a signed header dropped'],
        [[...list, 'content-type'].sort(), 'content-type added'],
        [[...list].reverse(), 'SignedHeaders reversed'],
        [
          list.map((n) =>
            n ===
            pick(
              list.filter((x) => /[a-z]/.test(x)),
              r.b,
            )
              ? n.toUpperCase()
              : n,
          ),
          'a SignedHeaders name upper-cased',
        ],
        [[...list, pick(list, r.b)], 'a signed header listed twice'],
        [[...list, ''], 'empty SignedHeaders entry'],
      ];
      const [next, why] = pick(choices, r.a);
      return [build(credential, next.join(';')), why];
    },
    () => {
      const choices: Array<[string, string]> = [
        [`${signature[0] === '0' ? '1' : '0'}${signature.slice(1)}`, 'a signature digit changed'],
        [signature.toUpperCase().replace(/^[0-9]+$/, 'A'.repeat(64)), 'signature in upper case'],
        [signature.slice(0, 63), 'signature truncated'],
        [`${signature}0`, 'signature extended'],
        [Buffer.from(r.text.padEnd(32, '#').slice(0, 32)).toString('hex').slice(0, 64), 'another signature'],
      ];
      const [sg, why] = pick(choices, r.a);
      return [build(credential, signedHeaders, sg === signature ? `f${sg.slice(1)}` : sg), why];
    },
    () => {
      const choices: Array<[string, string]> = [
        [authorization.replace(', SignedHeaders', ' SignedHeaders'), 'comma removed'],
        [authorization.replace(', Signature', ',\tSignature'), 'tab after a comma'],
        [authorization.replace(', Signature', '; Signature'), 'semicolon for a comma'],
        [authorization.replace(', SignedHeaders', ',, SignedHeaders'), 'double comma'],
        [authorization.replace(' Credential', ', Credential'), 'comma after the algorithm'],
        [authorization.replace(' Credential', '\tCredential'), 'tab after the algorithm'],
        [authorization.replace(', Signature', ',\r\n Signature'), 'folded line'],
      ];
      return pick(choices, r.a);
    },
    () => {
      const key = pick(['Credential=', 'SignedHeaders=', 'Signature='], r.a);
      const variant = pick(
        [key.toLowerCase(), key.toUpperCase(), key.replace('=', ' ='), key.replace('=', '= ')],
        r.b,
      );
      return [authorization.replace(key, variant), `${key} spelled ${variant}`];
    },
    () => {
      const segments = [
        `Credential=${credential}`,
        `SignedHeaders=${signedHeaders}`,
        `Signature=${signature}`,
      ];
      const i = r.a % 3;
      const repeated = [...segments];
      repeated.splice(i + 1 + (r.b % (3 - i)), 0, segments[i] as string);
      return [`AWS4-HMAC-SHA256 ${repeated.join(', ')}`, `${(segments[i] as string).split('=')[0]} repeated`];
    },
    () => {
      const segments = [
        `Credential=${credential}`,
        `SignedHeaders=${signedHeaders}`,
        `Signature=${signature}`,
      ];
      const orders = [
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
      ];
      const order = pick(orders, r.a);
      return [`AWS4-HMAC-SHA256 ${order.map((i) => segments[i]).join(', ')}`, `parts in order ${order}`];
    },
    () => {
      const extra = pick(
        [', Foo=bar', ', SignedHeaders=host', `, ${r.text.replace(/[\r\n]/g, '')}`, ','],
        r.a,
      );
      return [`${authorization}${extra}`, 'extra text after the signature'];
    },
    () => {
      const segments = [
        `Credential=${credential}`,
        `SignedHeaders=${signedHeaders}`,
        `Signature=${signature}`,
      ];
      segments.splice(r.a % 3, 1);
      return [`AWS4-HMAC-SHA256 ${segments.join(', ')}`, 'a part missing'];
    },
  ];
  return variants.map((variant) => variant());
}

/** The real signer's signature over a request like `c` but with another path (same date, headers, body). */
async function resignedSignature(c: SignedCase, path: string): Promise<string | undefined> {
  try {
    const headers = await sign({ ...c.spec, path });
    return /Signature=([0-9a-f]{64})/.exec(headers.authorization ?? '')?.[1];
  } catch {
    return undefined; // no signer can sign that path (e.g. a lone surrogate): no valid signature exists
  }
}

// ---------------------------------------------------------------------------------------------
// Properties

describe('SigV4 verifier, property-based', () => {
  test('accepted: requests signed by a real signer with a known credential are accepted, within 5 minutes', async (t) => {
    t.diagnostic(`seed ${SEED}, ${RUNS} runs`);
    await fc.assert(
      fc.asyncProperty(
        spec(fc.oneof(normalPath, rawPath)),
        fc.integer({ min: -SKEW, max: SKEW }),
        async (s, skew) => {
          const c = await signed(s);
          assertAccepted(
            verify(toSigned(c.wire), optionsFor(c, { now: c.signedAt + skew })),
            c.expected,
            s.signer,
          );
        },
      ),
      params('accepted'),
    );
  });

  test('rejected-credentials: wrong secret, unknown id, stale or future date, or a region not allowed: rejected', async () => {
    const boundary = fc.oneof(
      fc.integer({ min: -2 * SKEW, max: 2 * SKEW }),
      fc.integer({ min: SKEW - 2000, max: SKEW + 2000 }).map((ms) => ms * (ms % 2 === 0 ? 1 : -1)),
    );
    await fc.assert(
      fc.asyncProperty(
        spec(normalPath),
        boundary,
        fc.subarray(REGIONS),
        fc.constantFrom('secret', 'id', 'clock', 'region', 'service'),
        async (s, skew, allowed, mode) => {
          const c = await signed(s);
          const req = toSigned(c.wire);
          const signature = [c.signature];
          // Warm the signing-key cache with the right secret first: a cached key must not leak
          // into the verification with another one.
          assertAccepted(verify(req, optionsFor(c)), c.expected, 'control');
          if (mode === 'secret') {
            const wrong = (id: string) => (KNOWN.has(id) ? OTHER_SECRET : undefined);
            assertRejected(verify(req, optionsFor(c, { secretOf: wrong })), 'wrong secret', signature);
            assertAccepted(verify(req, optionsFor(c)), c.expected, 'right secret again');
          } else if (mode === 'service') {
            // Signed with the right secret, for another service (spec: Appendix A, kms-xks-proxy); not
            // s3, which aws4 signs by other rules.
            const other = pick(
              ['kms', 'execute-api', 'sts', 'kms-xks-proxy2', 'KMS-XKS-PROXY'],
              Math.abs(skew),
            );
            const headers = await sign(s, other);
            const w = clone(c.wire);
            w.headers = Object.entries(headers).map(([name, value]) => [name, [value]]);
            assertRejected(verify(toSigned(w), optionsFor(c)), `signed for service ${other}`);
          } else if (mode === 'id') {
            const others = (id: string) => (id === s.credential.accessKeyId ? undefined : KNOWN.get(id));
            assertRejected(
              verify(req, optionsFor(c, { secretOf: others })),
              'unknown access key id',
              signature,
            );
          } else if (mode === 'clock') {
            // X-Amz-Date has whole seconds; the spec allows 5 minutes either way (inclusive here).
            const outcome = verify(req, optionsFor(c, { now: c.signedAt + skew }));
            if (Math.abs(skew) <= SKEW) assertAccepted(outcome, c.expected, `clock ${skew} ms off`);
            else assertRejected(outcome, `clock ${skew} ms off`, signature);
          } else {
            const outcome = verify(req, optionsFor(c, { allowedRegions: new Set(allowed) }));
            if (allowed.includes(s.region)) assertAccepted(outcome, c.expected, 'allowed region');
            else assertRejected(outcome, `region ${s.region} not in [${allowed}]`, signature);
          }
        },
      ),
      params('rejected-credentials'),
    );
  });

  test('mutation: one mutation of a signed request: rejected, unless neutral under SigV4 canonicalization', async () => {
    await fc.assert(
      fc.asyncProperty(spec(normalPath), recipe, async (s, r) => {
        const c = await signed(s);
        const m = mutate(c, r);
        const outcome = verify(toSigned(m.wire), optionsFor(c));
        if (m.accept) assertAccepted(outcome, c.expected, m.why);
        else assertRejected(outcome, m.why, [c.signature]);
        if (r.kind.startsWith('path-')) {
          // The classification itself, checked against the real signer: a neutral path gets the
          // same signature, any other path another one.
          const resigned = await resignedSignature(c, m.wire.path);
          assert.equal(
            resigned === c.signature,
            m.accept,
            `signer disagrees with the classification: ${m.why}`,
          );
        }
      }),
      params('mutation', RUNS * 2),
    );
  });

  test('authorization-variants: every kind of wrong Authorization, each of its choices, rejected', async () => {
    // The mutation property picks one of these at random; here each request gets all of them.
    await fc.assert(
      fc.asyncProperty(spec(normalPath), recipe, async (s, r) => {
        const c = await signed(s);
        const original = header(c.wire, 'authorization')[1][0] as string;
        for (let choice = 0; choice < 7; choice++) {
          for (const [changed, why] of wrongAuthorizations(original, c, {
            ...r,
            a: r.a + choice,
            b: r.b + choice,
          })) {
            assert.notEqual(changed, original, `mutation '${why}' changed nothing`);
            const w = clone(c.wire);
            header(w, 'authorization')[1] = [changed];
            assertRejected(verify(toSigned(w), optionsFor(c)), `Authorization: ${why}`, [c.signature]);
          }
        }
      }),
      params('authorization-variants', Math.max(20, Math.round(RUNS / 5))),
    );
  });

  test('arbitrary-authorization: arbitrary Authorization headers are rejected', async () => {
    const authorization = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.string({ unit: 'grapheme', maxLength: 300 }).map((x) => `AWS4-HMAC-SHA256 ${x}`),
      // Structured but wrong: random scope parts, separators, keys, repeated parts.
      fc
        .tuple(
          fc.array(
            fc.oneof(
              fc.constantFrom(CRED_A.accessKeyId, '20240515', 'us-east-1', SERVICE, 'aws4_request', ''),
              fc.string({ maxLength: 12 }),
            ),
            { maxLength: 7 },
          ),
          fc.array(fc.oneof(fc.constantFrom('host', 'x-amz-date', 'Host', ''), fc.string({ maxLength: 8 })), {
            maxLength: 5,
          }),
          fc.oneof(fc.string({ unit: HEX, maxLength: 70 }), fc.string({ maxLength: 70 })),
          fc.array(fc.constantFrom(', ', ',', ' ', ',  ', '\t', ';', ''), { minLength: 3, maxLength: 3 }),
          fc.array(fc.constantFrom('Credential=', 'SignedHeaders=', 'Signature=', 'credential=', 'Foo='), {
            minLength: 3,
            maxLength: 5,
          }),
        )
        .map(([scope, names, sig, seps, keys]) =>
          [
            'AWS4-HMAC-SHA256',
            seps[0],
            keys[0],
            scope.join('/'),
            seps[1],
            keys[1],
            names.join(';'),
            seps[2],
            keys[2],
            sig,
            ...keys.slice(3).map((k) => `, ${k}${sig}`),
          ].join(''),
        ),
      // Arbitrary header-value-like strings in a valid-looking frame.
      fc.string({ unit: fc.constantFrom(...VISIBLE, ' ', '\t'), maxLength: 400 }),
    );
    await fc.assert(
      fc.asyncProperty(spec(normalPath), authorization, fc.boolean(), async (s, value, asArray) => {
        const c = await signed(s);
        const w = clone(c.wire);
        const entry = header(w, 'authorization');
        if (value.trim() === entry[1][0]) return; // the generator reproduced the real header
        // Also split at its commas into header lines (one header in HTTP, so not a valid one).
        entry[1] = asArray ? value.split(',') : [value];
        assertRejected(verify(toSigned(w), optionsFor(c)), 'arbitrary Authorization', [c.signature]);
      }),
      params('arbitrary-authorization'),
    );
  });

  test('arbitrary-requests: arbitrary requests with a well-formed Authorization but no real signature: 401 only, never a crash', async () => {
    const anyHeaders = fc.array(
      fc.tuple(
        fc.oneof(
          headerName,
          fc.string({ unit: 'binary', maxLength: 20 }),
          fc.constantFrom('Host', 'HOST', 'x-amz-date', 'X-Amz-Date'),
        ),
        fc.array(fc.string({ unit: 'binary', maxLength: 60 }), { maxLength: 3 }),
      ),
      { maxLength: 8 },
    );
    await fc.assert(
      fc.property(
        fc.record({
          method: fc.oneof(fc.constantFrom('POST', 'GET', 'post', ''), fc.string({ maxLength: 10 })),
          path: fc.oneof(rawPath, fc.string({ unit: 'binary', maxLength: 200 }), fc.webPath()),
          query: fc.array(
            fc.tuple(
              fc.string({ unit: 'binary', maxLength: 10 }),
              fc.string({ unit: 'binary', maxLength: 10 }),
            ),
            { maxLength: 3 },
          ),
          headers: anyHeaders,
          signedHeaders: fc.array(
            fc.oneof(headerName, fc.constantFrom('host', 'x-amz-date', 'content-type')),
            { maxLength: 5 },
          ),
          signature: fc.string({ unit: HEX, minLength: 64, maxLength: 64 }),
          region: fc.constantFrom(...REGIONS),
          body: fc.uint8Array({ maxLength: 256 }).map((b) => Buffer.from(b)),
          now: fc.date({
            min: new Date('2000-01-01T00:00:00Z'),
            max: new Date('2099-12-31T00:00:00Z'),
            noInvalidDate: true,
          }),
        }),
        (x) => {
          const amzDate = toAmzDate(x.now);
          const signedHeaders = [...new Set(['host', 'x-amz-date', ...x.signedHeaders])].sort().join(';');
          const wire: Wire = {
            method: x.method,
            path: x.path,
            query: x.query,
            headers: [
              ...x.headers,
              ['x-amz-date', [amzDate]],
              [
                'Authorization',
                [
                  `AWS4-HMAC-SHA256 Credential=${CRED_A.accessKeyId}/${amzDate.slice(0, 8)}/${x.region}/${SERVICE}/aws4_request, ` +
                    `SignedHeaders=${signedHeaders}, Signature=${x.signature.toLowerCase()}`,
                ],
              ],
            ],
            body: x.body,
          };
          const options: VerifyOptions = {
            service: SERVICE,
            secretOf: (id) => KNOWN.get(id),
            now: x.now.getTime(),
          };
          assertRejected(verify(toSigned(wire), options), 'no real signature');
        },
      ),
      params('arbitrary-requests'),
    );
  });

  test('invalid-date: an X-Amz-Date that is no UTC timestamp is rejected even when signed (aws4 signs it as given)', async () => {
    // Spec (Appendix A, Task 1): X-Amz-Date is YYYYMMDD'T'HHMMSS'Z'. Hour 24+, minute or second 60+,
    // month 0 or 13+, day 0, February 30 or day 32+ are no such timestamp, whatever Date.UTC makes of them.
    const invalid = fc
      .record({
        year: fc.integer({ min: 2001, max: 2098 }),
        month: fc.integer({ min: 1, max: 12 }),
        day: fc.integer({ min: 1, max: 28 }),
        hour: fc.integer({ min: 0, max: 23 }),
        minute: fc.integer({ min: 0, max: 59 }),
        second: fc.integer({ min: 0, max: 59 }),
        broken: fc.constantFrom('month', 'day', 'hour', 'minute', 'second'),
        by: fc.integer({ min: 0, max: 30 }),
      })
      .map((d) => {
        const field = { ...d };
        if (d.broken === 'month') field.month = d.by % 5 === 0 ? 0 : 13 + (d.by % 87);
        if (d.broken === 'day') field.day = d.by % 5 === 0 ? 0 : field.month === 2 ? 30 : 32 + (d.by % 68);
        if (d.broken === 'hour') field.hour = 24 + (d.by % 76);
        if (d.broken === 'minute') field.minute = 60 + (d.by % 40);
        if (d.broken === 'second') field.second = 61 + (d.by % 39); // 60: a leap second, left out
        const p = (n: number, w = 2) => String(n).padStart(w, '0');
        return {
          amzDate: `${p(field.year, 4)}${p(field.month)}${p(field.day)}T${p(field.hour)}${p(field.minute)}${p(field.second)}Z`,
          // What Date.UTC makes of it: the verifier's clock is set there, so only the format can reject.
          at: Date.UTC(field.year, field.month - 1, field.day, field.hour, field.minute, field.second),
          broken: d.broken,
        };
      });
    await fc.assert(
      fc.property(invalid, ({ amzDate, at }) => {
        const signedHeaders = aws4.sign(
          {
            host: 'xks.example.com',
            method: 'POST',
            path: '/kms/xks/v1/health',
            service: SERVICE,
            region: 'us-east-1',
            body: '{}',
            headers: { 'Content-Type': 'application/json', 'X-Amz-Date': amzDate },
          },
          CRED_A,
        ).headers as Record<string, string>;
        const wire: Wire = {
          method: 'POST',
          path: '/kms/xks/v1/health',
          query: [],
          headers: Object.entries(signedHeaders).map(([n, v]) => [n, [String(v)]]),
          body: Buffer.from('{}'),
        };
        const options: VerifyOptions = { service: SERVICE, secretOf: (id) => KNOWN.get(id), now: at };
        assertRejected(verify(toSigned(wire), options), `X-Amz-Date ${amzDate}`);
      }),
      params('invalid-date'),
    );
  });
});
