// N server processes on one port with node:cluster: the primary forks the workers one after another,
// waiting for each to listen and then `staggerMs` more, because SoftHSM rewrites its token file on
// C_Login and simultaneous logins can corrupt each other's view of it. The primary
// prints `BENCH-READY <url> pids=<worker pids>` on stderr once every worker listens; SIGTERM stops all.
import cluster, { type Worker } from 'node:cluster';
import { sleep } from './util.ts';

export interface ClusterOptions {
  /** The script each worker runs (with `args`). */
  exec: string;
  args: string[];
  processes: number;
  staggerMs: number;
  /** For the BENCH-READY line. */
  host: string;
  port: number;
  protocol?: string;
}

export async function runPrimary(options: ClusterOptions): Promise<void> {
  cluster.setupPrimary({ exec: options.exec, args: options.args });
  const workers: Worker[] = [];
  let stopping = false;
  const stop = async (code: number) => {
    stopping = true;
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolvePromise) => {
            if (w.isDead()) return resolvePromise();
            const timer = setTimeout(() => w.process.kill('SIGKILL'), 3000);
            w.once('exit', () => {
              clearTimeout(timer);
              resolvePromise();
            });
            w.kill('SIGTERM'); // disconnects the IPC channel too, so the worker can exit
          }),
      ),
    );
    process.exit(code);
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void stop(0));
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    process.stderr.write(`cluster worker ${worker.process.pid} exited (${code ?? signal}); stopping\n`);
    void stop(1);
  });
  for (let i = 0; i < options.processes; i++) {
    if (i > 0) await sleep(options.staggerMs);
    const worker = cluster.fork();
    workers.push(worker);
    await new Promise<void>((resolvePromise, reject) => {
      const timer = setTimeout(
        () => reject(new Error('a cluster worker did not listen within 30 s')),
        30_000,
      );
      worker.once('listening', () => {
        clearTimeout(timer);
        resolvePromise();
      });
    });
  }
  const pids = workers.map((w) => w.process.pid).join(',');
  process.stderr.write(
    `BENCH-READY ${options.protocol ?? 'https'}://${options.host}:${options.port} pids=${pids}\n`,
  );
}
