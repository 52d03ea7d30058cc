// The one event adapter (functions/front-door.ts): what the chain reads of an API Gateway event and
// of an ALB event, the answer in each event's shape; the ALB listener rules' path patterns as the
// local server applies them (functions/handlers.ts albRoute); client certificate subjects (RFC 2253).
import assert from 'node:assert/strict';
import { STATUS_CODES } from 'node:http';
import { describe, test } from 'node:test';
import type { ALBEvent, APIGatewayProxyEvent } from 'aws-lambda';
import { ERROR_STATUS, REASON_PHRASES } from '../../functions/errors.ts';
import { frontDoorResult, httpRequestOf } from '../../functions/front-door.ts';
import { albRoute } from '../../functions/handlers.ts';
import { commonNameOf } from '../../functions/mtls.ts';
import { ALB_PATH_PATTERNS, matchesPathPattern } from '../../functions/routes.ts';

const alb = (extra: Partial<ALBEvent> = {}): ALBEvent => ({
  requestContext: { elb: { targetGroupArn: 'arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/t/1' } },
  httpMethod: 'POST',
  path: '/p/kms/xks/v1/keys/a%2Db/encrypt',
  multiValueQueryStringParameters: {},
  multiValueHeaders: { host: ['xks.example.com'], 'x-amz-date': ['20260101T000000Z'] },
  body: '{"a":1}',
  isBase64Encoded: false,
  ...extra,
});

const api = (extra: Partial<APIGatewayProxyEvent> = {}): APIGatewayProxyEvent =>
  ({
    resource: '/p/kms/xks/v1/keys/{keyId}/encrypt',
    path: '/p/kms/xks/v1/keys/a%2Db/encrypt',
    httpMethod: 'POST',
    headers: { Host: 'xks.example.com' },
    multiValueHeaders: { Host: ['xks.example.com'] },
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: { keyId: 'a-b' },
    body: Buffer.from('{"a":1}').toString('base64'),
    isBase64Encoded: true,
    requestContext: { path: '/prod/p/kms/xks/v1/keys/a%2Db/encrypt', identity: { clientCert: null } },
    ...extra,
  }) as unknown as APIGatewayProxyEvent;

describe('httpRequestOf', () => {
  test('an ALB event: the path as sent, the route and the decoded key id read from it', () => {
    const r = httpRequestOf(alb());
    assert.equal(r.method, 'POST');
    assert.equal(r.path, '/p/kms/xks/v1/keys/a%2Db/encrypt');
    assert.equal(r.resource, '/p/kms/xks/v1/keys/{keyId}/encrypt');
    assert.equal(r.keyId, 'a-b');
    assert.deepEqual(r.headers.host, ['xks.example.com']);
    assert.equal(r.body.toString(), '{"a":1}');
    assert.equal(r.hasQuery, false);
    assert.deepEqual(r.clientCertSubjects, []);
  });

  test('an API Gateway event: the path the client sent (requestContext.path), the routed resource', () => {
    const r = httpRequestOf(api());
    assert.equal(r.path, '/prod/p/kms/xks/v1/keys/a%2Db/encrypt');
    assert.equal(r.resource, '/p/kms/xks/v1/keys/{keyId}/encrypt');
    assert.equal(r.keyId, 'a-b');
    assert.equal(r.body.toString(), '{"a":1}');
    assert.deepEqual(r.clientCertSubjects, []);
  });

  test('ALB: no route, a malformed escape, Base64 bodies, single-valued headers, a query string', () => {
    const none = httpRequestOf(alb({ path: '/p/kms/xks/v1/health/' }));
    assert.equal(none.resource, '');
    assert.equal(httpRequestOf(alb({ path: '/kms/xks/v1/keys/%zz/metadata' })).keyId, '%zz');
    const other = httpRequestOf(
      alb({
        multiValueHeaders: undefined,
        headers: { host: 'h' },
        queryStringParameters: { a: 'b' },
        multiValueQueryStringParameters: undefined,
        body: Buffer.from([0xff, 0x00]).toString('base64'),
        isBase64Encoded: true,
      }),
    );
    assert.deepEqual(other.headers.host, ['h']);
    assert.equal(other.hasQuery, true);
    assert.deepEqual([...other.body], [0xff, 0x00]);
  });

  test("client certificate subjects: ALB's header, every value under any spelling; API Gateway's identity only", () => {
    const subjects = httpRequestOf(
      alb({
        multiValueHeaders: {
          'x-amzn-mtls-clientcert-subject': ['CN=a'],
          'X-Amzn-Mtls-Clientcert-Subject': ['CN=b', 'CN=c'],
        },
      }),
    ).clientCertSubjects;
    assert.deepEqual(subjects, ['CN=a', 'CN=b', 'CN=c']);
    const viaApi = api({ multiValueHeaders: { 'x-amzn-mtls-clientcert-subject': ['CN=forged'] } });
    assert.deepEqual(httpRequestOf(viaApi).clientCertSubjects, []);
    (viaApi.requestContext.identity as { clientCert: unknown }).clientCert = { subjectDN: 'CN=real' };
    assert.deepEqual(httpRequestOf(viaApi).clientCertSubjects, ['CN=real']);
  });

  test('an event with nothing in it is an empty request, not a crash', () => {
    const r = httpRequestOf({} as APIGatewayProxyEvent);
    assert.deepEqual([r.method, r.path, r.resource, r.keyId, r.body.length], ['', '', '', '', 0]);
  });
});

describe('frontDoorResult', () => {
  const response = { statusCode: 429, headers: { 'content-type': 'application/json' }, body: '{}' };
  test('API Gateway: the response as it is', () => {
    assert.deepEqual(frontDoorResult(api(), response), response);
  });
  test('ALB: a status description; multiValueHeaders exactly when the event has them', () => {
    assert.deepEqual(frontDoorResult(alb(), response), {
      statusCode: 429,
      statusDescription: '429 Too Many Requests',
      isBase64Encoded: false,
      body: '{}',
      multiValueHeaders: { 'content-type': ['application/json'] },
    });
    const single = frontDoorResult(alb({ multiValueHeaders: undefined, headers: {} }), response);
    assert.deepEqual(single, {
      statusCode: 429,
      statusDescription: '429 Too Many Requests',
      isBase64Encoded: false,
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
  });
});

describe("the ALB listener rules' path patterns", () => {
  test('each route of any key store goes to its function; anything else to the fixed 404', () => {
    for (const prefix of ['', '/a', '/keystores/payments', '/a-b/c_d/E9']) {
      assert.equal(albRoute(`${prefix}/kms/xks/v1/health`), 'GetHealthStatus');
      assert.equal(albRoute(`${prefix}/kms/xks/v1/keys/k.1/metadata`), 'GetKeyMetadata');
      assert.equal(albRoute(`${prefix}/kms/xks/v1/keys/k/encrypt`), 'Encrypt');
      assert.equal(albRoute(`${prefix}/kms/xks/v1/keys/k/decrypt`), 'Decrypt');
    }
    for (const path of [
      '/',
      '/kms/xks/v1/health/',
      '/kms/xks/v2/health',
      '/kms/xks/v1/keys/k',
      '/KMS/xks/v1/health',
    ]) {
      assert.equal(albRoute(path), undefined, path);
    }
    // Wider than the routes (the function refuses the rest): `*` spans slashes.
    assert.equal(albRoute('/kms/xks/v1/keys/a/b/encrypt'), 'Encrypt');
  });

  test('pattern syntax: `*` any characters, `?` one, everything else literal', () => {
    assert.ok(matchesPathPattern('/a?c', '/abc'));
    assert.ok(!matchesPathPattern('/a?c', '/ac'));
    assert.ok(!matchesPathPattern('/a.c', '/abc'));
    assert.ok(matchesPathPattern('/a*', '/a/b/c'));
    // ALB's limit: a pattern is at most 128 characters.
    for (const [, pattern] of ALB_PATH_PATTERNS) assert.ok(pattern.length <= 128, pattern);
  });
});

describe('commonNameOf (RFC 2253 as the front doors give it, or as Node prints it)', () => {
  const cases: Array<[string | undefined, string | undefined]> = [
    ['CN=cks.kms.eu-west-1.amazonaws.com', 'cks.kms.eu-west-1.amazonaws.com'],
    ['CN=cks.kms.eu-west-1.amazonaws.com,O=Amazon,C=US', 'cks.kms.eu-west-1.amazonaws.com'],
    ['C=US,O=Amazon,CN=a', 'a'],
    ['C=US\nO=Amazon\nCN=a', 'a'],
    ['O=Amazon+CN=a', 'a'],
    ['CN=a\\,b,O=x', 'a,b'],
    ['O=x\\,CN=evil', undefined],
    ['OU=x\\\\,CN=a', 'a'],
    ['O=Amazon', undefined],
    ['', undefined],
    [undefined, undefined],
  ];
  for (const [subject, cn] of cases) {
    test(`${JSON.stringify(subject)} -> ${cn}`, () => assert.equal(commonNameOf(subject), cn));
  }
});

test("the ALB status descriptions: node:http's reason phrase for 200 and every status of the error table", () => {
  const statuses = [200, ...new Set(Object.values(ERROR_STATUS))].sort((a, b) => a - b);
  assert.deepEqual(
    Object.fromEntries(statuses.map((status) => [status, REASON_PHRASES[status]])),
    Object.fromEntries(statuses.map((status) => [status, STATUS_CODES[status]])),
  );
  assert.deepEqual(Object.keys(REASON_PHRASES).map(Number), statuses);
});
