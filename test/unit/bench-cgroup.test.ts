// The benchmark's CPU groups (bench/lib/cgroup.ts): the quota for a Lambda memory size, the reasons
// it gives for skipping where groups cannot be made, and, where they can (root, cgroup v1 `cpu`), a
// child that runs inside its group from its first instruction, with the quota set.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CPU_CONTROLLER, cgroupSupport, cpuShare, createCpuGroup, quotaUs } from '../../bench/lib/cgroup.ts';

test('quota: period × memory / 1769 (1769 MB is one vCPU), above one vCPU too', () => {
  assert.equal(quotaUs(1024, 100_000), 57_886);
  assert.equal(quotaUs(1769, 100_000), 100_000);
  assert.equal(quotaUs(512, 100_000), 28_943);
  assert.equal(quotaUs(3008, 100_000), 170_040);
  assert.equal(quotaUs(1024, 50_000), 28_943);
  assert.equal(cpuShare(1024).toFixed(2), '0.58');
});

test('skipped, with the reason, where there is no cpu controller or it is not a cgroup filesystem', () => {
  const missing = cgroupSupport('/nonexistent/cgroup/cpu');
  assert.equal(missing.ok, false);
  assert.match(missing.ok ? '' : missing.reason, /no cgroup v1 cpu controller at \/nonexistent/);

  // A plain folder that looks like the controller: a new "group" in it gets no quota file.
  const fake = mkdtempSync(join(tmpdir(), 'fake-cgroup-'));
  try {
    execFileSync('touch', [join(fake, 'cpu.cfs_quota_us')]);
    const plain = cgroupSupport(fake);
    assert.equal(plain.ok, false);
    assert.match(plain.ok ? '' : plain.reason, /not a cgroup cpu hierarchy/);
    assert.deepEqual(
      execFileSync('ls', [fake], { encoding: 'utf8' }).trim().split('\n'),
      ['cpu.cfs_quota_us'],
      'the probe group is removed',
    );
  } finally {
    rmSync(fake, { recursive: true, force: true });
  }
});

test('a launched child is in its group from the start, with the quota; the group is removed after', async (t) => {
  const support = cgroupSupport();
  if (!support.ok) {
    t.skip(support.reason);
    return;
  }
  const group = createCpuGroup(1024);
  try {
    assert.equal(readFileSync(join(group.dir, 'cpu.cfs_quota_us'), 'utf8').trim(), String(group.quotaUs));
    assert.equal(group.quotaUs, quotaUs(1024, group.periodUs));
    const { command, args } = group.launch('cat', ['/proc/self/cgroup']);
    const own = execFileSync(command, args, { encoding: 'utf8' });
    // The cat process itself (exec'd in the shell's place) reads its own membership.
    assert.match(own, new RegExp(`^\\d+:(?:[a-z]+,)*cpu(?:,[a-z]+)*:/${group.name}$`, 'm'));
  } finally {
    await group.remove();
  }
  assert.equal(existsSync(group.dir), false);
  assert.equal(existsSync(join(CPU_CONTROLLER, group.name)), false);
});
