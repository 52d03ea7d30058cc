// One HTTPS request to a server under test (set-up checks and the ciphertext the Decrypt load needs).
import { request } from 'node:https';
import type { LoadRequest } from './load.ts';

export function post(url: string, req: LoadRequest, ca: Buffer): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolvePromise, reject) => {
    const outgoing = request(
      {
        hostname,
        port,
        servername: 'localhost',
        method: req.method,
        path: req.path,
        headers: { ...req.headers, 'content-length': String(Buffer.byteLength(req.body)) },
        ca,
        agent: false,
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolvePromise({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
      },
    );
    outgoing.on('timeout', () => outgoing.destroy(new Error('request timed out')));
    outgoing.on('error', reject);
    outgoing.end(req.body);
  });
}
