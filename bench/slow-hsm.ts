// The local server while one request waits on a slow HSM: the proxy (local/main.ts) over the
// fault-injecting PKCS#11 module (test/fault-pkcs11), autocannon replaying one signed Encrypt of
// 32 bytes at concurrency 10. Each round: a second of load with a healthy HSM, then a second in
// which one C_EncryptInit takes `--delay` ms (within the call deadline, so it is answered, not
// abandoned). Prints the requests answered in each second: docs/performance.md.
//
//   node bench/slow-hsm.ts [--delay 500] [--rounds 5] [--connections 10]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildFaultModule, FaultControl } from '../test/helpers/fault-hsm.ts';
import { post } from './lib/https.ts';
import { runLoad } from './lib/load.ts';
import { benchSetup, encryptBody, removeSetup } from './lib/requests.ts';
import { startServer } from './lib/servers.ts';
import { signedRequest } from './lib/signed.ts';
import { median } from './lib/util.ts';

const { values: args } = parseArgs({
  options: {
    delay: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '10' },
  },
});
const delayMs = Number(args.delay);
const connections = Number(args.connections);

const setup = benchSetup();
const controlDir = mkdtempSync(join(tmpdir(), 'xks-slow-hsm-'));
const control = new FaultControl(controlDir);
// The server inherits this environment: the module reads its rules file from it.
Object.assign(process.env, setup.env, control.env());
setup.config.hsm.modulePath = buildFaultModule();
setup.config.hsm.callTimeoutMs = delayMs * 4;
writeFileSync(setup.configFile, JSON.stringify(setup.config), { mode: 0o600 });
const server = await startServer(setup, 'proxy', 1, controlDir);
try {
  const request = await signedRequest(setup, server.host, 'keys/foo/encrypt', encryptBody(32), 'encrypt');
  const check = await post(server.url, request, setup.tls.cert);
  if (check.status !== 200) throw new Error(`${check.status} ${check.text}`);
  const second = () => runLoad({ url: server.url, requests: [request], connections, durationS: 1 });
  await second(); // warm-up
  const healthy: number[] = [];
  const slow: number[] = [];
  for (let round = 1; round <= Number(args.rounds); round++) {
    healthy.push((await second()).ok);
    control.set([`C_EncryptInit delay ${delayMs} count=1`]);
    const result = await second();
    control.clear();
    slow.push(result.ok);
    console.log(
      `round ${round}: ${healthy.at(-1)} answered in a healthy second, ${result.ok} in a second with one ` +
        `${delayMs} ms call (p99 ${result.latency?.p99.toFixed(1)} ms, non-2xx ${result.non2xx})`,
    );
  }
  console.log(`median: ${median(healthy)} healthy, ${median(slow)} with one slow call`);
} finally {
  await server.stop();
  removeSetup(setup);
  rmSync(controlDir, { recursive: true, force: true });
}
