// Garbage collection while the HSM works. A Lambda environment serves one request at a time, and
// while an HSM call is out on the network (on its worker thread) this thread has nothing to do. Each
// request leaves some 60 KB of garbage; every hundred-odd requests the young generation fills, and
// the collection (a scavenge: 1-3 ms at the 1024 MB CPU share) then pauses whichever request
// allocates next, most often in the request's log line, after the HSM has answered. Collecting
// the young generation during an HSM call instead, once it is three quarters full, takes those
// pauses off the requests' path (docs/performance.md, "The proxy's share with the HSM a network
// distance away").
//
// It needs V8's gc() (node --expose-gc: serverless.yml sets NODE_OPTIONS); without it, nothing
// happens. Only during calls that take the HSM a while (the last call of the kind took at least
// 1 ms): not during a key lookup answered from the cache, and seldom with an in-process HSM. A
// collection that outlasts the HSM's answer delays the request by what is left of it: still less
// than the whole pause that the young generation, once full, would have put on a request anyway.

/** A call is worth collecting during when the last one of its kind took at least this. */
const MIN_WAIT_MS = 1;

export class YoungGenerationCollector {
  readonly #gc: NodeJS.GCFunction;
  /** How long the last call of each kind took (ms): what the next one will likely take. */
  readonly #lastWaitMs = new Map<string, number>();
  /** Set when gc() or the heap statistics failed: the collector then stays out of the way. */
  #off = false;

  /** undefined without gc() (node --expose-gc). */
  static create(gc: NodeJS.GCFunction | undefined = globalThis.gc): YoungGenerationCollector | undefined {
    return gc === undefined ? undefined : new YoungGenerationCollector(gc);
  }

  private constructor(gc: NodeJS.GCFunction) {
    this.#gc = gc;
  }

  /**
   * Called right after a call of `kind` went to the HSM's worker thread, before this thread waits
   * for its answer: collects the young generation if it is three quarters full.
   */
  whileWaiting(kind: string): void {
    if (this.#off || (this.#lastWaitMs.get(kind) ?? 0) < MIN_WAIT_MS) return;
    try {
      // node:v8 loaded only now: at the init phase it would cost every cold start a few ms.
      const young = process
        .getBuiltinModule('node:v8')
        .getHeapSpaceStatistics()
        .find((space) => space.space_name === 'new_space');
      // space_size counts both semi-spaces; what fills up is used + available.
      if (young === undefined) return;
      const free = young.space_available_size;
      if (free > (young.space_used_size + free) / 4) return;
      this.#gc({ type: 'minor' });
    } catch {
      // A Node whose gc() or heap statistics fail: V8 collects as usual. Never the request's
      // failure: this runs inside the request's HSM call.
      this.#off = true;
    }
  }

  /** What a call of `kind` took, from its start to its answer. */
  took(kind: string, ms: number): void {
    this.#lastWaitMs.set(kind, ms);
  }
}
