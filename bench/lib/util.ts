// Small shared helpers for the benchmark suite: statistics, child processes, TLS certificates.

import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { selfSignedCertificate } from '../../local/tls.ts';

export const ROOT = resolve(import.meta.dirname, '../..');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** The q-quantile (nearest rank) of an ascending array. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] as number;
}

export function summarize(samples: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n: sorted.length,
    min: sorted[0] ?? Number.NaN,
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
  };
}

/** Every figure of a summary rounded to `digits` decimals. */
export function roundSummary(s: Summary, digits = 2): Summary {
  return {
    n: s.n,
    min: round(s.min, digits),
    p50: round(s.p50, digits),
    p90: round(s.p90, digits),
    p99: round(s.p99, digits),
    max: round(s.max, digits),
    mean: round(s.mean, digits),
  };
}

/** `points` (value, cumulative fraction) pairs of the distribution, for a CDF plot. */
export function cdfPoints(samples: ArrayLike<number>, points = 100): Array<[number, number]> {
  const sorted = Float64Array.from(samples).sort();
  const out: Array<[number, number]> = [];
  for (let i = 0; i <= points; i++) {
    const q = i / points;
    out.push([quantile(sorted, Math.max(q, 1 / sorted.length)), q]);
  }
  return out;
}

/** The median; the mean of the middle two for an even count. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Resolves with the first match of `pattern` in what the child writes to `stream`. */
export function waitForOutput(
  child: ChildProcess,
  pattern: RegExp,
  timeoutMs = 20_000,
  stream: 'stdout' | 'stderr' = 'stderr',
): Promise<RegExpExecArray> {
  const source = child[stream];
  if (source === null) return Promise.reject(new Error(`the child's ${stream} is not a pipe`));
  return new Promise((resolvePromise, reject) => {
    let text = '';
    const done = (error?: Error, match?: RegExpExecArray) => {
      clearTimeout(timer);
      source.off('data', onData);
      child.off('exit', onExit);
      if (match) resolvePromise(match);
      else reject(error);
    };
    const onData = (d: Buffer) => {
      text += d.toString();
      const match = pattern.exec(text);
      if (match) done(undefined, match);
    };
    const onExit = (code: number | null) =>
      done(new Error(`child exited (${code}) before ${pattern}:\n${text}`));
    const timer = setTimeout(() => done(new Error(`timed out waiting for ${pattern}:\n${text}`)), timeoutMs);
    source.on('data', onData);
    child.once('exit', onExit);
  });
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. Only our own children. */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A free TCP port on 127.0.0.1 (for the servers that share one port across processes). */
export function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolvePromise(port));
    });
  });
}

/**
 * The same kind of certificate local/main.ts makes (self-signed ECDSA P-256 for 127.0.0.1 and
 * localhost), in `<dir>/tls/`, where main.ts finds and reuses it: proxy and bare server use one.
 */
export function certificate(dir: string): { key: Buffer; cert: Buffer } {
  return selfSignedCertificate(dir);
}

/** VmRSS of a process in kB, from /proc (Linux), or undefined when it is gone. */
export function rssKb(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/**
 * Calls `onLine` for each whole line of `file` from byte `fromOffset` on, reading in chunks (the
 * proxy's logs reach hundreds of MB).
 */
export function scanLines(file: string, fromOffset: number, onLine: (line: string) => void): void {
  const fd = openSync(file, 'r');
  let position = fromOffset;
  let carry = Buffer.alloc(0);
  try {
    const chunk = Buffer.alloc(8 * 1024 * 1024);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n === 0) break;
      position += n;
      // Split on newline bytes, so that a character cut by the chunk's end is never mangled.
      const data = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
      let start = 0;
      for (let newline = data.indexOf(10); newline !== -1; newline = data.indexOf(10, start)) {
        onLine(data.toString('utf8', start, newline));
        start = newline + 1;
      }
      carry = Buffer.from(data.subarray(start));
    }
  } finally {
    closeSync(fd);
  }
}

const REQUEST_LINE = /"message":"XKS request","timestamp":"([^"]+)".*?"latencyMs":([\d.]+)/;

/** A request's log line: when it was written and the proxy's own latencyMs (event in → answer out). */
export function requestLatency(line: string): { epochMs: number; ms: number } | undefined {
  const m = REQUEST_LINE.exec(line);
  return m ? { epochMs: Date.parse(m[1] as string), ms: Number(m[2]) } : undefined;
}

export function fileSize(file: string): number {
  return statSync(file).size;
}

/** A Markdown table; `|` in a cell is escaped. */
export function table(header: string[], rows: string[][]): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}
