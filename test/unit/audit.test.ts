// The MAC-chained audit trail (spec: Logging, integrity of the logs): the verifier finds every
// removed, altered, inserted, reordered or repeated record, and every chain recomputed without the
// audit key, and passes an intact chain.
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  AuditChain,
  type AuditRecord,
  auditRecordsIn,
  GENESIS,
  macOf,
  parseAuditKey,
  verifyAudit,
} from '../../functions/audit.ts';

const KEY = randomBytes(32);
const verify = (records: AuditRecord[], options: { partial?: boolean; fileOrder?: boolean } = {}) =>
  verifyAudit(records, { keys: [KEY], ...options });

function chainOf(n: number, id?: string): AuditRecord[] {
  const chain = new AuditChain(KEY, id);
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
  test('starts at seq 0 from 64 zeros, links every record to the previous MAC, verifies', () => {
    const records = chainOf(5);
    assert.equal(records[0]?.type, 'start');
    assert.equal(records[0]?.prev, GENESIS);
    for (let i = 1; i < records.length; i++) {
      assert.equal(records[i]?.seq, i);
      assert.equal(records[i]?.prev, records[i - 1]?.mac);
      assert.equal(macOf(records[i] as AuditRecord, KEY), records[i]?.mac);
    }
    assert.deepEqual(verify(records), { chains: 1, records: 6, problems: [] });
  });

  test('two interleaved chains (two Lambda environments in one export) verify independently', () => {
    const a = chainOf(3, 'a');
    const b = chainOf(3, 'b');
    const mixed = a.flatMap((r, i) => [r, b[i] as AuditRecord]);
    assert.deepEqual(verify(mixed).problems, []);
    assert.equal(verify(mixed).chains, 2);
  });

  test('the MAC does not depend on key order; undefined fields are left out', () => {
    const chain = new AuditChain(KEY, 'c');
    chain.start();
    const record = chain.next({ operation: 'Decrypt', errorName: undefined });
    assert.ok(!('errorName' in record));
    const reordered = Object.fromEntries(Object.entries(record).reverse()) as unknown as AuditRecord;
    assert.equal(macOf(reordered, KEY), record.mac);
  });

  test('records with any fields and values: the written MAC is the sorted-keys MAC the verifier computes, the logged JSON the record', () => {
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
        const chain = new AuditChain(KEY, 'property');
        const records = [chain.start(), ...list.map((f) => chain.next(f))];
        for (const record of records) {
          assert.equal(macOf(record, KEY), record.mac);
          // The record as its log line carries it (JSON, keys in any order): the same record, and
          // its MAC still matches.
          const logged = JSON.parse(JSON.stringify(record));
          assert.deepEqual(logged, record);
          assert.equal(macOf(logged, KEY), record.mac);
        }
        assert.deepEqual(verify(records).problems, []);
      }),
      { seed: 0x5eed, numRuns: 300 },
    );
  });

  test('a request record before the start marker is a programming error', () => {
    assert.throws(() => new AuditChain(KEY).next({}));
    const chain = new AuditChain(KEY);
    chain.start();
    assert.throws(() => chain.start());
  });
});

describe('tampering is found', () => {
  test('a removed record', () => {
    const records = chainOf(5);
    records.splice(3, 1);
    assert.match(verify(records).problems.join('\n'), /seq 4: 1 record\(s\) missing after seq 2/);
  });

  test('the removed start marker', () => {
    const records = chainOf(3).slice(1);
    assert.match(verify(records).problems.join('\n'), /start marker is missing/);
    // An excerpt of a longer log may begin mid-chain, when the caller says so.
    assert.deepEqual(verify(records, { partial: true }).problems, []);
  });

  test('an altered field (outcome, key id, principal), with or without a recomputed MAC', () => {
    for (const change of [
      (r: AuditRecord) => Object.assign(r, { outcome: 'error' }),
      (r: AuditRecord) => Object.assign(r, { keyId: 'bar' }),
      (r: AuditRecord) => Object.assign(r, { principal: 'arn:aws:iam::1:root' }),
      (r: AuditRecord) => Object.assign(r, { latencyMs: 0 }),
    ]) {
      const records = chainOf(4);
      change(records[2] as AuditRecord);
      assert.match(verify(records).problems.join('\n'), /seq 2: altered/);
      // A forger with the key who recomputes the MAC breaks the link to the next record instead.
      (records[2] as AuditRecord).mac = macOf(records[2] as AuditRecord, KEY);
      assert.match(verify(records).problems.join('\n'), /seq 3: does not follow seq 2/);
    }
  });

  test('reordered records: renumbered to tell another order, or only moved (fileOrder)', () => {
    const records = chainOf(5);
    // Presenting another order means changing sequence numbers: the links then disagree.
    const [r2, r3] = [records[2] as AuditRecord, records[3] as AuditRecord];
    records[2] = { ...r3, seq: 2 };
    records[3] = { ...r2, seq: 3 };
    assert.match(verify(records).problems.join('\n'), /seq 2: altered/);
    // Lines only moved: the history the chain tells is unchanged (sequence order); with
    // fileOrder, for a log whose order is itself guaranteed, the move is found.
    const moved = chainOf(5);
    [moved[2], moved[3]] = [moved[3] as AuditRecord, moved[2] as AuditRecord];
    assert.deepEqual(verify(moved).problems, []);
    const problems = verify(moved, { fileOrder: true }).problems.join('\n');
    assert.match(problems, /missing after seq 1|out of order/);
    assert.match(problems, /out of order or repeated after seq 3/);
  });

  test('a repeated (replayed) record and an inserted forged one', () => {
    const records = chainOf(4);
    records.splice(3, 0, records[2] as AuditRecord);
    assert.match(verify(records).problems.join('\n'), /seq 2: out of order or repeated after seq 2/);

    const forged = chainOf(4);
    const fake = { ...(forged[2] as AuditRecord), kmsRequestId: 'forged' };
    fake.mac = macOf(fake, KEY);
    forged.splice(3, 1, { ...fake, seq: 3, prev: (forged[2] as AuditRecord).mac, mac: '' });
    (forged[3] as AuditRecord).mac = macOf(forged[3] as AuditRecord, KEY);
    assert.match(verify(forged).problems.join('\n'), /seq 4: does not follow seq 3/);
  });
});

describe('without the key, a changed chain cannot be made to verify', () => {
  /** Changes record `at`, then recomputes it and every later link with `mac`, as a forger would. */
  function forge(records: AuditRecord[], at: number, mac: (record: AuditRecord) => string): AuditRecord[] {
    const forged = records.map((r) => ({ ...r }));
    Object.assign(forged[at] as AuditRecord, {
      principal: 'arn:aws:iam::444455556666:user/Mallory',
      statusCode: 200,
    });
    for (let i = at; i < forged.length; i++) {
      const record = forged[i] as AuditRecord;
      if (i > at) record.prev = (forged[i - 1] as AuditRecord).mac;
      record.mac = mac(record);
    }
    return forged;
  }
  const canonicalOf = (record: AuditRecord) => {
    // What a forger who knows the format computes: the same canonical JSON as the verifier.
    const sorted = Object.fromEntries(
      Object.entries(record)
        .filter(([k]) => k !== 'mac')
        .sort(([a], [b]) => (a < b ? -1 : 1)),
    );
    return JSON.stringify(sorted);
  };

  test('every later MAC recomputed with plain SHA-256: each forged record fails', () => {
    const forged = forge(chainOf(5), 2, (r) => createHash('sha256').update(canonicalOf(r)).digest('hex'));
    const problems = verify(forged).problems;
    for (const seq of [2, 3, 4, 5])
      assert.ok(
        problems.some((p) => p.includes(`seq ${seq}: altered`)),
        problems.join('\n'),
      );
  });

  test('every later MAC recomputed as HMAC under a wrong key: each forged record fails', () => {
    const wrong = randomBytes(32);
    const forged = forge(chainOf(5), 2, (r) =>
      createHmac('sha256', wrong).update(canonicalOf(r)).digest('hex'),
    );
    assert.equal(macOf(forged[3] as AuditRecord, wrong), forged[3]?.mac, 'the forgery is self-consistent');
    const problems = verify(forged).problems;
    for (const seq of [2, 3, 4, 5])
      assert.ok(
        problems.some((p) => p.includes(`seq ${seq}: altered`)),
        problems.join('\n'),
      );
    // A whole chain made up under another key verifies under that key only.
    const made = new AuditChain(wrong, 'made-up');
    const madeUp = [made.start(), made.next({ operation: 'Encrypt' })];
    assert.equal(verify(madeUp).problems.length, 2);
    assert.deepEqual(verifyAudit(madeUp, { keys: [wrong] }).problems, []);
  });

  test('the same forgery with the key passes the MACs: the key is what the chain rests on', () => {
    const forged = forge(chainOf(5), 2, (r) => macOf(r, KEY));
    assert.deepEqual(verify(forged).problems, []);
  });

  test('unkeyed records (no MAC) are refused; several keys verify each chain with its own (rotation)', () => {
    const records = chainOf(2).map(({ mac: _mac, ...rest }) => rest as AuditRecord);
    assert.match(verify(records).problems.join('\n'), /seq 0: not keyed/);
    const newKey = randomBytes(32);
    const rotated = new AuditChain(newKey, 'after-rotation');
    const both = [...chainOf(2, 'before-rotation'), rotated.start(), rotated.next({ operation: 'Decrypt' })];
    assert.equal(verify(both).problems.length, 2);
    assert.deepEqual(verifyAudit(both, { keys: [KEY, newKey] }).problems, []);
  });

  test('audit keys: at least 32 bytes of hex, plain or {"key": ...}; the message never quotes the text', () => {
    const hex = randomBytes(32).toString('hex');
    assert.deepEqual(parseAuditKey(`${hex}\n`, 'f'), Buffer.from(hex, 'hex'));
    assert.deepEqual(parseAuditKey(JSON.stringify({ key: hex }), 'f'), Buffer.from(hex, 'hex'));
    for (const bad of [
      hex.slice(0, 62),
      `${hex}z`,
      'secret-words-that-are-not-hex-at-all-and-long-enough-to-count',
      '',
    ]) {
      assert.throws(
        () => parseAuditKey(bad, 'audit.keyFile'),
        (e: Error) => /at least 32 bytes of hex/.test(e.message) && (bad === '' || !e.message.includes(bad)),
      );
    }
    assert.throws(() => new AuditChain(randomBytes(16)), /at least 32 bytes/);
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
