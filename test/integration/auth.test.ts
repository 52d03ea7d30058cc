// SigV4 against the running local server (as API Gateway or as an ALB: XKS_TEST_FRONT_DOOR): three
// independent signers (@smithy/signature-v4, aws4, curl --aws-sigv4) are accepted, over the path as
// sent; tampered, stale and foreign requests get 401; two credentials work at once; a key store can
// be limited to regions.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { metadata, PREFIX, type RunningProxy, randomCredential, startProxy } from '../helpers/proxy.ts';
import { aws4Sign, smithySign } from '../helpers/sign.ts';

let proxy: RunningProxy;
before(async () => {
  proxy = await startProxy();
});
after(async () => {
  await proxy?.stop();
});

const health = { requestMetadata: { kmsRequestId: 'auth-1', kmsOperation: 'KmsHealthCheck' } };
const encryptBody = () => ({
  requestMetadata: metadata('Encrypt'),
  plaintext: Buffer.from('sixteen byte msg').toString('base64'),
  encryptionAlgorithm: 'AES_GCM',
});

function assert401(res: { status: number; json: { errorName?: string } }, why: string) {
  assert.equal(res.status, 401, why);
  assert.equal(res.json.errorName, 'AuthenticationFailedException', why);
}

describe('accepted signers', () => {
  test('@smithy/signature-v4', async () => {
    assert.equal((await proxy.xks('health', health)).status, 200);
  });

  test('aws4 (also signs content-type and content-length)', async () => {
    const res = await proxy.xks('keys/foo/encrypt', encryptBody(), { signer: aws4Sign });
    assert.equal(res.status, 200, res.text);
  });

  test('SignedHeaders exactly host;x-amz-date, as KMS signs', async () => {
    const res = await proxy.xks('health', health, {
      signer: async (req) => {
        const headers = await smithySign({ ...req, unsigned: ['x-amz-content-sha256'] });
        delete headers['x-amz-content-sha256'];
        return headers;
      },
      tamper: (req) => assert.match(req.headers.authorization as string, /SignedHeaders=host;x-amz-date,/),
    });
    assert.equal(res.status, 200, res.text);
  });

  test('curl --aws-sigv4 against the live server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xks-curl-'));
    try {
      const ca = join(dir, 'ca.pem');
      writeFileSync(ca, proxy.ca);
      const [credential] = proxy.credentials;
      const run = promisify(execFile);
      const { stdout } = await run('curl', [
        '--silent',
        '--show-error',
        '--aws-sigv4',
        'aws:amz:us-east-1:kms-xks-proxy',
        '--user',
        `${credential?.accessKeyId}:${credential?.secretAccessKey}`,
        '--cacert',
        ca,
        '-H',
        'Content-Type: application/json',
        '--data',
        JSON.stringify(encryptBody()),
        '--write-out',
        '\n%{http_code}',
        `https://${proxy.host}${PREFIX}/kms/xks/v1/keys/foo/encrypt`,
      ]);
      const [body, status] = stdout.split('\n');
      assert.equal(status, '200', body);
      assert.equal(JSON.parse(body as string).initializationVector.length, 16);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a percent-encoded path, signed and verified as it was sent (%66oo is the key foo)', async () => {
    // The front door hands the function the path as sent (API Gateway: requestContext.path; ALB:
    // its path), and the key id decoded.
    const res = await proxy.xks('keys/%66oo/encrypt', encryptBody());
    assert.equal(res.status, 200, res.text);
    // Sent decoded after signing encoded: not what was signed.
    const changed = await proxy.xks('keys/%66oo/encrypt', encryptBody(), {
      tamper: (r) => {
        r.path = r.path.replace('%66oo', 'foo');
      },
    });
    assert401(changed, 'path decoded after signing');
  });

  test('two active credentials for one key store (rotation)', async () => {
    const [first, second] = proxy.credentials;
    assert.equal((await proxy.xks('health', health, { credential: first })).status, 200);
    assert.equal((await proxy.xks('health', health, { credential: second })).status, 200);
  });

  test('any region, unless the key store lists allowed ones', async () => {
    assert.equal((await proxy.xks('health', health, { region: 'ap-southeast-7' })).status, 200);
    const eu = proxy.credentials[2];
    const ok = await proxy.xks('health', health, { prefix: '', credential: eu, region: 'eu-west-1' });
    assert.equal(ok.status, 200, ok.text);
    assert401(
      await proxy.xks('health', health, { prefix: '', credential: eu, region: 'us-east-1' }),
      'region',
    );
  });
});

describe('rejected with 401', () => {
  const minutes = (n: number) => new Date(Date.now() + n * 60_000);
  type Options = NonNullable<Parameters<RunningProxy['xks']>[2]>;
  const cases: Array<[string, () => Options]> = [
    [
      'body changed after signing',
      () => ({
        tamper: (r) => {
          r.body = r.body.replace('Encrypt', 'Decrypt');
        },
      }),
    ],
    [
      'path changed to another key',
      () => ({
        tamper: (r) => {
          r.path = r.path.replace('/foo/', '/impotent_key/');
        },
      }),
    ],
    [
      'host changed',
      () => ({
        tamper: (r) => {
          r.headers.host = 'xks.example.com';
        },
      }),
    ],
    [
      'X-Amz-Date changed',
      () => ({
        tamper: (r) => {
          // Another second of the same minute (a request signed at :00 once went through unchanged).
          const date = r.headers['x-amz-date'] ?? '';
          r.headers['x-amz-date'] = date.replace(/\d\dZ$/, date.endsWith('00Z') ? '01Z' : '00Z');
          assert.notEqual(r.headers['x-amz-date'], date);
        },
      }),
    ],
    ['signed 6 minutes ago', () => ({ date: minutes(-6) })],
    ['signed 6 minutes ahead', () => ({ date: minutes(6) })],
    ['unknown access key id', () => ({ credential: randomCredential() })],
    [
      'wrong secret',
      () => ({
        credential: {
          accessKeyId: proxy.credentials[0]?.accessKeyId as string,
          secretAccessKey: randomCredential().secretAccessKey,
        },
      }),
    ],
    ['another service in the scope', () => ({ signer: (req) => smithySign({ ...req, service: 'kms' }) })],
    ['a credential of another key store', () => ({ credential: proxy.credentials[2] })],
    [
      'no Authorization header',
      () => ({
        tamper: (r) => {
          delete r.headers.authorization;
        },
      }),
    ],
    [
      'x-amz-date not signed',
      () => ({
        tamper: (r) => {
          r.headers.authorization = (r.headers.authorization ?? '').replace(
            /SignedHeaders=[^,]+/,
            'SignedHeaders=host',
          );
        },
      }),
    ],
  ];
  for (const [name, options] of cases) {
    test(name, async () => {
      assert401(await proxy.xks('keys/foo/encrypt', encryptBody(), options()), name);
    });
  }

  test('within 4 minutes either way is accepted', async () => {
    assert.equal((await proxy.xks('health', health, { date: minutes(-4) })).status, 200);
    assert.equal((await proxy.xks('health', health, { date: minutes(4) })).status, 200);
  });
});

test('no SigV4 secret or PIN in the logs', async () => {
  assertNoLeaks(await proxy.settledOutput(), proxy.secrets, []);
});
