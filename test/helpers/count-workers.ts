// For scripts run in a child process (node --input-type=module -e): counts the worker threads the
// code it then imports starts, in `workers`, whoever imports node:worker_threads and however.
export const COUNT_WORKERS: readonly string[] = [
  "import { createRequire as countingRequire, syncBuiltinESMExports } from 'node:module';",
  "const threads = countingRequire(import.meta.url)('node:worker_threads');",
  'let workers = 0;',
  'threads.Worker = class extends threads.Worker { constructor(...args) { super(...args); workers++; } };',
  'syncBuiltinESMExports();',
];
