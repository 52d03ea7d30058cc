// A small HTTP(S) server that turns each request into the API Gateway REST (payload 1.0) event the
// deployed API would send, and calls the same Lambda handler modules. Paths that name no XKS
// route get what the deployed API answers (its gateway responses): 404 InvalidUriPathException.
import { randomUUID } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { commonNameMatcher } from '../functions/mtls.ts';
import { type Operation, parseRoute, type Route, resourceOf } from '../functions/routes.ts';

export type LambdaHandler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;

export interface ServerOptions {
  handlers: Record<Operation, LambdaHandler>;
  /** PEM key and certificate; plain HTTP without them. */
  tls?: { key: Buffer | string; cert: Buffer | string };
  /**
   * Mutual TLS: client certificates must chain to `ca` and carry an allowed subject CN; any other
   * client is cut off right after the handshake, before a request is read.
   */
  clientCertificate?: { ca: Buffer | string; allowedCommonNames: string[] };
  /** Larger bodies are refused while they are read (API Gateway's own limit is 10 MB). */
  maxBodyBytes?: number;
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
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res, options, maxBodyBytes).catch(() => {
      // handle() answers every error itself; this only guards against a broken socket.
      if (!res.headersSent) send(res, 500, JSON_HEADERS, xksError('InternalException', 'Internal error'));
    });
  };
  const mtls = options.clientCertificate;
  const server = options.tls
    ? createHttpsServer(
        {
          key: options.tls.key,
          cert: options.tls.cert,
          minVersion: 'TLSv1.2',
          ciphers: TLS_CIPHERS,
          honorCipherOrder: true,
          // Unknown CA, expired, self-signed or missing: the handshake itself fails.
          ...(mtls ? { requestCert: true, rejectUnauthorized: true, ca: mtls.ca } : {}),
        },
        listener,
      )
    : createHttpServer(listener);
  if (mtls && options.tls) {
    const allowed = commonNameMatcher(mtls.allowedCommonNames);
    // Before the HTTP layer's own listener, so that not a byte of a request is read.
    server.prependListener('secureConnection', (socket: TLSSocket) => {
      if (!allowed(socket.getPeerCertificate().subject?.CN as string | undefined)) socket.destroy();
    });
  }
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return server;
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  options: ServerOptions,
  maxBodyBytes: number,
) {
  const url = req.url ?? '/';
  const queryAt = url.indexOf('?');
  const path = queryAt === -1 ? url : url.slice(0, queryAt);
  const route = parseRoute(path);
  if (route === undefined) {
    req.resume();
    send(res, 404, JSON_HEADERS, xksError('InvalidUriPathException', 'No XKS API at this URI path'));
    return;
  }
  const body = await readBody(req, maxBodyBytes);
  if (body === undefined) {
    res.setHeader('connection', 'close');
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

/** The body, or undefined when it is longer than the limit (checked while reading). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks, size)));
    req.on('error', reject);
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
  const headers: Record<string, string> = {};
  const multiValueHeaders: Record<string, string[]> = {};
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
