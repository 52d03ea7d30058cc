// The local proxy (local/main.ts) in N processes on one port: local/main.ts has no cluster mode of
// its own, so this primary forks workers that each import local/main.ts with the same arguments.
// Each worker has its own HSM session (the handlers log in as they load); node:cluster shares the
// listening socket (the primary accepts and hands connections round-robin to the workers).
//
//   node bench/cluster-proxy.ts --processes 2 [--stagger-ms 200] -- --config FILE --state-dir DIR --port P
import cluster from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runPrimary } from './lib/cluster.ts';
import { freePort } from './lib/util.ts';

if (cluster.isPrimary) {
  const separator = process.argv.indexOf('--');
  const own = separator === -1 ? process.argv.slice(2) : process.argv.slice(2, separator);
  const forMain = separator === -1 ? [] : process.argv.slice(separator + 1);
  const { values } = parseArgs({
    args: own,
    options: {
      processes: { type: 'string', default: '2' },
      'stagger-ms': { type: 'string', default: '200' },
    },
  });
  // main.ts's own options that the primary needs to know: the port (shared) and the host.
  const { values: main } = parseArgs({
    args: forMain,
    options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' } },
    strict: false,
  });
  let port = Number(main.port ?? 0);
  const args = [...forMain];
  if (port === 0) {
    // Listen(0) in workers would give each its own port; pick one for all of them.
    port = await freePort();
    args.push('--port', String(port));
  }
  await runPrimary({
    exec: fileURLToPath(import.meta.url),
    args,
    processes: Number(values.processes),
    staggerMs: Number(values['stagger-ms']),
    host: String(main.host),
    port,
  });
} else {
  // main.ts reads process.argv (the args above) and listens; node:cluster shares the port.
  await import('../local/main.ts');
  // main.ts closes its server on SIGTERM; the IPC channel to the primary would keep a worker alive.
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.on(signal, () => setTimeout(() => process.exit(0), 50));
}
