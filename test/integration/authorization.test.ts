// Secondary authorization with Cedar through the real local server: the shipped example policies
// decide, denials are 403 AccessDeniedException naming the deciding policy in the log, health is
// never authorized, and a broken policy stops the start-up.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { metadata, ROOT, type RunningProxy, startProxy } from '../helpers/proxy.ts';

const policy = (name: string) => join(ROOT, 'policies', `${name}.cedar`);
const encrypt = (extra: Record<string, string> = {}) => ({
  requestMetadata: metadata('Encrypt', { awsPrincipalArn: 'arn:aws:iam::111122223333:role/App', ...extra }),
  plaintext: randomBytes(32).toString('base64'),
  encryptionAlgorithm: 'AES_GCM',
});

describe('only-one-account.cedar', () => {
  let proxy: RunningProxy;
  before(async () => {
    proxy = await startProxy({
      configure: (config) => {
        (config.keystores[0] as (typeof config.keystores)[0]).policyFile = policy('only-one-account');
      },
    });
  });
  after(async () => {
    await proxy?.stop();
  });

  test('the account the policy names is permitted', async () => {
    assert.equal((await proxy.xks('keys/foo/encrypt', encrypt())).status, 200);
  });

  test('another account, a service principal: 403 AccessDeniedException, logged with the request id', async () => {
    for (const awsPrincipalArn of [
      'arn:aws:iam::999988887777:role/App',
      'ec2.amazonaws.com',
      'AWS Internal',
    ]) {
      const kmsRequestId = `deny-${randomBytes(3).toString('hex')}`;
      const res = await proxy.xks('keys/foo/encrypt', encrypt({ awsPrincipalArn, kmsRequestId }));
      assert.equal(res.status, 403, awsPrincipalArn);
      assert.equal(res.json.errorName, 'AccessDeniedException');
      const line = (await proxy.waitForOutput(new RegExp(`"kmsRequestId":"${kmsRequestId}"`)))
        .split('\n')
        .find((l) => l.includes(kmsRequestId) && l.includes('"XKS request"'));
      assert.match(line ?? '', /"authorization":"deny"/);
    }
  });

  test('GetHealthStatus is never authorized (spec: MUST be excluded)', async () => {
    const res = await proxy.xks('health', {
      requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' },
    });
    assert.equal(res.status, 200, res.text);
  });

  test('permitted requests log the policy that allowed them', async () => {
    await proxy.xks('keys/foo/encrypt', encrypt({ kmsRequestId: 'allow-1' }));
    const line = (await proxy.waitForOutput(/"kmsRequestId":"allow-1"/))
      .split('\n')
      .find((l) => l.includes('allow-1'));
    assert.match(line ?? '', /"authorization":"allow"/);
    assert.match(line ?? '', /"policyIds":\["allow-account-111122223333"\]/);
    assertNoLeaks(await proxy.settledOutput(), proxy.secrets, []);
  });
});

describe('future-operation-denied.cedar', () => {
  let proxy: RunningProxy;
  before(async () => {
    proxy = await startProxy({
      configure: (config) => {
        (config.keystores[0] as (typeof config.keystores)[0]).policyFile = policy('future-operation-denied');
      },
    });
  });
  after(async () => {
    await proxy?.stop();
  });

  test('a known kmsOperation passes; a future one is denied until the policy allows it', async () => {
    assert.equal(
      (await proxy.xks('keys/foo/encrypt', encrypt({ kmsOperation: 'GenerateDataKey' }))).status,
      200,
    );
    const future = await proxy.xks('keys/foo/encrypt', encrypt({ kmsOperation: 'BulkEncrypt' }));
    assert.equal(future.status, 403);
    assert.equal(future.json.errorName, 'AccessDeniedException');
  });
});

test('a broken policy stops the start-up with a message naming it', async () => {
  let failure: Error | undefined;
  try {
    const proxy = await startProxy({
      configure: (config, dir) => {
        const file = join(dir, 'broken.cedar');
        writeFileSync(file, 'permit (principal, action, resource) when { principal.account == };');
        (config.keystores[0] as (typeof config.keystores)[0]).policyFile = file;
      },
    });
    await proxy.stop();
  } catch (err) {
    failure = err as Error;
  }
  assert.ok(failure, 'the proxy must not start');
  assert.match(failure.message, /proxy exited with 1/);
  assert.match(failure.message, /broken\.cedar|policy|parse/i);
});
