// The throughput floor: a bare node:https keep-alive server, with the proxy's TLS options and the same
// certificate, doing what an Encrypt needs and nothing more: read the body, one SoftHSM AES-GCM
// encrypt of its plaintext with pkcs11js (C_GenerateRandom IV, C_EncryptInit, C_Encrypt), answer JSON.
// No SigV4, no schema, no logging, no metrics, no middy, no API Gateway event.
//
//   SOFTHSM2_CONF=... node bench/bare-server.ts --config FILE --state-dir DIR [--port 0] [--processes 1]
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ProxyConfig } from '../functions/config.ts';
import { TLS_CIPHERS } from '../local/server.ts';
import { BareHsm, specAad } from './lib/bare-hsm.ts';
import { runPrimary } from './lib/cluster.ts';
import { freePort } from './lib/util.ts';

const { values: args } = parseArgs({
  options: {
    config: { type: 'string' },
    'state-dir': { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    processes: { type: 'string', default: '1' },
    'stagger-ms': { type: 'string', default: '200' },
  },
});
const processes = Number(args.processes);

if (cluster.isPrimary && processes > 1) {
  const port = Number(args.port) || (await freePort());
  const rest = process.argv
    .slice(2)
    .filter((a, i, all) => a !== '--processes' && all[i - 1] !== '--processes');
  await runPrimary({
    exec: fileURLToPath(import.meta.url),
    args: [...rest, '--port', String(port)],
    processes,
    staggerMs: Number(args['stagger-ms']),
    host: args.host,
    port,
  });
} else {
  serve();
}

function serve(): void {
  const config = JSON.parse(readFileSync(args.config as string, 'utf8')) as ProxyConfig;
  const hsm = new BareHsm({
    modulePath: config.hsm.modulePath,
    tokenLabel: config.hsm.tokenLabel,
    pin: config.hsm.pin as string,
    keyLabel: 'foo',
  });
  const aad = specAad();
  const tls = join(args['state-dir'] as string, 'tls');
  const server = createServer(
    {
      key: readFileSync(join(tls, 'key.pem')),
      cert: readFileSync(join(tls, 'cert.pem')),
      minVersion: 'TLSv1.2',
      ciphers: TLS_CIPHERS,
      honorCipherOrder: true,
    },
    (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        let plaintext: Buffer;
        try {
          plaintext = Buffer.from(JSON.parse(Buffer.concat(chunks).toString('utf8')).plaintext, 'base64');
        } catch {
          res.writeHead(400).end();
          return;
        }
        const { iv, data } = hsm.encrypt(plaintext, aad);
        const body = JSON.stringify({
          ciphertext: data.subarray(0, plaintext.length).toString('base64'),
          ciphertextMetadata: 'AQ==',
          initializationVector: iv.toString('base64'),
          authenticationTag: data.subarray(plaintext.length).toString('base64'),
        });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
    },
  );
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.listen(Number(args.port), args.host, () => {
    const { port } = server.address() as AddressInfo;
    if (!cluster.isWorker)
      process.stderr.write(`BENCH-READY https://${args.host}:${port} pids=${process.pid}\n`);
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      server.close();
      server.closeAllConnections();
      hsm.close();
      // A cluster worker's IPC channel would keep it alive.
      setTimeout(() => process.exit(0), 50);
    });
  }
}
