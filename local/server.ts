// A small HTTP(S) server that turns each request into the event a deployed front door would send,
// and calls the same Lambda handlers (functions/handlers.ts): an API Gateway REST (payload 1.0)
// event, routed as the deployed API routes it, or (frontDoor alb) an Application Load Balancer
// event, routed as the ALB's listener rules route it. Paths that name no XKS route get what the
// deployed front door answers itself (API Gateway's gateway responses, the listener's fixed
// response): 404 InvalidUriPathException.

import { isUtf8 } from 'node:buffer';
import { constants as cryptoConstants, randomUUID, X509Certificate } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { ALBEvent, APIGatewayProxyEvent, Context } from 'aws-lambda';
import { safeErrorMessage, XksError } from '../functions/errors.ts';
import {
  type ApiRoute,
  albRoute,
  apiRoute,
  type FrontDoor,
  type LambdaHandler,
} from '../functions/handlers.ts';

export type { FrontDoor, LambdaHandler };

type Operation = ApiRoute['operation'];

/**
 * What a hostile client can hold or make the server hold. KMS needs little of it: small signed
 * POSTs, each answered within 250 ms end to end (spec: GetKeyMetadata, its last paragraph), so the
 * limits are far above what KMS uses and far below what hurts.
 */
export interface ServerLimits {
  /**
   * Larger bodies are refused while they are read, and a larger Content-Length before a byte of the
   * body is read (API Gateway's own limit is 10 MB; this proxy's largest fields are 64 KiB).
   */
  maxBodyBytes: number;
  /** Request line and headers together (node's maxHeaderSize); larger: 431. */
  maxHeaderBytes: number;
  /** Header fields; more: 431. */
  maxHeaders: number;
  /** A connection that has not completed its TLS handshake by then is destroyed. */
  handshakeTimeoutMs: number;
  /** The request line and headers must have arrived by then (slowloris): 408. */
  headersTimeoutMs: number;
  /** The whole request, body included, must have arrived by then: 408. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed this long after its last response (node adds 1 s). */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic either way for this long (e.g. a client that never reads) is destroyed. */
  idleTimeoutMs: number;
  /** How often node checks the headers and request timeouts; they can overrun by this much. */
  timeoutCheckIntervalMs: number;
  /** Open TCP connections, handshakes included; beyond it new connections are dropped at once. */
  maxConnections: number;
  /** Requests on one connection (0: no limit); the last is answered with `Connection: close`. */
  maxRequestsPerSocket: number;
  /**
   * A request refused before its body was read (too large, too many headers, no or two Host
   * headers) is answered at once; then up to this many bytes of the rest of its body are read and
   * thrown away before the connection closes, so that a client still sending can finish and read
   * the answer instead of meeting a reset. A larger body, or more time than discardTimeoutMs:
   * the connection is destroyed.
   */
  maxDiscardBytes: number;
  discardTimeoutMs: number;
}

/**
 * The V8 flags the local server runs with (package.json `start`; the benchmarks start it the same
 * way): the young generation fixed at 16 MB per semi-space, so that memory under a steady load is
 * predictable (docs/performance.md, Memory; docs/reliability.md, Soak).
 */
export const NODE_FLAGS: readonly string[] = ['--min-semi-space-size=16', '--max-semi-space-size=16'];

export const DEFAULT_LIMITS: Readonly<ServerLimits> = {
  maxBodyBytes: 1024 * 1024,
  maxHeaderBytes: 16 * 1024,
  maxHeaders: 100,
  handshakeTimeoutMs: 5_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  timeoutCheckIntervalMs: 1_000,
  maxConnections: 1_000,
  maxRequestsPerSocket: 1_000,
  maxDiscardBytes: 4 * 1024 * 1024,
  discardTimeoutMs: 5_000,
};

export interface ServerOptions extends Partial<ServerLimits> {
  handlers: Record<Operation, LambdaHandler>;
  /**
   * The front door the server plays (apigateway when absent): the events it makes, and how it
   * routes a URI path to a handler (functions/handlers.ts apiRoute, albRoute).
   */
  frontDoor?: FrontDoor;
  /** PEM key and certificate; plain HTTP without them. */
  tls?: { key: Buffer | string; cert: Buffer | string };
  /**
   * Mutual TLS: client certificates must chain to `ca`. As API Gateway, the server also cuts off a
   * client whose subject CN `allows` refuses, right after the handshake, before a request is read;
   * as an ALB in verify mode it checks the chain only, and passes the subject on in the
   * X-Amzn-Mtls-Clientcert-* headers, for the handler to check.
   */
  clientCertificate?: { ca: Buffer | string; allows: (commonName: string | undefined) => boolean };
  stage?: string;
  /**
   * Told of every request the server answers itself, without a handler (an unknown path, its own
   * limits, a malformed request): the handlers log the others, so that every request is logged.
   */
  onRefused?: (refusal: Refusal) => void;
}

/** A request the server answered itself, with the error it answered. */
export interface Refusal {
  error: XksError;
  /** Unknown when the request could not be parsed. */
  method?: string;
  path?: string;
  sourceIp?: string;
  /** From the request's arrival (its headers parsed) to the answer; unknown without a request. */
  latencyMs?: number;
}

/** Spec (API content type): TLS 1.2 or later with one of these suites; we offer only these. */
export const TLS_CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
].join(':');

const JSON_HEADERS = { 'content-type': 'application/json' };

export function createProxyServer(options: ServerOptions): Server {
  const limits: ServerLimits = { ...DEFAULT_LIMITS };
  for (const name of Object.keys(DEFAULT_LIMITS) as Array<keyof ServerLimits>) {
    const value = options[name];
    if (value !== undefined) limits[name] = value;
  }
  // Requests per connection, counted here rather than with node's maxRequestsPerSocket, which
  // answers pipelined requests past the limit with a bare 503 (no XKS error body).
  const served = new WeakMap<Socket, number>();
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const count = (served.get(req.socket) ?? 0) + 1;
    served.set(req.socket, count);
    // RFC 9112 section 9.6: after a response with `close`, no further request on that connection is
    // processed; pipelined ones already parsed go unanswered and the client retries them elsewhere.
    const cap = limits.maxRequestsPerSocket;
    if (cap > 0 && count > cap) return;
    if (count === cap) res.setHeader('connection', 'close');
    // Pipelined requests run at once and node sends the answers in order. A client that never reads
    // them makes node stop reading once the queued answers pass the socket's high-water mark: the
    // server then holds the answers to about one read's worth of requests (at most the cap), until
    // idleTimeoutMs destroys the connection.
    const started = performance.now();
    handle(req, res, options, limits, started).catch(() => {
      // handle() answers every error itself; this only guards against a broken socket.
      if (!res.headersSent && !req.socket.destroyed) {
        const error = new XksError('InternalException', 'Internal error');
        refuse(req, res, error, false, { limits, options, started });
      }
    });
  };
  const http = {
    // A missing Host gets the XKS answer below, not node's bare 400.
    requireHostHeader: false,
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: limits.timeoutCheckIntervalMs,
  };
  const mtls = options.clientCertificate;
  const server = options.tls
    ? createHttpsServer(
        {
          ...http,
          key: options.tls.key,
          cert: options.tls.cert,
          minVersion: 'TLSv1.2',
          ciphers: TLS_CIPHERS,
          honorCipherOrder: true,
          // Each TLS 1.2 renegotiation is a full handshake a client can demand at will (node only
          // caps it at 3 per 10 minutes); KMS never renegotiates. TLS 1.3 has none.
          secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
          handshakeTimeout: limits.handshakeTimeoutMs,
          // Unknown CA, expired, self-signed or missing: the handshake itself fails.
          ...(mtls ? { requestCert: true, rejectUnauthorized: true, ca: mtls.ca } : {}),
        },
        listener,
      )
    : createHttpServer(http, listener);
  if (mtls && options.tls && options.frontDoor !== 'alb') {
    // Before the HTTP layer's own listener, so that not a byte of a request is read.
    server.prependListener('secureConnection', (socket: TLSSocket) => {
      if (!mtls.allows(socket.getPeerCertificate().subject?.CN as string | undefined)) socket.destroy();
    });
  }
  server.maxConnections = limits.maxConnections;
  server.setTimeout(limits.idleTimeoutMs);
  // `Expect: 100-continue` with a Content-Length over the limit: refused before the body is invited.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (declaredLength(req) <= limits.maxBodyBytes) res.writeContinue();
    listener(req, res);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    answerClientError(err, socket, options.onRefused);
  });
  return server;
}

/**
 * Requests node's parser refuses (bad syntax, headers over maxHeaderBytes, headers or request
 * timeout): node's own answers have no body; these carry an XKS error body (spec: Error codes), so
 * that even then the answer is one KMS can read. Syntax is the request's invalid input (400
 * ValidationException); size and time have HTTP statuses of their own (functions/errors.ts).
 */
function answerClientError(
  err: NodeJS.ErrnoException,
  socket: Duplex,
  onRefused: ServerOptions['onRefused'],
): void {
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (socket.writable && !inFlight?.headersSent && err.code !== 'ECONNRESET') {
    const error =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? new XksError('RequestHeaderFieldsTooLarge', 'The request headers are too large')
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? new XksError('RequestTimeout', 'The request did not arrive in time')
          : new XksError('ValidationException', 'The request is not valid HTTP/1.1');
    onRefused?.({ error, sourceIp: (socket as Partial<Socket>).remoteAddress });
    const body = errorBody(error);
    socket.write(
      `HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  options: ServerOptions,
  limits: ServerLimits,
  started: number,
) {
  const context = { limits, options, started };
  // rawHeaders holds name and value: two entries per field.
  if (req.rawHeaders.length / 2 > limits.maxHeaders) {
    const error = new XksError('RequestHeaderFieldsTooLarge', 'The request has too many headers');
    refuse(req, res, error, true, context);
    return;
  }
  // RFC 9112 section 3.2: exactly one Host, or 400. Which of two a signature covers would be
  // ambiguous, and API Gateway takes the request's Host for the signed one.
  const hosts = hostCount(req.rawHeaders);
  if (hosts !== 1) {
    const message =
      hosts === 0 ? 'The request has no Host header' : 'The request has more than one Host header';
    refuse(req, res, new XksError('ValidationException', message), true, context);
    return;
  }
  const url = req.url ?? '/';
  const queryAt = url.indexOf('?');
  const path = queryAt === -1 ? url : url.slice(0, queryAt);
  const alb = options.frontDoor === 'alb';
  const api = alb ? undefined : apiRoute(path);
  const operation = alb ? albRoute(path) : api?.operation;
  // Read (or, for an unknown path, drained) only up to the limit, whatever the path.
  const body = await readBody(req, limits.maxBodyBytes, operation !== undefined);
  if (operation === undefined) {
    const error = new XksError('InvalidUriPathException', 'No XKS API at this URI path');
    refuse(req, res, error, body === undefined, context);
    return;
  }
  if (body === undefined) {
    // Spec (Error codes): 501 is for "a parameter value [that] exceeded the maximum size that is
    // currently supported by a specific implementation beyond the minimum size required by this API
    // specification", which a body over the limit necessarily holds; 413 has no row in the table.
    const error = new XksError('UnsupportedOperationException', 'The request body is too large');
    refuse(req, res, error, true, context);
    return;
  }
  const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
  const requestId = randomUUID();
  const event = alb
    ? toAlbEvent(req, path, query, body)
    : toEvent(req, path, api as ApiRoute, query, body, options.stage ?? 'local', requestId);
  const result = await options.handlers[operation](event, lambdaContext(operation, requestId));
  const headers = 'multiValueHeaders' in result ? result.multiValueHeaders : result.headers;
  send(res, result.statusCode, headers ?? {}, result.body);
}

function hostCount(rawHeaders: string[]): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') count++;
  }
  return count;
}

/**
 * Answers a request with `error` (status and errorName from functions/errors.ts) and tells
 * onRefused. When the request's body is still `unread`, the connection closes after the answer, and
 * the rest of the body is first read and thrown away (discardRest).
 */
function refuse(
  req: IncomingMessage,
  res: ServerResponse,
  error: XksError,
  unread: boolean,
  { limits, options, started }: { limits: ServerLimits; options: ServerOptions; started: number },
): void {
  const url = req.url ?? '';
  const queryAt = url.indexOf('?');
  options.onRefused?.({
    error,
    method: req.method,
    path: queryAt === -1 ? url : url.slice(0, queryAt),
    sourceIp: req.socket.remoteAddress,
    latencyMs: Math.round((performance.now() - started) * 1000) / 1000,
  });
  const body = errorBody(error);
  if (!unread) {
    send(res, error.statusCode, JSON_HEADERS, body);
    return;
  }
  res.writeHead(error.statusCode, {
    ...JSON_HEADERS,
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  // The whole answer (Content-Length framed) goes out now; ending the response closes the connection.
  res.write(body);
  discardRest(req, res, limits);
}

/**
 * Reads and throws away the rest of a refused request's body, then ends the response, which closes
 * the connection. Closing while the client is still sending would make its TCP stack meet a reset,
 * which can destroy the answer before the client has read it (RFC 9112 section 9.6). Bounded: a
 * body announced larger than maxDiscardBytes, or a client that asked first (Expect: 100-continue)
 * and so sends nothing, is not waited for; past maxDiscardBytes or discardTimeoutMs the connection
 * is destroyed.
 */
function discardRest(req: IncomingMessage, res: ServerResponse, limits: ServerLimits): void {
  const asked = req.headers.expect?.toLowerCase() === '100-continue';
  if (req.complete || asked || declaredLength(req) > limits.maxDiscardBytes) {
    res.end();
    return;
  }
  let discarded = 0;
  const timer = setTimeout(() => req.socket.destroy(), limits.discardTimeoutMs);
  const stop = () => {
    clearTimeout(timer);
    req.off('data', onData);
  };
  const onData = (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > limits.maxDiscardBytes) {
      stop();
      req.socket.destroy();
    }
  };
  req.on('data', onData);
  req.once('end', () => {
    stop();
    res.end();
  });
  req.once('close', stop);
  req.resume();
}

/** The Content-Length the client announced (node has checked it is a number), 0 without one. */
function declaredLength(req: IncomingMessage): number {
  return Number(req.headers['content-length'] ?? 0);
}

/**
 * The body (empty when not kept), or undefined when it is longer than the limit: refused on the
 * announced Content-Length before a byte is read, and counted while a chunked body is read. Nothing
 * past the limit is buffered; the request stays paused, and the connection closes after the answer.
 */
function readBody(req: IncomingMessage, limit: number, keep: boolean): Promise<Buffer | undefined> {
  if (declaredLength(req) > limit) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        resolve(undefined);
        return;
      }
      if (keep) chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(keep ? Buffer.concat(chunks, size) : Buffer.alloc(0)));
    req.on('error', reject);
    // Cut off mid-body (request timeout, client gone): settle, so nothing waits on it.
    req.on('close', () => {
      if (!req.complete) reject(new Error('request closed before its end'));
    });
  });
}

/** An API Gateway REST API (payload format 1.0) proxy event. */
function toEvent(
  req: IncomingMessage,
  path: string,
  route: ApiRoute,
  query: string,
  body: Buffer,
  stage: string,
  requestId: string,
): APIGatewayProxyEvent {
  // No prototype: a header named `constructor` or `__proto__` is just a header.
  const headers: Record<string, string> = Object.create(null);
  const multiValueHeaders: Record<string, string[]> = Object.create(null);
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    headers[name] = value;
    multiValueHeaders[name] = [...(multiValueHeaders[name] ?? []), value];
  }
  const params = new URLSearchParams(query);
  // No prototype either: a parameter named `constructor` or `__proto__` is just a parameter.
  const queryStringParameters: Record<string, string> = Object.create(null);
  const multiValueQueryStringParameters: Record<string, string[]> = Object.create(null);
  for (const [name, value] of params) {
    queryStringParameters[name] = value;
    multiValueQueryStringParameters[name] = [...(multiValueQueryStringParameters[name] ?? []), value];
  }
  const hasQuery = params.size > 0;
  const socket = req.socket as Partial<TLSSocket>;
  const method = req.method ?? 'GET';
  const resource = route.resource;
  return {
    resource,
    path,
    httpMethod: method,
    headers,
    multiValueHeaders,
    queryStringParameters: hasQuery ? queryStringParameters : null,
    multiValueQueryStringParameters: hasQuery ? multiValueQueryStringParameters : null,
    pathParameters: route.keyId === undefined ? null : { keyId: decodeURIComponentSafe(route.keyId) },
    stageVariables: null,
    // Binary-safe, as API Gateway delivers bodies when binaryMediaTypes is */*: the SigV4 hash is
    // then over exactly the bytes the client sent.
    body: body.toString('base64'),
    isBase64Encoded: true,
    requestContext: {
      accountId: 'local',
      apiId: 'local',
      authorizer: null,
      domainName: headers.host ?? headers.Host ?? 'localhost',
      httpMethod: method,
      path,
      protocol: `HTTP/${req.httpVersion}`,
      requestId,
      requestTimeEpoch: Date.now(),
      resourceId: 'local',
      resourcePath: resource,
      stage,
      identity: {
        accessKey: null,
        accountId: null,
        apiKey: null,
        apiKeyId: null,
        caller: null,
        clientCert: clientCertOf(req),
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp: socket.remoteAddress ?? '',
        user: null,
        userAgent: headers['user-agent'] ?? null,
        userArn: null,
      },
    },
  };
}

/** The client certificate as API Gateway's mutual TLS passes it to the Lambda. */
function clientCertOf(
  req: IncomingMessage,
): APIGatewayProxyEvent['requestContext']['identity']['clientCert'] {
  const socket = req.socket as Partial<TLSSocket>;
  const cert = socket.getPeerCertificate?.();
  if (!cert || Object.keys(cert).length === 0) return null;
  const dn = (name: Record<string, unknown> | undefined) =>
    Object.entries(name ?? {})
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(',');
  return {
    clientCertPem: '',
    subjectDN: dn(cert.subject as unknown as Record<string, unknown>),
    issuerDN: dn(cert.issuer as unknown as Record<string, unknown>),
    serialNumber: cert.serialNumber,
    validity: { notBefore: cert.valid_from, notAfter: cert.valid_to },
  };
}

/**
 * An ALB event, as the target groups infra/alb/ makes pass it: multi-value headers (names in lower
 * case), the query string's parameters as sent (ALB does not decode them), the path as sent, and
 * with mutual TLS, the client certificate in ALB's X-Amzn-Mtls-Clientcert-* headers. Those come
 * after any the client sent under the same names: whether ALB drops those is not documented, so
 * the server keeps them, and the handler must tell (functions/front-door.ts).
 */
function toAlbEvent(req: IncomingMessage, path: string, query: string, body: Buffer): ALBEvent {
  const headers: Record<string, string[]> = Object.create(null);
  const add = (name: string, value: string) => {
    headers[name] = [...(headers[name] ?? []), value];
  };
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) add((raw[i] as string).toLowerCase(), raw[i + 1] as string);
  const socket = req.socket as Partial<TLSSocket>;
  add('x-forwarded-for', socket.remoteAddress ?? '');
  add('x-forwarded-proto', socket.encrypted ? 'https' : 'http');
  add('x-forwarded-port', String(socket.localPort ?? ''));
  const raw509 = socket.getPeerCertificate?.()?.raw;
  if (raw509 !== undefined) {
    const cert = new X509Certificate(raw509);
    add('x-amzn-mtls-clientcert-serial-number', cert.serialNumber);
    add('x-amzn-mtls-clientcert-issuer', rfc2253(cert.issuer));
    add('x-amzn-mtls-clientcert-subject', rfc2253(cert.subject));
    add('x-amzn-mtls-clientcert-validity', `NotBefore=${cert.validFrom};NotAfter=${cert.validTo}`);
  }
  const parameters: Record<string, string[]> = Object.create(null);
  for (const pair of query.split('&').filter(Boolean)) {
    const at = pair.indexOf('=');
    const name = at === -1 ? pair : pair.slice(0, at);
    parameters[name] = [...(parameters[name] ?? []), at === -1 ? '' : pair.slice(at + 1)];
  }
  // ALB passes text as it is and Base64-encodes what is not (its Lambda events say which).
  const text = isUtf8(body) && /^(text\/|application\/json)/i.test(req.headers['content-type'] ?? '');
  return {
    requestContext: {
      elb: { targetGroupArn: 'arn:aws:elasticloadbalancing:local:000000000000:targetgroup/local/0' },
    },
    httpMethod: req.method ?? 'GET',
    path,
    multiValueQueryStringParameters: parameters,
    multiValueHeaders: headers,
    body: body.toString(text ? 'utf8' : 'base64'),
    isBase64Encoded: !text,
  };
}

/** A DN as Node's X509Certificate prints it (one attribute a line, root first) in RFC 2253 form. */
function rfc2253(dn: string): string {
  return dn
    .split('\n')
    .reverse()
    .map((attribute) => {
      const at = attribute.indexOf('=');
      return `${attribute.slice(0, at)}=${attribute.slice(at + 1).replace(/[,+"\\<>;]/g, '\\$&')}`;
    })
    .join(',');
}

function lambdaContext(operation: Operation, requestId: string): Context {
  const functionName = `xks-proxy-local-${operation}`;
  const deadline = Date.now() + 30_000;
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: requestId,
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => deadline - Date.now(),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** API Gateway URL-decodes path parameters; a malformed escape stays as it is. */
function decodeURIComponentSafe(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function errorBody(error: XksError): string {
  return JSON.stringify({ errorName: error.errorName, errorMessage: safeErrorMessage(error.message) });
}

function send(
  res: ServerResponse,
  status: number,
  headers: Record<string, boolean | number | string | Array<boolean | number | string>>,
  body: string,
) {
  const values = Object.entries(headers).map(([name, value]): [string, string | string[]] => [
    name,
    Array.isArray(value) ? value.map(String) : String(value),
  ]);
  res.writeHead(status, { ...Object.fromEntries(values), 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
