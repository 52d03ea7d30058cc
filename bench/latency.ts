// Rough per-route latency of the local server (HTTPS keep-alive, one request at a time, SigV4,
// validation, logging and metrics all on), as a client sees it. The full benchmark suite is
// separate; this is the quick look.
//
//   node bench/latency.ts [requests per route, default 2000]
import { performance } from 'node:perf_hooks';
import { metadata, type RunningProxy, startProxy } from '../test/helpers/proxy.ts';
import { smithySign } from '../test/helpers/sign.ts';

const n = Number(process.argv[2] ?? 2000);
const proxy = await startProxy();
try {
  const enc = await proxy.xks('keys/foo/encrypt', {
    requestMetadata: metadata('Encrypt'),
    plaintext: Buffer.alloc(32, 7).toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
  });
  const routes: Array<[string, string, unknown]> = [
    ['GetHealthStatus', 'health', { requestMetadata: { kmsRequestId: 'b', kmsOperation: 'KmsHealthCheck' } }],
    ['GetKeyMetadata', 'keys/foo/metadata', { requestMetadata: metadata('CreateKey') }],
    [
      'Encrypt (32 B)',
      'keys/foo/encrypt',
      {
        requestMetadata: metadata('Encrypt'),
        plaintext: Buffer.alloc(32, 7).toString('base64'),
        encryptionAlgorithm: 'AES_GCM',
      },
    ],
    [
      'Encrypt (32 B, CDIV)',
      'keys/foo/encrypt',
      {
        requestMetadata: metadata('Encrypt'),
        plaintext: Buffer.alloc(32, 7).toString('base64'),
        encryptionAlgorithm: 'AES_GCM',
        ciphertextDataIntegrityValueAlgorithm: 'SHA_256',
      },
    ],
    [
      'Decrypt (32 B)',
      'keys/foo/decrypt',
      { requestMetadata: metadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ...enc.json },
    ],
  ];
  console.log(`${n} sequential requests per route, HTTPS keep-alive, ${process.version}`);
  console.log('route                  p50 ms   p99 ms');
  for (const [name, route, body] of routes) console.log(await measure(proxy, name, route, body));
} finally {
  await proxy.stop();
}

async function measure(p: RunningProxy, name: string, route: string, body: unknown): Promise<string> {
  const path = `/test/prefix/kms/xks/v1/${route}`;
  const text = JSON.stringify(body);
  // One signature serves every request (valid for 5 minutes): signing is the client's cost.
  const headers = await smithySign({ host: p.host, path, body: text, credential: p.credentials[0] as never });
  const times: number[] = [];
  for (let i = 0; i < n + 100; i++) {
    const start = performance.now();
    const res = await p.send({
      path,
      headers: { ...headers, 'content-type': 'application/json' },
      body: text,
    });
    if (res.status !== 200) throw new Error(`${name}: ${res.status} ${res.text}`);
    if (i >= 100) times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  const at = (q: number) => (times[Math.floor(q * (times.length - 1))] as number).toFixed(3);
  return `${name.padEnd(22)} ${at(0.5).padStart(6)}   ${at(0.99).padStart(6)}`;
}
