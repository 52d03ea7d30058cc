// The audit trail through the real proxy (spec: Logging, integrity of the logs): every request,
// refused or served, leaves one audit record in its log line; the chain of a process verifies
// with `xks-proxy audit verify`, and a removed, altered or renumbered record makes it fail.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type AuditRecord, auditRecordsIn, macOf, parseAuditKey } from '../../functions/audit.ts';
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
  const keyFlags = flags.includes('--key-file') ? [] : ['--key-file', proxy.auditKeyFile];
  const run = spawnSync(
    process.execPath,
    [join(ROOT, 'bin/xks-proxy.ts'), 'audit', 'verify', ...keyFlags, file, ...flags],
    { encoding: 'utf8' },
  );
  return { status: run.status, out: run.stdout + run.stderr };
}

/**
 * The log with record `at` changed (its principal and status: a refusal made to look like a
 * success), then it and every later record re-linked and given a new MAC by `mac`: the forgery of
 * someone who can rewrite the logs.
 */
function forge(lines: string[], at: number, mac: (audit: AuditRecord) => string): string[] {
  let prev = '';
  return lines.map((l, i) => {
    if (i < at) return l;
    const line = JSON.parse(l.slice(l.indexOf('{')));
    if (i === at)
      Object.assign(line.audit, {
        principal: 'arn:aws:iam::444455556666:user/Mallory',
        statusCode: 200,
        outcome: 'success',
      });
    else line.audit.prev = prev;
    line.audit.mac = mac(line.audit);
    prev = line.audit.mac;
    return JSON.stringify(line);
  });
}

/** The canonical JSON a forger who knows the format hashes (sorted keys, the MAC left out). */
function canonicalOf(audit: AuditRecord): string {
  const sorted = Object.entries(audit)
    .filter(([k]) => k !== 'mac')
    .sort(([a], [b]) => (a < b ? -1 : 1));
  return JSON.stringify(Object.fromEntries(sorted));
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

  const inserted = [...lines.slice(0, 3), lines[2] as string, ...lines.slice(3)];
  const insertedRun = verify(inserted);
  assert.equal(insertedRun.status, 1, insertedRun.out);
  assert.match(insertedRun.out, /repeated/);

  // Someone who can rewrite the logs but has no key: a record changed and every later one re-linked,
  // with plain SHA-256 or with a key of their own. Each fails.
  const sha256 = verify(forge(lines, 2, (a) => createHash('sha256').update(canonicalOf(a)).digest('hex')));
  assert.equal(sha256.status, 1, sha256.out);
  assert.match(sha256.out, /seq 2: altered, or written without the audit key/);
  const ownKey = randomBytes(32);
  const wrongKey = verify(
    forge(lines, 2, (a) => createHmac('sha256', ownKey).update(canonicalOf(a)).digest('hex')),
  );
  assert.equal(wrongKey.status, 1, wrongKey.out);
  assert.equal(
    (wrongKey.out.match(/altered, or written without the audit key/g) ?? []).length,
    lines.length - 2,
  );
  // With the key the same forgery would pass the MACs: the key is what protects the chain.
  const key = parseAuditKey(readFileSync(proxy.auditKeyFile, 'utf8'), 'key');
  assert.equal(verify(forge(lines, 2, (a) => macOf(a, key))).status, 0);
  // The key is needed, and the wrong key fails the intact log.
  const otherKeyFile = join(dir, 'other.key');
  writeFileSync(otherKeyFile, randomBytes(32).toString('hex'));
  assert.equal(verify(lines, '--key-file', otherKeyFile).status, 1);
  const noKey = spawnSync(
    process.execPath,
    [join(ROOT, 'bin/xks-proxy.ts'), 'audit', 'verify', otherKeyFile],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(noKey.status, 2, noKey.stderr);
  assert.match(noKey.stderr, /needs the audit key/);

  const noStart = verify(lines.slice(1));
  assert.equal(noStart.status, 1);
  assert.equal(verify(lines.slice(1), '--partial').status, 0);
});

test('the proxy printed no PIN, secret, plaintext or AAD', async () => {
  assertNoLeaks(await proxy.settledOutput(), proxy.secrets, [plaintext, aad]);
});
