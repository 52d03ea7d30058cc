// The revocation switch (functions/revocation.ts) and its CLI (bin/revocation.ts): the document's
// rules, when the switch reads its source again (a thawed Lambda environment included), what it
// keeps when a read fails, and the changes it reports.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FileStore } from '../../bin/credentials.ts';
import { REVOCATION_FORMAT, revocationMain } from '../../bin/revocation.ts';
import {
  parseRevocation,
  type RevocationChange,
  type RevocationHooks,
  RevocationSwitch,
} from '../../functions/revocation.ts';

const dir = mkdtempSync(join(tmpdir(), 'xks-revocation-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('the document', () => {
  test('entries: "*", a key store, or a key store and an externalKeyId', () => {
    const doc = parseRevocation('{"revoked":["*","payments","payments/key-1.v2_x"],"note":"kept"}', 'f');
    assert.deepEqual(doc.revoked, ['*', 'payments', 'payments/key-1.v2_x']);
  });

  test('anything else is refused, naming the source and the rule, never the text', () => {
    for (const text of [
      'not json',
      '[]',
      '{}',
      '{"revoked":"payments"}',
      '{"revoked":[1]}',
      '{"revoked":["a/b/c"]}',
      '{"revoked":["pay ments"]}',
      '{"revoked":["/key"]}',
      `{"revoked":["${'k'.repeat(65)}"]}`,
    ]) {
      assert.throws(
        () => parseRevocation(text, 'secretsmanager:x'),
        (e: Error) => e.message.startsWith('secretsmanager:x: ') && !e.message.includes(text),
        text,
      );
    }
  });
});

/** A switch over a fake Secrets Manager whose value and failures the test sets. */
function secretSwitch(cacheSeconds: number) {
  let value = '{"revoked":[]}';
  let failing = false;
  let reads = 0;
  const changes: RevocationChange[][] = [];
  const errors: unknown[] = [];
  const hooks: RevocationHooks = {
    readSecret: async () => {
      reads++;
      if (failing) throw new Error('ThrottlingException');
      return value;
    },
    readFile: () => assert.fail('no file'),
    onChange: (c) => changes.push(c),
    onError: (e) => errors.push(e),
  };
  const sw = new RevocationSwitch({ secretArn: 'arn:secret', cacheSeconds }, hooks);
  return {
    sw,
    changes,
    errors,
    reads: () => reads,
    set: (v: string) => {
      value = v;
    },
    fail: (f: boolean) => {
      failing = f;
    },
  };
}

describe('the switch', () => {
  test('a key, a key store, every key store: the reason a request gets, and nothing else cut off', async () => {
    const s = secretSwitch(5);
    s.set('{"revoked":["a/k1","b"]}');
    await s.sw.load();
    assert.equal(s.sw.reason('a', 'k1'), 'The external key is revoked');
    assert.equal(s.sw.reason('a', 'k2'), undefined);
    assert.equal(s.sw.reason('a'), undefined, 'key store a itself is not revoked');
    assert.equal(s.sw.reason('b', 'anything'), 'The external key store is revoked');
    assert.equal(s.sw.reason('b'), 'The external key store is revoked');
    assert.equal(s.sw.reason('c', 'k1'), undefined);
    assert.deepEqual(s.changes, [
      [
        { entry: 'a/k1', revoked: true },
        { entry: 'b', revoked: true },
      ],
    ]);
  });

  test('read again only once the value is older than cacheSeconds; then the request waits for it', async () => {
    const s = secretSwitch(5);
    const t0 = Date.now();
    await s.sw.load();
    assert.equal(s.reads(), 1);
    assert.equal(s.sw.refreshIfDue(t0 + 1000), undefined, 'fresh: no read, nothing to wait for');
    s.set('{"revoked":["a"]}');
    // A Lambda environment frozen for an hour: its first request finds the value old and waits.
    const due = s.sw.refreshIfDue(t0 + 3_600_000);
    assert.ok(due instanceof Promise);
    // Requests meanwhile share the one read.
    assert.equal(s.sw.refreshIfDue(t0 + 3_600_000), due);
    await due;
    assert.equal(s.reads(), 2);
    assert.equal(s.sw.reason('a', 'k'), 'The external key store is revoked');
    assert.deepEqual(s.changes.at(-1), [{ entry: 'a', revoked: true }]);
    s.set('{"revoked":[]}');
    await s.sw.refreshIfDue(Date.now() + 5000);
    assert.equal(s.sw.reason('a', 'k'), undefined);
    assert.deepEqual(s.changes.at(-1), [{ entry: 'a', revoked: false }]);
  });

  test('a read that fails keeps what the switch said, is reported, and is tried again a second later', async () => {
    const s = secretSwitch(2);
    s.set('{"revoked":["a"]}');
    await s.sw.load();
    s.fail(true);
    await s.sw.refreshIfDue(Date.now() + 2000);
    assert.equal(s.errors.length, 1);
    assert.equal(s.sw.reason('a'), 'The external key store is revoked', 'still revoked');
    const reads = s.reads();
    assert.equal(s.sw.refreshIfDue(Date.now() + 500), undefined, 'not on every request');
    await s.sw.refreshIfDue(Date.now() + 1100);
    assert.equal(s.reads(), reads + 1);
    s.fail(false);
    s.set('{"revoked":[]}');
    await s.sw.refreshIfDue(Date.now() + 2100);
    assert.equal(s.sw.reason('a'), undefined);
  });

  test('the first read failing stops the start', async () => {
    const s = secretSwitch(5);
    s.fail(true);
    await assert.rejects(s.sw.load(), /ThrottlingException/);
    const bad = secretSwitch(5);
    bad.set('{"revoked":[7]}');
    await assert.rejects(bad.sw.load(), /secretsmanager:arn:secret/);
  });

  test('a file: read when its version changes, synchronously, at most once a second', async () => {
    let version = '1';
    let text = '{"revoked":[]}';
    let reads = 0;
    const sw = new RevocationSwitch(
      { file: '/x', cacheSeconds: 5 },
      {
        readSecret: () => assert.fail('no secret'),
        readFile: () => {
          reads++;
          return { text, version };
        },
        onChange: () => {},
        onError: () => {},
      },
    );
    await sw.load();
    text = '{"revoked":["a"]}';
    version = '2';
    assert.equal(sw.refreshIfDue(Date.now() + 500), undefined);
    assert.equal(reads, 1, 'not yet');
    assert.equal(sw.refreshIfDue(Date.now() + 1000), undefined, 'a file never makes a request wait');
    assert.equal(reads, 2);
    assert.equal(sw.reason('a'), 'The external key store is revoked');
  });
});

describe('xks-proxy revocation', () => {
  const io = () => {
    const lines: string[] = [];
    return { lines, io: { out: (l: string) => lines.push(l), err: (l: string) => lines.push(l) } };
  };

  test('revoke and restore a key store, a key and every key store in a file; status', async () => {
    const file = join(dir, 'switch.json');
    const store = `file:${file}`;
    const run = async (...args: string[]) => {
      const o = io();
      return { code: await revocationMain(args, o.io), text: o.lines.join('\n') };
    };
    assert.equal((await run('revoke', '--store', store, '--keystore', 'payments')).code, 0);
    assert.equal((await run('revoke', '--store', store, '--keystore', 'hr', '--key', 'k1')).code, 0);
    assert.equal((await run('revoke', '--store', store, '--all')).code, 0);
    assert.equal((await run('revoke', '--store', store, '--all')).code, 0, 'twice is once');
    assert.deepEqual(parseRevocation(readFileSync(file, 'utf8'), 'f').revoked, ['payments', 'hr/k1', '*']);
    assert.match(
      (await run('status', '--store', store)).text,
      /key store payments\nkey k1 of key store hr\nevery key store/,
    );
    assert.equal((await run('restore', '--store', store, '--all')).code, 0);
    assert.equal((await run('restore', '--store', store, '--keystore', 'payments')).code, 0);
    assert.deepEqual(parseRevocation(readFileSync(file, 'utf8'), 'f').revoked, ['hr/k1']);
  });

  test('bad usage is 2, and nothing is written', async () => {
    const file = join(dir, 'untouched.json');
    writeFileSync(file, '{"revoked":[]}\n');
    for (const args of [
      ['revoke', '--keystore', 'a'],
      ['revoke', '--store', `file:${file}`],
      ['revoke', '--store', `file:${file}`, '--all', '--keystore', 'a'],
      ['revoke', '--store', `file:${file}`, '--keystore', 'bad name'],
      ['revoke', '--store', `file:${file}`, '--keystore', 'a', '--key', 'x/y'],
      ['revoke', '--store', 'ftp:x', '--all'],
      ['explode', '--store', `file:${file}`],
    ]) {
      const o = io();
      assert.equal(await revocationMain(args, o.io), 2, args.join(' '));
    }
    assert.equal(readFileSync(file, 'utf8'), '{"revoked":[]}\n');
  });

  test('a switch file the proxy would refuse is refused, and not overwritten', async () => {
    const file = join(dir, 'broken.json');
    writeFileSync(file, '{"revoked":"everything"}');
    const o = io();
    assert.equal(await revocationMain(['revoke', '--store', `file:${file}`, '--all'], o.io), 1);
    assert.match(o.lines.join('\n'), /\{"revoked": \[\.\.\.\]\}/);
    assert.equal(readFileSync(file, 'utf8'), '{"revoked":"everything"}');
    assert.equal(await new FileStore(join(dir, 'none.json'), REVOCATION_FORMAT).read(), undefined);
  });
});
