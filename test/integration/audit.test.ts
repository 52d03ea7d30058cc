// The audit trail through the real proxy (spec: Logging, integrity of the logs): every request,
// refused or served, leaves one audit record in its log line; the chain of a process verifies
// with `xks-proxy audit verify`, and a removed, altered or renumbered record makes it fail.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type AuditRecord, auditRecordsIn, hashOf } from '../../functions/audit.ts';
import { assertNoLeaks } from '../helpers/leaks.ts';
import { metadata, ROOT, type RunningProxy, randomCredential, startProxy } from '../helpers/proxy.ts';

let proxy: RunningProxy;
let dir: string;
const plaintext = randomBytes(24);
const aad = randomBytes(16);

before(async () => {
  proxy = await startProxy();
  dir = mkdtempSync(join(tmpdir(), 'xks-audit-'));
});
after(async () => {
  await proxy?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function verify(lines: string[], ...flags: string[]) {
  const file = join(dir, `log-${randomBytes(4).toString('hex')}.txt`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  const run = spawnSync(
    process.execPath,
    [join(ROOT, 'bin/xks-proxy.ts'), 'audit', 'verify', file, ...flags],
    {
      encoding: 'utf8',
    },
  );
  return { status: run.status, out: run.stdout + run.stderr };
}

test('every request leaves an audit record; the chain verifies; tampering is found', async () => {
  const metadataWithVpc = metadata('Encrypt', { awsSourceVpc: 'vpc-0abc', awsSourceVpce: 'vpce-0def' });
  const enc = await proxy.xks('keys/foo/encrypt', {
    requestMetadata: metadataWithVpc,
    plaintext: plaintext.toString('base64'),
    additionalAuthenticatedData: aad.toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  });
  assert.equal(enc.status, 200, enc.text);
  const dec = await proxy.xks('keys/foo/decrypt', {
    requestMetadata: metadata('Decrypt'),
    encryptionAlgorithm: 'AES_GCM',
    additionalAuthenticatedData: aad.toString('base64'),
    ...enc.json,
  });
  assert.equal(dec.status, 200, dec.text);
  const badKey = await proxy.xks('keys/not-a-key/metadata', { requestMetadata: metadata('DescribeKey') });
  assert.equal(badKey.status, 404);
  const unsigned = await proxy.xks(
    'health',
    { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } },
    {
      credential: randomCredential(),
    },
  );
  assert.equal(unsigned.status, 401);

  const output = await proxy.settledOutput();
  const records = [...auditRecordsIn(output)];
  const requests = records.filter((r) => r.type === 'request');
  assert.equal(records.filter((r) => r.type === 'start').length, 1, 'one chain start per process');
  assert.ok(requests.length >= 4);
  const encRecord = requests.find((r) => r.operation === 'Encrypt' && r.outcome === 'success') as AuditRecord;
  assert.equal(encRecord.keyId, 'foo');
  assert.equal(encRecord.keyVersion, 1);
  assert.equal(encRecord.keystore !== undefined, true);
  assert.equal(encRecord.principal, metadataWithVpc.awsPrincipalArn);
  assert.equal(encRecord.sourceVpc, 'vpc-0abc');
  assert.equal(encRecord.sourceVpce, 'vpce-0def');
  assert.equal(encRecord.kmsOperation, 'Encrypt');
  assert.match(encRecord.hsm ?? '', /\S/);
  assert.equal(encRecord.accessKeyId, proxy.credentials[0]?.accessKeyId);
  const refused = requests.find((r) => r.statusCode === 401) as AuditRecord;
  assert.equal(refused.errorName, 'AuthenticationFailedException');
  assert.equal(refused.kmsRequestId, undefined, 'a refused request has no verified kmsRequestId');
  assert.equal(refused.unverifiedKmsRequestId, 'h');
  assert.equal(requests.find((r) => r.statusCode === 404)?.errorName, 'KeyNotFoundException');

  // Nothing secret in the records (and the whole output is scanned below).
  assertNoLeaks(JSON.stringify(records), proxy.secrets, [plaintext, aad]);

  const lines = output.split('\n').filter((l) => l.includes('"audit"'));
  const intact = verify(lines);
  assert.equal(intact.status, 0, intact.out);
  assert.match(intact.out, /^ok: \d+ audit records in 1 chain/m);

  const removed = verify(lines.filter((_, i) => i !== 2));
  assert.equal(removed.status, 1, removed.out);
  assert.match(removed.out, /missing after seq/);

  const altered = verify(
    lines.map((l, i) => {
      if (i !== 2) return l;
      const line = JSON.parse(l.slice(l.indexOf('{')));
      line.audit.outcome = line.audit.outcome === 'success' ? 'error' : 'success';
      return JSON.stringify(line);
    }),
  );
  assert.equal(altered.status, 1, altered.out);
  assert.match(altered.out, /altered/);

  // A forger who renumbers and rehashes a record still breaks the link to the next one.
  const forged = lines.map((l, i) => {
    if (i !== 1) return l;
    const line = JSON.parse(l.slice(l.indexOf('{')));
    line.audit.keyId = 'other';
    line.audit.hash = hashOf(line.audit);
    return JSON.stringify(line);
  });
  const forgedRun = verify(forged);
  assert.equal(forgedRun.status, 1, forgedRun.out);
  assert.match(forgedRun.out, /does not follow/);

  const noStart = verify(lines.slice(1));
  assert.equal(noStart.status, 1);
  assert.equal(verify(lines.slice(1), '--partial').status, 0);
});

test('the proxy printed no PIN, secret, plaintext or AAD', async () => {
  assertNoLeaks(await proxy.settledOutput(), proxy.secrets, [plaintext, aad]);
});
