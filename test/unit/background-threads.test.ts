// functions/background-threads.ts on this process's own threads: Node runs a pool of V8Worker
// threads beside the main thread. test/integration/lambda-process.test.ts checks that the Lambda
// handler lowers them after its first response.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { lowerV8WorkerPriority } from '../../functions/background-threads.ts';
import { threadsOfThisProcess as threads } from '../helpers/threads.ts';

const linuxOnly = { skip: process.platform !== 'linux' && 'needs /proc' };

test('gives every V8Worker thread the lowest priority, and no other thread', linuxOnly, () => {
  const before = threads();
  const v8Workers = before.filter((t) => t.name === 'V8Worker');
  assert.ok(v8Workers.length >= 1, `Node's V8 platform threads among ${before.map((t) => t.name)}`);
  assert.ok(
    v8Workers.every((t) => t.nice < 19),
    'not at the lowest priority before',
  );
  assert.equal(lowerV8WorkerPriority(), v8Workers.length);
  for (const thread of threads()) {
    const was = before.find((t) => t.tid === thread.tid);
    if (thread.name === 'V8Worker') assert.equal(thread.nice, 19, `V8Worker ${thread.tid}`);
    else if (was !== undefined) assert.equal(thread.nice, was.nice, `${thread.name} ${thread.tid}`);
  }
});

test('a thread the system will not lower is left as it is, and nothing throws', linuxOnly, () => {
  // A thread list naming a V8Worker whose id no thread has: setpriority(2) refuses it.
  const tasks = mkdtempSync(join(tmpdir(), 'xks-tasks-'));
  try {
    mkdirSync(join(tasks, '999999999'));
    writeFileSync(join(tasks, '999999999', 'comm'), 'V8Worker\n');
    mkdirSync(join(tasks, '1000000000'));
    assert.equal(lowerV8WorkerPriority(tasks), 0);
  } finally {
    rmSync(tasks, { recursive: true, force: true });
  }
});

test('without a thread list (/proc), nothing is lowered and nothing throws', () => {
  assert.equal(lowerV8WorkerPriority(join(tmpdir(), 'xks-no-such-dir', 'task')), 0);
});
