// The hash-chained audit trail (spec: Logging, integrity of the logs): the verifier finds every
// removed, altered, inserted, reordered or repeated record, and passes an intact chain.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  AuditChain,
  type AuditRecord,
  auditJson,
  auditRecordsIn,
  GENESIS,
  hashOf,
  verifyAudit,
} from '../../functions/audit.ts';

function chainOf(n: number, id?: string): AuditRecord[] {
  const chain = new AuditChain(id);
  const records = [chain.start(new Date(0))];
  for (let i = 1; i <= n; i++) {
    records.push(
      chain.next(
        {
          operation: 'Encrypt',
          kmsRequestId: `req-${i}`,
          keyId: 'foo',
          keyVersion: 1,
          outcome: 'success',
          statusCode: 200,
          latencyMs: i / 10,
        },
        new Date(i * 1000),
      ),
    );
  }
  return records;
}

describe('an intact chain', () => {
  test('starts at seq 0 from 64 zeros, links every record to the previous hash, verifies', () => {
    const records = chainOf(5);
    assert.equal(records[0]?.type, 'start');
    assert.equal(records[0]?.prev, GENESIS);
    for (let i = 1; i < records.length; i++) {
      assert.equal(records[i]?.seq, i);
      assert.equal(records[i]?.prev, records[i - 1]?.hash);
      assert.equal(hashOf(records[i] as AuditRecord), records[i]?.hash);
    }
    assert.deepEqual(verifyAudit(records), { chains: 1, records: 6, problems: [] });
  });

  test('two interleaved chains (two Lambda environments in one export) verify independently', () => {
    const a = chainOf(3, 'a');
    const b = chainOf(3, 'b');
    const mixed = a.flatMap((r, i) => [r, b[i] as AuditRecord]);
    assert.deepEqual(verifyAudit(mixed).problems, []);
    assert.equal(verifyAudit(mixed).chains, 2);
  });

  test('the hash does not depend on key order; undefined fields are left out', () => {
    const chain = new AuditChain('c');
    chain.start();
    const record = chain.next({ operation: 'Decrypt', errorName: undefined });
    assert.ok(!('errorName' in record));
    const reordered = Object.fromEntries(Object.entries(record).reverse()) as unknown as AuditRecord;
    assert.equal(hashOf(reordered), record.hash);
  });

  test('records with any fields and values: the written hash is the sorted-keys hash the verifier computes, the logged JSON the record', () => {
    const text = fc.option(fc.string({ unit: 'binary' }), { nil: undefined });
    const count = fc.option(fc.integer({ min: 0, max: 2 ** 31 }), { nil: undefined });
    const fields = fc.record({
      operation: text,
      kmsRequestId: text,
      unverifiedKmsRequestId: text,
      kmsOperation: text,
      keystore: text,
      keyId: text,
      keyVersion: count,
      principal: text,
      sourceVpc: text,
      sourceVpce: text,
      accessKeyId: text,
      decision: text,
      policyIds: fc.option(fc.array(fc.string({ unit: 'binary' }), { maxLength: 3 }), { nil: undefined }),
      outcome: fc.option(fc.constantFrom('success' as const, 'error' as const), { nil: undefined }),
      statusCode: count,
      errorName: text,
      hsm: text,
      latencyMs: fc.option(fc.double({ min: 0, max: 1e6, noNaN: true }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(fields, { minLength: 1, maxLength: 5 }), (list) => {
        const chain = new AuditChain('property');
        const records = [chain.start(), ...list.map((f) => chain.next(f))];
        for (const record of records) {
          assert.equal(hashOf(record), record.hash);
          // The log line's JSON of the record, made while hashing it: the same record.
          assert.deepEqual(JSON.parse(auditJson(record)), record);
        }
        assert.deepEqual(verifyAudit(records).problems, []);
      }),
      { seed: 0x5eed, numRuns: 300 },
    );
  });

  test('a request record before the start marker is a programming error', () => {
    assert.throws(() => new AuditChain().next({}));
    const chain = new AuditChain();
    chain.start();
    assert.throws(() => chain.start());
  });
});

describe('tampering is found', () => {
  test('a removed record', () => {
    const records = chainOf(5);
    records.splice(3, 1);
    assert.match(verifyAudit(records).problems.join('\n'), /seq 4: 1 record\(s\) missing after seq 2/);
  });

  test('the removed start marker', () => {
    const records = chainOf(3).slice(1);
    assert.match(verifyAudit(records).problems.join('\n'), /start marker is missing/);
    // An excerpt of a longer log may begin mid-chain, when the caller says so.
    assert.deepEqual(verifyAudit(records, { partial: true }).problems, []);
  });

  test('an altered field (outcome, key id, principal), with or without a recomputed hash', () => {
    for (const change of [
      (r: AuditRecord) => Object.assign(r, { outcome: 'error' }),
      (r: AuditRecord) => Object.assign(r, { keyId: 'bar' }),
      (r: AuditRecord) => Object.assign(r, { principal: 'arn:aws:iam::1:root' }),
      (r: AuditRecord) => Object.assign(r, { latencyMs: 0 }),
    ]) {
      const records = chainOf(4);
      change(records[2] as AuditRecord);
      assert.match(verifyAudit(records).problems.join('\n'), /seq 2: altered/);
      // A forger who recomputes the hash breaks the link to the next record instead.
      (records[2] as AuditRecord).hash = hashOf(records[2] as AuditRecord);
      assert.match(verifyAudit(records).problems.join('\n'), /seq 3: does not follow seq 2/);
    }
  });

  test('reordered records: renumbered to tell another order, or only moved (fileOrder)', () => {
    const records = chainOf(5);
    // Presenting another order means changing sequence numbers: the links then disagree.
    const [r2, r3] = [records[2] as AuditRecord, records[3] as AuditRecord];
    records[2] = { ...r3, seq: 2 };
    records[3] = { ...r2, seq: 3 };
    assert.match(verifyAudit(records).problems.join('\n'), /seq 2: altered/);
    // Lines only moved: the history the chain tells is unchanged (sequence order); with
    // fileOrder, for a log whose order is itself guaranteed, the move is found.
    const moved = chainOf(5);
    [moved[2], moved[3]] = [moved[3] as AuditRecord, moved[2] as AuditRecord];
    assert.deepEqual(verifyAudit(moved).problems, []);
    const problems = verifyAudit(moved, { fileOrder: true }).problems.join('\n');
    assert.match(problems, /missing after seq 1|out of order/);
    assert.match(problems, /out of order or repeated after seq 3/);
  });

  test('a repeated (replayed) record and an inserted forged one', () => {
    const records = chainOf(4);
    records.splice(3, 0, records[2] as AuditRecord);
    assert.match(verifyAudit(records).problems.join('\n'), /seq 2: out of order or repeated after seq 2/);

    const forged = chainOf(4);
    const fake = { ...(forged[2] as AuditRecord), kmsRequestId: 'forged' };
    fake.hash = hashOf(fake);
    forged.splice(3, 1, { ...fake, seq: 3, prev: (forged[2] as AuditRecord).hash, hash: '' });
    (forged[3] as AuditRecord).hash = hashOf(forged[3] as AuditRecord);
    assert.match(verifyAudit(forged).problems.join('\n'), /seq 4: does not follow seq 3/);
  });
});

test('auditRecordsIn: finds the audit object in JSON log lines, with or without a CloudWatch prefix', () => {
  const records = chainOf(2);
  const text = [
    JSON.stringify({ level: 'INFO', message: 'Audit chain start', audit: records[0] }),
    'not json',
    `2026-11-28T00:00:00.000Z\tabc-123\tINFO\t${JSON.stringify({ message: 'XKS request', audit: records[1] })}`,
    JSON.stringify({ message: 'no audit here' }),
    JSON.stringify({ message: 'XKS request', audit: records[2] }),
  ].join('\n');
  const found = [...auditRecordsIn(text)];
  assert.deepEqual(found, records);
});
