// The local server while one request waits on a slow HSM (bench/suites/network-hsm.ts, part c):
// the proxy (local/main.ts) over the fault-injecting PKCS#11 module (test/fault-pkcs11), autocannon
// replaying one signed Encrypt of 32 bytes. Each round: a second of load with a healthy HSM, then a
// second in which one C_EncryptInit takes `--delay` ms (within the call deadline, so it is answered,
// not abandoned). Prints the requests answered in each second: docs/performance.md.
//
//   node bench/slow-hsm.ts [--delay 500] [--rounds 5] [--connections 10] [--distance 0 --jitter 0]
//
// --distance: every PKCS#11 call that many ms (± --jitter) away, as a network HSM is.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './lib/util.ts';
import { distanceRule, slowRequestThroughput } from './suites/network-hsm.ts';

const { values: args } = parseArgs({
  options: {
    delay: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '10' },
    distance: { type: 'string', default: '0' },
    jitter: { type: 'string', default: '0' },
  },
});
const distanceMs = Number(args.distance);
const workDir = mkdtempSync(join(tmpdir(), 'xks-slow-hsm-'));
try {
  const result = await slowRequestThroughput({
    delayMs: Number(args.delay),
    rounds: Number(args.rounds),
    connections: Number(args.connections),
    rules: distanceMs > 0 ? [distanceRule(distanceMs, Number(args.jitter))] : [],
    workDir,
    log: (line) => console.log(line.trim()),
  });
  console.log(`median: ${median(result.healthy)} healthy, ${median(result.slow)} with one slow call`);
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
