// Small XKS-like HTTPS servers on 127.0.0.1, each wrong in one way, for the preflight tests: a
// certificate for another host, an expired one, a self-signed one, HTML error pages, slow answers,
// wrong status codes, mutual TLS that is not enforced. Otherwise they answer as the spec says:
// GetHealthStatus with a valid body, 404 InvalidUriPathException, 401 AuthenticationFailedException
// (SigV4 checked by signing again with @smithy/signature-v4), 405 for other methods.
// Certificates come from the openssl CLI in a temporary folder, as in certs.ts.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pem } from './certs.ts';
import { type Credential, smithySign } from './sign.ts';

export interface ServerCertificates {
  dir: string;
  /** The test CA (PEM): pass it as `ca` to trust the servers it signed. */
  ca: Buffer;
  /** localhost and 127.0.0.1, signed by the CA. */
  good: Pem;
  /** wrong.example.com only, signed by the CA. */
  wrongHost: Pem;
  /** localhost and 127.0.0.1, signed by the CA, valid only in January 2020. */
  expired: Pem;
  /** localhost and 127.0.0.1, self-signed. */
  selfSigned: Pem;
  /** A client certificate (CN cks.kms.eu-west-1.amazonaws.com) signed by the CA, for mutual TLS. */
  client: Pem;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
const LOCAL_NAMES = 'subjectAltName=DNS:localhost,IP:127.0.0.1';

export function makeServerCertificates(): ServerCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'xks-preflight-certs-'));
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const pem = (name: string): Pem => ({
    cert: readFileSync(join(dir, `${name}.pem`)),
    key: readFileSync(join(dir, `${name}.key`)),
  });
  const request = (name: string, cn: string) =>
    openssl(['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
  const sign = (name: string, extensions: string) => {
    writeFileSync(join(dir, `${name}.ext`), `${extensions}\n`);
    openssl([
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '365',
      '-extfile',
      `${name}.ext`,
    ]);
  };

  openssl([
    'req',
    '-x509',
    ...EC,
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '365',
    '-subj',
    '/CN=XKS preflight test CA',
  ]);
  request('good', 'localhost');
  sign('good', LOCAL_NAMES);
  request('wrong-host', 'wrong.example.com');
  sign('wrong-host', 'subjectAltName=DNS:wrong.example.com');
  request('client', 'cks.kms.eu-west-1.amazonaws.com');
  sign('client', 'extendedKeyUsage=clientAuth');

  // `openssl ca` chooses the validity dates (here: in the past).
  request('expired', 'localhost');
  writeFileSync(join(dir, 'expired.ext'), `${LOCAL_NAMES}\n`);
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(
    join(dir, 'ca.cnf'),
    `[ca]\ndefault_ca = d\n[d]\ndir = ${dir}\ndatabase = ${dir}/index.txt\nnew_certs_dir = ${dir}\nserial = ${dir}/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n`,
  );
  openssl([
    'ca',
    '-batch',
    '-config',
    'ca.cnf',
    '-cert',
    'ca.pem',
    '-keyfile',
    'ca.key',
    '-in',
    'expired.csr',
    '-out',
    'expired.pem',
    '-startdate',
    '20200101000000Z',
    '-enddate',
    '20200131000000Z',
    '-extfile',
    'expired.ext',
    '-notext',
  ]);

  openssl([
    'req',
    '-x509',
    ...EC,
    '-keyout',
    'self.key',
    '-out',
    'self.pem',
    '-days',
    '365',
    '-subj',
    '/CN=localhost',
    '-addext',
    LOCAL_NAMES,
  ]);

  return {
    dir,
    ca: readFileSync(join(dir, 'ca.pem')),
    good: pem('good'),
    wrongHost: pem('wrong-host'),
    expired: pem('expired'),
    selfSigned: pem('self'),
    client: pem('client'),
  };
}

/** How a server departs from the spec (besides its certificate). */
export type Misbehaviour =
  /** None: a correct (if minimal) XKS proxy. */
  | 'none'
  /** Every answer is a text/html 500 page. */
  | 'html-errors'
  /** Every answer comes after `delayMs` (default 400 ms). */
  | 'slow'
  /** 200 for an unknown path, 403 AccessDeniedException for a bad signature, 200 for GET. */
  | 'wrong-status'
  /** Asks for a client certificate but serves clients without one. */
  | 'mtls-not-enforced'
  /** Requires a client certificate signed by the test CA (as it should). */
  | 'mtls';

export interface BrokenServerOptions {
  certificate: Pem;
  behaviour?: Misbehaviour;
  credential: Credential;
  /** The key store path prefix (XksProxyUriPath without /kms/xks/v1). */
  prefix: string;
  /** The test CA, for the mutual TLS behaviours. */
  ca?: Buffer;
  delayMs?: number;
}

export interface BrokenServer {
  /** 127.0.0.1:port */
  host: string;
  /** https://127.0.0.1:port */
  endpoint: string;
  /** Requests seen, by path. */
  requests: string[];
  stop(): Promise<void>;
}

const HEALTH = JSON.stringify({
  xksProxyFleetSize: 1,
  xksProxyVendor: 'preflight test',
  xksProxyModel: 'broken server 1.0',
  ekmVendor: 'none',
  ekmFleetDetails: [{ id: 'ekm-1', model: 'in memory', healthStatus: 'ACTIVE' }],
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True when @smithy/signature-v4 makes the same Authorization header for this request, date and scope. */
async function signatureMatches(
  method: string,
  host: string,
  path: string,
  headers: Record<string, string | string[] | undefined>,
  body: string,
  credential: Credential,
): Promise<boolean> {
  const authorization = String(headers.authorization ?? '');
  const amzDate = String(headers['x-amz-date'] ?? '');
  const scope = /Credential=([^/]+)\/\d{8}\/([^/]+)\/kms-xks-proxy\/aws4_request/.exec(authorization);
  const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!scope || !date || scope[1] !== credential.accessKeyId) return false;
  const [, y, mo, d, h, mi, s] = date.map(Number) as number[];
  const signed = await smithySign({
    method,
    host,
    path,
    body,
    credential,
    region: scope[2] as string,
    date: new Date(Date.UTC(y as number, (mo as number) - 1, d, h, mi, s)),
    // As KMS signs: host and x-amz-date only.
    unsigned: ['x-amz-content-sha256'],
  });
  return signed.authorization === authorization;
}

export async function startBrokenServer(options: BrokenServerOptions): Promise<BrokenServer> {
  const behaviour = options.behaviour ?? 'none';
  const base = `${options.prefix}/kms/xks/v1`;
  const requests: string[] = [];
  const mtls =
    behaviour === 'mtls' || behaviour === 'mtls-not-enforced'
      ? { requestCert: true, rejectUnauthorized: behaviour === 'mtls', ca: options.ca }
      : {};
  const server = createHttpsServer(
    { key: options.certificate.key, cert: options.certificate.cert, minVersion: 'TLSv1.2', ...mtls },
    (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', async () => {
        const path = req.url ?? '/';
        requests.push(path);
        const body = Buffer.concat(chunks).toString('utf8');
        const send = (status: number, payload: string, type = 'application/json', extra = {}) => {
          res.writeHead(status, {
            'content-type': type,
            'content-length': Buffer.byteLength(payload),
            ...extra,
          });
          res.end(payload);
        };
        const error = (status: number, errorName: string) =>
          send(status, JSON.stringify({ errorName, errorMessage: `${errorName} from the test server` }));
        if (behaviour === 'slow') await sleep(options.delayMs ?? 400);
        if (behaviour === 'html-errors') {
          send(500, '<html><body><h1>500 Internal Server Error</h1></body></html>', 'text/html');
          return;
        }
        const route = path.startsWith(`${base}/`) ? path.slice(base.length + 1) : undefined;
        const known =
          route === 'health' || /^keys\/[A-Za-z0-9._-]{1,128}\/(metadata|encrypt|decrypt)$/.test(route ?? '');
        if (!known) {
          if (behaviour === 'wrong-status') send(200, JSON.stringify({ status: 'ok' }));
          else error(404, 'InvalidUriPathException');
          return;
        }
        if (req.method !== 'POST') {
          if (behaviour === 'wrong-status') send(200, JSON.stringify({ status: 'ok' }));
          else
            send(405, JSON.stringify({ errorName: 'MethodNotAllowed' }), 'application/json', {
              allow: 'POST',
            });
          return;
        }
        const host = String(req.headers.host ?? '');
        if (!(await signatureMatches('POST', host, path, req.headers, body, options.credential))) {
          if (behaviour === 'wrong-status') error(403, 'AccessDeniedException');
          else error(401, 'AuthenticationFailedException');
          return;
        }
        if (route === 'health') send(200, HEALTH);
        else error(404, 'KeyNotFoundException');
      });
    },
  );
  await new Promise<void>((resolvePromise) => server.listen(0, '127.0.0.1', resolvePromise));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    endpoint: `https://127.0.0.1:${port}`,
    requests,
    stop: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A TCP server that accepts connections and never says a word (no TLS handshake): timeouts. */
export async function startSilentServer(): Promise<{ endpoint: string; stop(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createTcpServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolvePromise) => server.listen(0, '127.0.0.1', resolvePromise));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `https://127.0.0.1:${port}`,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A loopback port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolvePromise) => server.listen(0, '127.0.0.1', resolvePromise));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

export function removeCertificates(certs: ServerCertificates): void {
  rmSync(certs.dir, { recursive: true, force: true });
}
