// Access control beyond a valid signature, through the real local server: mutual TLS with
// certificates made here (as API Gateway, or as an ALB in verify mode, whose client certificate
// headers a client cannot forge), credential rotation from a local file without restart, the per
// key store quota, and isolation between key stores. Refusals are logged, secrets never.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeCertificates, type TestCertificates } from '../helpers/certs.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import {
  metadata,
  PREFIX,
  type RunningProxy,
  randomCredential,
  startProxy,
  TEST_FRONT_DOOR,
} from '../helpers/proxy.ts';
import type { Credential } from '../helpers/sign.ts';

const encryptBody = (kmsRequestId?: string) => ({
  requestMetadata: metadata('Encrypt', kmsRequestId ? { kmsRequestId } : {}),
  plaintext: randomBytes(32).toString('base64'),
  encryptionAlgorithm: 'AES_GCM',
});

describe('mutual TLS (local server)', () => {
  let certs: TestCertificates;
  let proxy: RunningProxy;
  before(async () => {
    certs = makeCertificates();
    proxy = await startProxy({
      configure: (config) => {
        config.clientCertificate = { allowedCommonNames: ['cks.kms.*.amazonaws.com'], caFile: certs.caFile };
      },
    });
  });
  after(async () => {
    await proxy?.stop();
    rmSync(certs.dir, { recursive: true, force: true });
  });

  test("KMS's certificate (right CA, cks.kms.<region>.amazonaws.com) is served", async () => {
    for (const clientCert of [certs.good, certs.otherRegion]) {
      const res = await proxy.xks('keys/foo/encrypt', encryptBody(), { clientCert });
      assert.equal(res.status, 200, res.text);
    }
  });

  const refused: Array<[string, keyof TestCertificates | undefined]> = [
    ['no client certificate', undefined],
    ['a certificate of another CA', 'otherCa'],
    ['an expired certificate', 'expired'],
    ['a self-signed certificate', 'selfSigned'],
  ];
  // An ALB in verify mode checks the chain only: the subject is the handler's to check.
  if (TEST_FRONT_DOOR === 'apigateway') refused.push(['the right CA but another subject CN', 'wrongCn']);
  for (const [name, which] of refused) {
    test(`${name}: the connection is cut before any request is read`, async () => {
      const clientCert = which === undefined ? 'none' : (certs[which] as { cert: Buffer; key: Buffer });
      // The previous test's lines first: they may still be on their way through the pipe.
      const before = (await proxy.settledOutput()).length;
      await assert.rejects(
        proxy.xks('keys/foo/encrypt', encryptBody(), { clientCert }),
        (err: NodeJS.ErrnoException) =>
          /ECONNRESET|socket hang up|alert|certificate|EPIPE/i.test(`${err.code} ${err.message}`),
      );
      await new Promise((r) => setTimeout(r, 100));
      assert.doesNotMatch(proxy.output().slice(before), /"message":"XKS request"/, 'no handler ran');
    });
  }

  if (TEST_FRONT_DOOR === 'alb') {
    test('the right CA but another subject CN: 401 from the handler, which reads the subject ALB passes on', async () => {
      const res = await proxy.xks('keys/foo/encrypt', encryptBody(), { clientCert: certs.wrongCn });
      assert.equal(res.status, 401, res.text);
      assert.equal(res.json.errorMessage, 'mTLS client certificate missing or not allowed');
    });
  }

  test("a client's own X-Amzn-Mtls-Clientcert-Subject header never stands for a certificate", async () => {
    const forge = (subject: string) => ({
      tamper: (req: { headers: Record<string, string> }) => {
        req.headers['X-Amzn-Mtls-Clientcert-Subject'] = subject;
      },
    });
    // An allowed subject, claimed beside a certificate whose CN is not allowed.
    const claimed = await proxy
      .xks('keys/foo/encrypt', encryptBody(), {
        clientCert: certs.wrongCn,
        ...forge('CN=cks.kms.eu-west-1.amazonaws.com'),
      })
      .catch(() => undefined);
    assert.notEqual(claimed?.status, 200, 'the claimed subject was believed');
    // Beside KMS's own certificate: behind an ALB that is a second subject, refused; API Gateway
    // passes the certificate out of band, and the header is just a header.
    const beside = await proxy.xks('keys/foo/encrypt', encryptBody(), {
      clientCert: certs.good,
      ...forge('CN=cks.kms.eu-west-1.amazonaws.com'),
    });
    assert.equal(beside.status, TEST_FRONT_DOOR === 'alb' ? 401 : 200, beside.text);
  });

  test('still serving the right client after all that', async () => {
    assert.equal(
      (await proxy.xks('keys/foo/encrypt', encryptBody(), { clientCert: certs.good })).status,
      200,
    );
  });
});

describe('credential rotation from a local file, without restart', () => {
  let proxy: RunningProxy;
  let file: string;
  const oldCredential = randomCredential();
  const newCredential = randomCredential();
  const write = (credentials: Credential[]) => {
    // As the CLI does it: a new file renamed over the old one, never a half-written file.
    writeFileSync(`${file}.tmp`, JSON.stringify({ credentials }), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  };

  before(async () => {
    proxy = await startProxy({
      configure: (config, dir) => {
        const ks = config.keystores[0] as (typeof config.keystores)[0];
        file = join(dir, 'credentials.json');
        delete ks.credentials;
        ks.credentialsFile = file;
      },
      beforeStart: () => write([oldCredential]),
    });
  });
  after(async () => {
    await proxy?.stop();
  });

  test('add the new credential, both work, remove the old one, the old one fails: no request with a valid credential fails', async () => {
    const call = (credential: Credential) =>
      proxy.xks(
        'health',
        { requestMetadata: { kmsRequestId: 'r', kmsOperation: 'KmsHealthCheck' } },
        { credential },
      );
    assert.equal((await call(oldCredential)).status, 200);
    assert.equal((await call(newCredential)).status, 401, 'not yet known');

    write([oldCredential, newCredential]);
    let newWorks = false;
    for (const deadline = Date.now() + 5000; !newWorks && Date.now() < deadline; ) {
      assert.equal((await call(oldCredential)).status, 200, 'the old credential keeps working meanwhile');
      newWorks = (await call(newCredential)).status === 200;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(newWorks, 'the new credential works without a restart');

    write([newCredential]);
    let oldRefused = false;
    for (const deadline = Date.now() + 5000; !oldRefused && Date.now() < deadline; ) {
      assert.equal((await call(newCredential)).status, 200, 'the new credential keeps working meanwhile');
      oldRefused = (await call(oldCredential)).status === 401;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(oldRefused, 'the removed credential is refused');
  });

  test('a broken credentials file keeps the credentials known before', async () => {
    writeFileSync(file, '{"credentials": [', { mode: 0o600 });
    await new Promise((r) => setTimeout(r, 1200));
    const res = await proxy.xks(
      'health',
      { requestMetadata: { kmsRequestId: 'r', kmsOperation: 'KmsHealthCheck' } },
      { credential: newCredential },
    );
    assert.equal(res.status, 200);
    await proxy.waitForOutput(/keeping the previous ones/);
    assertNoLeaks(
      await proxy.settledOutput(),
      [...proxy.secrets, oldCredential.secretAccessKey, newCredential.secretAccessKey],
      [],
    );
  });
});

describe('quota and isolation', () => {
  let proxy: RunningProxy;
  before(async () => {
    proxy = await startProxy({
      configure: (config) => {
        (config.keystores[0] as (typeof config.keystores)[0]).throttle = { rateLimit: 5, burstLimit: 5 };
      },
    });
  });
  after(async () => {
    await proxy?.stop();
  });

  test('over the key store quota: 429 ThrottlingException, logged with its kmsRequestId; refilled over time', async () => {
    const results = [];
    for (let i = 0; i < 10; i++) results.push(await proxy.xks('keys/foo/encrypt', encryptBody(`quota-${i}`)));
    const statuses = results.map((r) => r.status);
    assert.ok(
      statuses.slice(0, 4).every((s) => s === 200),
      statuses.join(),
    );
    const throttled = results.filter((r) => r.status === 429);
    assert.ok(throttled.length >= 4, statuses.join());
    assert.equal(throttled[0]?.json.errorName, 'ThrottlingException');
    // The other key store has no quota and is not affected.
    const other = await proxy.xks(
      'health',
      { requestMetadata: { kmsRequestId: 'x', kmsOperation: 'KmsHealthCheck' } },
      {
        prefix: '',
        credential: proxy.credentials[2],
        region: 'eu-west-1',
      },
    );
    assert.equal(other.status, 200, other.text);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await proxy.xks('keys/foo/encrypt', encryptBody())).status, 200, 'refilled');
    const output = await proxy.settledOutput();
    assert.match(
      output,
      /"kmsRequestId":"quota-\d".*"errorName":"ThrottlingException"|"errorName":"ThrottlingException".*"kmsRequestId":"quota-\d"/,
    );
  });

  test("key store A's credentials cannot reach key store B, nor B's keys through A", async () => {
    const [aCredential, , bCredential] = proxy.credentials;
    // A's credential on B's prefix (''), and B's on A's.
    const aOnB = await proxy.xks(
      'keys/foo/metadata',
      { requestMetadata: metadata('CreateKey') },
      { prefix: '', credential: aCredential, region: 'eu-west-1' },
    );
    assert.equal(aOnB.status, 401);
    const bOnA = await proxy.xks(
      'keys/foo/metadata',
      { requestMetadata: metadata('CreateKey') },
      { prefix: PREFIX, credential: bCredential, region: 'eu-west-1' },
    );
    assert.equal(bOnA.status, 401);
    // B lists only foo: the HSM's other keys are not found through B.
    const bKey = await proxy.xks(
      'keys/encrypt_only_key/metadata',
      { requestMetadata: metadata('CreateKey') },
      { prefix: '', credential: bCredential, region: 'eu-west-1' },
    );
    assert.equal(bKey.status, 404);
    assert.equal(bKey.json.errorName, 'KeyNotFoundException');
  });

  test('refusals are logged with the request id, never with a secret', async () => {
    await proxy.xks(
      'keys/foo/metadata',
      { requestMetadata: metadata('CreateKey', { kmsRequestId: 'refused-1' }) },
      {
        credential: randomCredential(),
      },
    );
    const output = await proxy.settledOutput();
    assert.match(output, /"unverifiedKmsRequestId":"refused-1"/);
    assertNoLeaks(output, proxy.secrets, []);
  });
});
