// The network: TLS probes and HTTPS calls, each with a deadline, and what KMS makes of a call that
// fails before any response.
import type { IncomingHttpHeaders } from 'node:http';
import { type Agent, request } from 'node:https';
import { type ConnectionOptions, connect, type DetailedPeerCertificate, type TLSSocket } from 'node:tls';
import type { ScenarioName } from './kms.ts';

export interface Target {
  /** What to connect to (brackets of an IPv6 literal removed). */
  hostname: string;
  port: number;
  /** The Host header (and SigV4 host): host[:port], as KMS sends it. */
  hostHeader: string;
  /** SNI: the host name, never an IP address. */
  servername: string | undefined;
}

type Stage = 'tcp' | 'tls' | 'timeout' | 'http';

export interface NetError {
  ok: false;
  stage: Stage;
  code: string;
  message: string;
  ms: number;
}

export interface Probe {
  ok: true;
  protocol: string | null;
  cipher: string;
  alpn: string | false;
  peer: DetailedPeerCertificate;
  authorizationError: string | undefined;
  ms: number;
}

export interface HttpReply {
  ok: true;
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  httpVersion: string;
  ms: number;
  reusedSocket: boolean;
}

const MAX_BODY = 1024 * 1024;

export function errorCode(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  return e?.code ?? e?.name ?? 'Error';
}

/** One line of an error, without OpenSSL's file and line noise. */
function errorText(error: unknown): string {
  const message = String((error as Error)?.message ?? error).trim();
  const ssl = /:(?:SSL routines|[A-Za-z0-9 ]+ routines):[^:]*:([^:]+):/.exec(message);
  return (ssl ? (ssl[1] as string) : (message.split('\n')[0] ?? '')).slice(0, 200);
}

/** A TLS handshake and nothing more. */
function probe(target: Target, options: ConnectionOptions, timeoutMs: number): Promise<Probe | NetError> {
  return new Promise((resolvePromise) => {
    const started = performance.now();
    let tcp = false;
    let settled = false;
    const finish = (result: Probe | NetError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket?.destroy();
      resolvePromise(result);
    };
    let socket: TLSSocket | undefined;
    try {
      socket = connect({
        host: target.hostname,
        port: target.port,
        ...(target.servername === undefined ? {} : { servername: target.servername }),
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
        ...options,
      });
    } catch (error) {
      // Options this OpenSSL refuses outright (a cipher it lacks): the handshake cannot happen.
      resolvePromise({ ok: false, stage: 'tls', code: errorCode(error), message: errorText(error), ms: 0 });
      return;
    }
    const tlsSocket = socket;
    const timer = setTimeout(
      () =>
        finish({
          ok: false,
          stage: 'timeout',
          code: 'TIMEOUT',
          message: `no ${tcp ? 'TLS handshake' : 'TCP connection'} within ${timeoutMs} ms`,
          ms: performance.now() - started,
        }),
      timeoutMs,
    );
    tlsSocket.once('connect', () => {
      tcp = true;
    });
    tlsSocket.once('secureConnect', () => {
      finish({
        ok: true,
        protocol: tlsSocket.getProtocol(),
        cipher: tlsSocket.getCipher()?.name ?? '',
        alpn: tlsSocket.alpnProtocol ?? false,
        peer: tlsSocket.getPeerCertificate(true),
        authorizationError: tlsSocket.authorizationError?.toString() || undefined,
        ms: performance.now() - started,
      });
    });
    // `on`, not `once`: a second error after the first must not go unhandled.
    tlsSocket.on('error', (error) =>
      finish({
        ok: false,
        stage: tcp ? 'tls' : 'tcp',
        code: errorCode(error),
        message: errorText(error),
        ms: performance.now() - started,
      }),
    );
  });
}

interface CallOptions {
  method: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
  /** A keep-alive agent, or false for a connection of its own (TCP + TLS + request, as KMS pays it). */
  agent: Agent | false;
  /** Without the mutual TLS client certificate. */
  noClientCert?: boolean;
}

export class Network {
  readonly target: Target;
  readonly timeoutMs: number;
  readonly ca: string[];
  readonly mtls: { cert: string | Buffer; key: string | Buffer } | undefined;

  constructor(
    target: Target,
    timeoutMs: number,
    ca: string[],
    mtls: { cert: string | Buffer; key: string | Buffer } | undefined,
  ) {
    this.target = target;
    this.timeoutMs = timeoutMs;
    this.ca = ca;
    this.mtls = mtls;
  }

  tlsOptions(noClientCert = false): ConnectionOptions {
    return {
      ca: this.ca,
      ...(this.mtls && !noClientCert ? { cert: this.mtls.cert, key: this.mtls.key } : {}),
    };
  }

  probe(options: ConnectionOptions = {}, noClientCert = false): Promise<Probe | NetError> {
    return probe(this.target, { ...this.tlsOptions(noClientCert), ...options }, this.timeoutMs);
  }

  call(options: CallOptions): Promise<HttpReply | NetError> {
    return new Promise((resolvePromise) => {
      const started = performance.now();
      let tcp = false;
      let secure = false;
      let settled = false;
      const body = options.body ?? '';
      const finish = (result: HttpReply | NetError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolvePromise(result);
      };
      const fail = (error: unknown) => {
        const code = errorCode(error);
        const stage: Stage =
          code === 'PREFLIGHT_TIMEOUT'
            ? 'timeout'
            : !tcp
              ? 'tcp'
              : !secure || code.startsWith('ERR_SSL')
                ? 'tls'
                : 'http';
        finish({ ok: false, stage, code, message: errorText(error), ms: performance.now() - started });
      };
      const req = request(
        {
          hostname: this.target.hostname,
          port: this.target.port,
          ...(this.target.servername === undefined ? {} : { servername: this.target.servername }),
          method: options.method,
          path: options.path,
          headers: {
            host: this.target.hostHeader,
            ...options.headers,
            'content-length': String(Buffer.byteLength(body)),
          },
          agent: options.agent,
          // The certificate is judged by the tls.* checks; the calls go on to say what else is wrong.
          // (No checkServerIdentity here: a function among the options stops the agent's reuse.)
          rejectUnauthorized: false,
          ...this.tlsOptions(options.noClientCert),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size <= MAX_BODY) chunks.push(chunk);
          });
          res.on('end', () =>
            finish({
              ok: true,
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).toString('utf8'),
              httpVersion: res.httpVersion,
              ms: performance.now() - started,
              reusedSocket: req.reusedSocket,
            }),
          );
          res.on('error', fail);
        },
      );
      const timer = setTimeout(() => {
        const error = Object.assign(new Error(`no complete response within ${this.timeoutMs} ms`), {
          code: 'PREFLIGHT_TIMEOUT',
        });
        fail(error);
        req.destroy(error);
      }, this.timeoutMs);
      req.on('socket', (socket) => {
        const tlsSocket = socket as TLSSocket;
        if (req.reusedSocket || !socket.connecting) {
          tcp = true;
          secure = true;
          return;
        }
        socket.once('connect', () => {
          tcp = true;
        });
        tlsSocket.once('secureConnect', () => {
          secure = true;
        });
      });
      req.on('error', fail);
      req.end(body);
    });
  }
}

/** What KMS makes of a failed network call. */
export function networkScenario(error: NetError): ScenarioName {
  if (error.stage === 'timeout') return 'timeout';
  if (error.stage === 'tls') return 'tls';
  return 'tcp';
}

export function describeNetError(error: NetError): string {
  const what = {
    tcp: 'no TCP connection',
    tls: 'the TLS handshake failed',
    timeout: 'timed out',
    http: 'the connection broke before a response',
  }[error.stage];
  return `${what}: ${error.code}${error.message && error.message !== error.code ? ` (${error.message})` : ''}`;
}
