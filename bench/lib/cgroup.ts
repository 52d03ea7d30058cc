// Lambda's CPU share, locally. Lambda gives a function CPU in proportion to its memory: 1769 MB is
// one vCPU. A cgroup v1 `cpu` group with a CFS quota of period × memory / 1769 gives a process the
// same share of this machine's CPU time. Needs root and the v1 `cpu` controller (Debian 12 on these
// machines: /sys/fs/cgroup/cpu); without them the suites that use it say why they skipped.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from './util.ts';

export const CPU_CONTROLLER = '/sys/fs/cgroup/cpu';

/** Memory (MB) that Lambda gives one full vCPU for. */
export const MB_PER_VCPU = 1769;

/** The vCPUs Lambda gives a function of this memory size. */
export function cpuShare(memoryMb: number): number {
  return memoryMb / MB_PER_VCPU;
}

/** The CFS quota (µs per period) that gives a process `memoryMb`'s share of one CPU. */
export function quotaUs(memoryMb: number, periodUs: number): number {
  return Math.round((periodUs * memoryMb) / MB_PER_VCPU);
}

export type CgroupSupport = { ok: true } | { ok: false; reason: string };

/**
 * Whether groups can be made under `root`: it must be a cgroup v1 `cpu` hierarchy (a new folder
 * there gets cpu.cfs_quota_us from the kernel) that this process may write. Probes by making and
 * removing a group.
 */
export function cgroupSupport(root = CPU_CONTROLLER): CgroupSupport {
  if (!existsSync(join(root, 'cpu.cfs_quota_us'))) {
    return { ok: false, reason: `no cgroup v1 cpu controller at ${root} (cpu.cfs_quota_us missing)` };
  }
  const probe = join(root, `xks-bench-probe-${process.pid}`);
  try {
    mkdirSync(probe);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const who = process.getuid?.() === 0 ? 'root' : `uid ${process.getuid?.()}, not root`;
    return { ok: false, reason: `cannot create a cgroup under ${root} (${code}; running as ${who})` };
  }
  try {
    if (!existsSync(join(probe, 'cpu.cfs_quota_us'))) {
      return { ok: false, reason: `${root} is not a cgroup cpu hierarchy (a new group has no quota file)` };
    }
    writeFileSync(join(probe, 'cpu.cfs_quota_us'), '50000');
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: `cannot set a CPU quota under ${root} (${(error as Error).message})` };
  } finally {
    rmdirSync(probe);
  }
}

/** How a suite starts its children: as they are, or inside a CPU group. */
export type Launch = (command: string, args: string[]) => { command: string; args: string[] };

export const DIRECT: Launch = (command, args) => ({ command, args });

export interface CpuGroup {
  name: string;
  dir: string;
  memoryMb: number;
  periodUs: number;
  quotaUs: number;
  /**
   * The command line that runs `command args` inside the group from its first instruction: a shell
   * moves itself into the group, then execs the command in its place.
   */
  launch: Launch;
  /** Removes the group; its processes must have exited (retried for a second while they exit). */
  remove(): Promise<void>;
}

/** Makes a group with `memoryMb`'s CPU share under `root` (see cgroupSupport). */
export function createCpuGroup(memoryMb: number, root = CPU_CONTROLLER): CpuGroup {
  const name = `xks-bench-${process.pid}-${memoryMb}mb`;
  const dir = join(root, name);
  mkdirSync(dir);
  const periodUs = Number(readFileSync(join(dir, 'cpu.cfs_period_us'), 'utf8').trim());
  const quota = quotaUs(memoryMb, periodUs);
  writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
  return {
    name,
    dir,
    memoryMb,
    periodUs,
    quotaUs: quota,
    launch: (command, args) => ({
      command: '/bin/sh',
      args: ['-c', 'echo $$ > "$0" && exec "$@"', join(dir, 'cgroup.procs'), command, ...args],
    }),
    remove: async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          rmdirSync(dir);
          return;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
          if (attempt >= 20) throw error;
          await sleep(50);
        }
      }
    },
  };
}
