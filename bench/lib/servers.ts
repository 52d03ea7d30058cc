// Starts the servers under test as child processes (the load generator stays in the bench process):
// the local proxy (local/main.ts, or bench/cluster-proxy.ts for N processes) and the bare server.
// Their stdout (the proxy's JSON logs and EMF metrics) goes to a file: cheap, but really written.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { NODE_FLAGS } from '../../local/server.ts';
import type { BenchSetup } from './requests.ts';
import { ROOT, stopChild, waitForOutput } from './util.ts';

export type ServerKind = 'proxy' | 'bare';

export interface RunningServer {
  kind: ServerKind;
  processes: number;
  url: string;
  /** host:port, as the client signs it. */
  host: string;
  /** The processes that serve requests (the workers in cluster mode). */
  pids: number[];
  logFile: string;
  /** performance.now() when the process was spawned. */
  spawnedAt: number;
  stop(): Promise<void>;
}

/** Every child started here, so that the suite can stop them all if it fails half-way. */
export const children = new Set<ChildProcess>();

export async function startServer(
  setup: BenchSetup,
  kind: ServerKind,
  processes: number,
  logDir: string,
  /** Node options for the server processes (e.g. --trace-gc). */
  nodeArgs: string[] = [],
  /** More environment for the server (e.g. the fault-injecting module's control files). */
  env: Record<string, string> = {},
): Promise<RunningServer> {
  const common = ['--config', setup.configFile, '--state-dir', setup.dir, '--port', '0'];
  let args: string[];
  if (kind === 'bare')
    args = [join(ROOT, 'bench/bare-server.ts'), ...common, '--processes', String(processes)];
  else if (processes === 1) args = [join(ROOT, 'local/main.ts'), ...common];
  else args = [join(ROOT, 'bench/cluster-proxy.ts'), '--processes', String(processes), '--', ...common];
  const logFile = join(logDir, `${kind}-${processes}p-${Date.now()}.log`);
  const spawnedAt = performance.now();
  const out = openSync(logFile, 'a');
  // The proxy as `npm start` runs it (its V8 flags); cluster-proxy's workers inherit them.
  const flags = kind === 'proxy' ? [...NODE_FLAGS, ...nodeArgs] : nodeArgs;
  const child = spawn(process.execPath, [...flags, ...args], {
    cwd: ROOT,
    env: { ...process.env, SOFTHSM2_CONF: setup.softhsmConf, ...env },
    stdio: ['ignore', out, 'pipe'],
  });
  closeSync(out);
  children.add(child);
  child.once('exit', () => children.delete(child));
  try {
    const ready =
      kind === 'proxy' && processes === 1
        ? /listening on (https:\/\/[\d.]+:\d+)/
        : /BENCH-READY (https:\/\/[\d.]+:\d+) pids=([\d,]+)/;
    const match = await waitForOutput(child, ready, 30_000);
    // Keep draining stderr so that a chatty child never blocks on a full pipe.
    child.stderr?.resume();
    const url = match[1] as string;
    const pids = match[2] ? match[2].split(',').map(Number) : [child.pid as number];
    return {
      kind,
      processes,
      url,
      host: url.replace('https://', ''),
      pids,
      logFile,
      spawnedAt,
      stop: () => stopChild(child),
    };
  } catch (error) {
    await stopChild(child);
    throw error;
  }
}
