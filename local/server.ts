// A small HTTP(S) server that turns each request into the API Gateway REST (payload 1.0) event the
// deployed API would send, and calls the same Lambda handler modules. Paths that name no XKS
// route get what the deployed API answers (its gateway responses): 404 InvalidUriPathException.
import { constants as cryptoConstants, randomUUID } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { commonNameMatcher } from '../functions/mtls.ts';
import { type Operation, parseRoute, type Route, resourceOf } from '../functions/routes.ts';

export type LambdaHandler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;

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
}

/**
 * The V8 flags the local server runs with (package.json `start`; the benchmarks start it the same
 * way): the young generation at a fixed 16 MB per semi-space from the start. Left to itself, V8
 * grows it under steady load minutes after start (committed heap 60 -> 94 -> 150 MB in --trace-gc,
 * RSS up in steps of 30-50 MB, live heap ~20 MB throughout: docs/reliability.md, Soak), so memory
 * is only predictable when it is fixed.
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
};

export interface ServerOptions extends Partial<ServerLimits> {
  handlers: Record<Operation, LambdaHandler>;
  /** PEM key and certificate; plain HTTP without them. */
  tls?: { key: Buffer | string; cert: Buffer | string };
  /**
   * Mutual TLS: client certificates must chain to `ca` and carry an allowed subject CN; any other
   * client is cut off right after the handshake, before a request is read.
   */
  clientCertificate?: { ca: Buffer | string; allowedCommonNames: string[] };
  stage?: string;
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
    handle(req, res, options, limits).catch(() => {
      // handle() answers every error itself; this only guards against a broken socket.
      if (!res.headersSent && !req.socket.destroyed) {
        send(res, 500, JSON_HEADERS, xksError('InternalException', 'Internal error'));
      }
    });
  };
  const http = {
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
  if (mtls && options.tls) {
    const allowed = commonNameMatcher(mtls.allowedCommonNames);
    // Before the HTTP layer's own listener, so that not a byte of a request is read.
    server.prependListener('secureConnection', (socket: TLSSocket) => {
      if (!allowed(socket.getPeerCertificate().subject?.CN as string | undefined)) socket.destroy();
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
    answerClientError(err, socket);
  });
  return server;
}

/**
 * Requests node's parser refuses (bad syntax, headers over maxHeaderBytes, headers or request
 * timeout): node's own answers have no body; these carry an XKS error body (spec: Error codes), so
 * that even then the answer is one KMS can read. There is no row for a malformed HTTP message: the
 * status names the HTTP reason, ValidationException (the message itself is the invalid input) the
 * XKS one.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (socket.writable && !inFlight?.headersSent && err.code !== 'ECONNRESET') {
    const [status, reason, message] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'The request headers are too large']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout', 'The request did not arrive in time']
          : [400, 'Bad Request', 'The request is not valid HTTP/1.1'];
    const body = xksError('ValidationException', message);
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(
        body,
      )}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  options: ServerOptions,
  limits: ServerLimits,
) {
  // rawHeaders holds name and value: two entries per field.
  if (req.rawHeaders.length / 2 > limits.maxHeaders) {
    res.setHeader('connection', 'close');
    send(res, 431, JSON_HEADERS, xksError('ValidationException', 'The request has too many headers'));
    return;
  }
  const url = req.url ?? '/';
  const queryAt = url.indexOf('?');
  const path = queryAt === -1 ? url : url.slice(0, queryAt);
  const route = parseRoute(path);
  // Read (or, for an unknown path, drained) only up to the limit, whatever the path.
  const body = await readBody(req, limits.maxBodyBytes, route !== undefined);
  if (body === undefined) {
    // The rest of the body is never read: the connection closes after this answer.
    res.setHeader('connection', 'close');
  }
  if (route === undefined) {
    send(res, 404, JSON_HEADERS, xksError('InvalidUriPathException', 'No XKS API at this URI path'));
    return;
  }
  if (body === undefined) {
    // Spec (Error codes): 501 is for "a parameter value [that] exceeded the maximum size that is
    // currently supported by a specific implementation beyond the minimum size required by this API
    // specification", which a body over the limit necessarily holds; 413 has no row in the table.
    send(res, 501, JSON_HEADERS, xksError('UnsupportedOperationException', 'The request body is too large'));
    return;
  }
  const event = toEvent(
    req,
    path,
    route,
    queryAt === -1 ? '' : url.slice(queryAt + 1),
    body,
    options.stage ?? 'local',
  );
  const result = await options.handlers[route.operation](event, lambdaContext(route.operation, event));
  send(res, result.statusCode, result.headers ?? {}, result.body);
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
  route: Route,
  query: string,
  body: Buffer,
  stage: string,
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
  const multiValueQueryStringParameters: Record<string, string[]> = {};
  for (const [name, value] of params) {
    multiValueQueryStringParameters[name] = [...(multiValueQueryStringParameters[name] ?? []), value];
  }
  const hasQuery = params.size > 0;
  const socket = req.socket as Partial<TLSSocket>;
  const method = req.method ?? 'GET';
  const resource = resourceOf(route);
  return {
    resource,
    path,
    httpMethod: method,
    headers,
    multiValueHeaders,
    queryStringParameters: hasQuery ? Object.fromEntries(params) : null,
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
      requestId: randomUUID(),
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

function lambdaContext(operation: Operation, event: APIGatewayProxyEvent): Context {
  const functionName = `xks-proxy-local-${operation}`;
  const deadline = Date.now() + 30_000;
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: event.requestContext.requestId,
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

function xksError(errorName: string, errorMessage: string): string {
  return JSON.stringify({ errorName, errorMessage });
}

function send(res: ServerResponse, status: number, headers: APIGatewayProxyResult['headers'], body: string) {
  res.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
