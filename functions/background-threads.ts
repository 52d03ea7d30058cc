// V8's background threads behind the request's thread, in Lambda. Node runs V8's JIT compilers and
// garbage-collection helpers on a pool of threads named V8Worker. A Lambda environment has a share
// of one or two vCPUs (0.58 of one at 1024 MB), and the scheduler of a virtual machine tends to
// wake such a thread on the CPU of the thread that woke it: a compile job of a few hundred µs then
// preempts the very request that started it, while the other vCPU idles. At the lowest priority
// (nice 19) they run while the request's thread waits (for the HSM, for the next event) or on a
// vCPU it does not need (docs/performance.md, "The proxy's share with the HSM a network distance
// away").
//
// Linux keeps a nice value per thread (setpriority(2), which node:os setPriority calls with a
// thread id), and any process may lower its own threads' priority. Where /proc or the call is
// refused, nothing changes.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The name Node gives the threads of V8's platform (/proc/<tid>/comm). */
const V8_WORKER = 'V8Worker';
/** The lowest priority (nice value) a thread can have. */
const LOWEST = 19;

/**
 * Gives this process's V8Worker threads the lowest priority. Returns how many it lowered; 0 where
 * there is no /proc (not Linux) or the system refuses.
 */
export function lowerV8WorkerPriority(tasks = '/proc/self/task'): number {
  let lowered = 0;
  try {
    // node:os loaded only now: this runs after the first response, not in the init phase.
    const { setPriority } = process.getBuiltinModule('node:os');
    for (const tid of readdirSync(tasks)) {
      try {
        if (readFileSync(join(tasks, tid, 'comm'), 'utf8').trim() !== V8_WORKER) continue;
        setPriority(Number(tid), LOWEST);
        lowered++;
      } catch {
        // A thread that has ended, or a call refused: that thread keeps its priority.
      }
    }
  } catch {
    // No /proc: every thread keeps its priority.
  }
  return lowered;
}
