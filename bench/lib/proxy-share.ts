// The proxy's own share of a request: the handler's time (timed around the Lambda handler call in
// bench/handler-child.ts) minus its HSM time (hsmLatencyMs on the request's log line: from the
// handler's call into the HSM layer to the answer, the worker-thread hop included). Each timed call
// is paired with its log line by order: the child writes one request line per handler call.
import { type Summary, scanLines, summarize } from './util.ts';

export interface RequestTimes {
  latencyMs: number;
  hsmMs: number;
}

const TIMES = /"message":"XKS request".*?"latencyMs":([\d.]+),"hsmLatencyMs":([\d.]+)/;

/** A request line's latencyMs and hsmLatencyMs, or undefined for any other line. */
export function requestTimes(line: string): RequestTimes | undefined {
  const m = TIMES.exec(line);
  return m ? { latencyMs: Number(m[1]), hsmMs: Number(m[2]) } : undefined;
}

/** Every request line's times in a log file, in order. */
export function requestTimesOf(logFile: string): RequestTimes[] {
  const out: RequestTimes[] = [];
  scanLines(logFile, 0, (line) => {
    const t = requestTimes(line);
    if (t) out.push(t);
  });
  return out;
}

export interface ProxyShare {
  /** Milliseconds, per timed call. */
  handler: Summary;
  hsm: Summary;
  share: Summary;
  /** How many timed calls a garbage collection pause fell into, and the share of the others. */
  gcCalls: number;
  shareWithoutGc: Summary;
  /**
   * How many timed calls the proxy collected during (in the HSM wait: functions/young-gc.ts), and
   * their HSM time: a collection that outlasted the HSM's answer would show there.
   */
  forcedGcCalls: number;
  hsmWithForcedGc: Summary | undefined;
}

/**
 * Pairs the timed calls (`handlerUs`, in order, the first being handler call number `firstCall`
 * counted from 0) with their log lines and summarises handler time, HSM time and their difference.
 * `gc`: the timed calls a GC pause fell into (indices into handlerUs); `forcedGc`: those the proxy
 * collected during. Throws when the pairing cannot be right: too few lines, or a line whose own
 * latency is longer than the handler call around it.
 */
export function proxyShare(
  handlerUs: number[],
  firstCall: number,
  lines: RequestTimes[],
  gc: readonly number[] = [],
  forcedGc: readonly number[] = [],
): ProxyShare {
  if (lines.length < firstCall + handlerUs.length) {
    throw new Error(`${lines.length} request lines for ${firstCall} + ${handlerUs.length} handler calls`);
  }
  const handler: number[] = [];
  const hsm: number[] = [];
  const share: number[] = [];
  handlerUs.forEach((us, i) => {
    const line = lines[firstCall + i] as RequestTimes;
    const handlerMs = us / 1000;
    // Both clocks are performance.now(); the line's is rounded to µs.
    if (line.latencyMs > handlerMs + 0.002) {
      throw new Error(
        `call ${firstCall + i}: its log line says ${line.latencyMs} ms, the handler call took ${handlerMs} ms: misaligned`,
      );
    }
    handler.push(handlerMs);
    hsm.push(line.hsmMs);
    share.push(handlerMs - line.hsmMs);
  });
  const paused = new Set(gc);
  const collected = new Set(forcedGc);
  return {
    handler: summarize(handler),
    hsm: summarize(hsm),
    share: summarize(share),
    gcCalls: paused.size,
    shareWithoutGc: summarize(share.filter((_, i) => !paused.has(i))),
    forcedGcCalls: collected.size,
    hsmWithForcedGc: collected.size === 0 ? undefined : summarize(hsm.filter((_, i) => collected.has(i))),
  };
}
