// The middleware chain every XKS route runs, in one place and in one order:
//
//   0. credentials          key store credentials from Secrets Manager or a file, when due (rotation)
//   1. injectLambdaContext  Powertools logger: Lambda context in every line, keys reset per request
//   2. logMetrics           Powertools metrics: one EMF document per request, and cold starts
//   3. respond              the JSON success body, or the spec's error body and status; one log line
//   4. route                resource -> key store (404 InvalidUriPathException); POST only (405)
//   5. authenticate         mTLS client certificate CN when configured; SigV4 over the raw body (401)
//   6. parseBody            JSON and the route's schema (400 ValidationException)
//   7. quota                the key store's request rate, local server only (429 ThrottlingException)
//   8. authorize            the key store's Cedar policies, if any; never for GetHealthStatus (403)
//
// Then the route's handler (functions/<operation>.ts) runs with a checked, typed request.
//
// From step 1 on, every middleware and every handler is synchronous (the HSM calls are too), so a
// request runs to its end without yielding: the shared logger keys and metrics never mix two
// requests, even in the local server, where one process serves many connections. Only step 0 may
// wait (for Secrets Manager), and it runs before anything per-request is set.
import { performance } from 'node:perf_hooks';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy, { type MiddlewareObj, type Request } from '@middy/core';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import type { Hsm } from '../layers/pkcs11/hsm.ts';
import { safeErrorMessage, toXksError, XksError } from './errors.ts';
import { METRIC } from './metrics.ts';
import { commonNameMatcher, commonNameOf } from './mtls.ts';
import { type Operation, parseRoute } from './routes.ts';
import { config, credentialSources, hsm, type Keystore, keystores, logger, metrics } from './runtime.ts';
import { type RequestMetadata, validatorFor } from './schemas.ts';
import { verifySigV4 } from './sigv4.ts';

/** What a route's handler gets: everything checked, nothing left to parse. */
export interface XksRequest<Body> {
  keystore: Keystore;
  /** The path's externalKeyId, in the spec's alphabet; '' for GetHealthStatus. */
  keyId: string;
  body: Body;
  /** The HSM, timed for the request's HsmLatency metric. */
  hsm: Hsm;
}

type Event = APIGatewayProxyEvent;
type Result = APIGatewayProxyResult;

/** Per-request state the middlewares hand on, kept on the (per-invocation) context. */
interface State {
  started: number;
  hsmMs: number;
  keystore?: Keystore;
  keyId: string;
  rawBody?: Buffer;
  body?: unknown;
}
type XksContext = Context & { xks: State };
type XksMiddyRequest = Request<Event, Result, Error, XksContext>;
type Middleware = MiddlewareObj<Event, Result, Error, XksContext>;

const SIGV4_SERVICE = 'kms-xks-proxy';
const KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;
const JSON_HEADERS = { 'content-type': 'application/json' };

/** A Lambda handler for one XKS operation: the chain above around `handle`. */
export function xksHandler<Body>(operation: Operation, handle: (request: XksRequest<Body>) => object) {
  return middy<Event, Result, Error, XksContext>({ timeoutEarlyInMillis: 0 })
    .use({ before: () => credentialSources.refreshIfDue() })
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics, { captureColdStartMetric: true }))
    .use(respond(operation))
    .use(route(operation))
    .use(authenticate())
    .use(parseBody(operation))
    .use(quota())
    .use(authorize(operation))
    .handler((_event, context) => {
      const state = context.xks;
      return handle({
        keystore: state.keystore as Keystore,
        keyId: state.keyId,
        body: state.body as Body,
        hsm: timed(hsm, state),
      }) as unknown as Result;
    });
}

/** 3. Success and error responses; one log line and the metrics of every request. */
function respond(operation: Operation): Middleware {
  const finish = (request: XksMiddyRequest, response: Result, error?: XksError) => {
    request.response = response;
    const state = request.context.xks;
    const latencyMs = performance.now() - state.started;
    metrics.addDimension('operation', operation);
    metrics.addMetric(METRIC.requests, MetricUnit.Count, 1);
    metrics.addMetric(METRIC.errors, MetricUnit.Count, error === undefined ? 0 : 1);
    metrics.addMetric(METRIC.latency, MetricUnit.Milliseconds, latencyMs);
    if (state.hsmMs > 0) metrics.addMetric(METRIC.hsmLatency, MetricUnit.Milliseconds, state.hsmMs);
    const line = {
      operation,
      statusCode: response.statusCode,
      outcome: error === undefined ? 'success' : 'error',
      latencyMs: round(latencyMs),
      hsmLatencyMs: round(state.hsmMs),
      // Which HSM of the fleet served it (spec: Logging).
      hsm: state.hsmMs > 0 ? hsm.servedBy() : undefined,
    };
    if (error === undefined) {
      logger.info('XKS request', line);
      return;
    }
    const single = metrics.singleMetric();
    single.addDimensions({ operation, errorName: error.errorName });
    single.addMetric(METRIC.errorsByName, MetricUnit.Count, 1);
    const failure = { ...line, errorName: error.errorName, errorMessage: error.message };
    if (error.statusCode >= 500) logger.error('XKS request', { ...failure, error: error.cause ?? error });
    else logger.warn('XKS request', failure);
  };
  return {
    before: (request) => {
      request.context.xks = { started: performance.now(), hsmMs: 0, keyId: '' };
    },
    after: (request) => {
      finish(request, { statusCode: 200, headers: JSON_HEADERS, body: JSON.stringify(request.response) });
    },
    onError: (request) => {
      request.context.xks ??= { started: performance.now(), hsmMs: 0, keyId: '' };
      if (request.context.xks.body === undefined) logUnverifiedRequestId(request.event);
      const error = toXksError(request.error);
      const body = { errorName: error.errorName, errorMessage: safeErrorMessage(error.message) };
      const headers = error.statusCode === 405 ? { ...JSON_HEADERS, allow: 'POST' } : JSON_HEADERS;
      finish(request, { statusCode: error.statusCode, headers, body: JSON.stringify(body) }, error);
      // No return value: the Powertools onError hooks after this one still run.
    },
  };
}

/** 4. The key store the path prefix names, and the key id; POST only. */
function route(operation: Operation): Middleware {
  return {
    before: ({ event, context }) => {
      // Routed on the resource (`<prefix>/kms/xks/v1/keys/{keyId}/encrypt`) and its path
      // parameter: event.path carries the base path of a custom domain, requestContext.path the
      // stage of an execute-api URL, the resource neither.
      const parsed = parseRoute(event.resource ?? '');
      const keystore = parsed && keystores.get(parsed.pathPrefix);
      if (parsed?.operation !== operation || keystore === undefined) {
        throw new XksError('InvalidUriPathException', 'No XKS API at this URI path');
      }
      if (event.httpMethod !== 'POST') {
        throw new XksError('MethodNotAllowed', `${operation} takes POST only`);
      }
      context.xks.keystore = keystore;
      if (parsed.keyId !== undefined) {
        const keyId = event.pathParameters?.keyId ?? '';
        // Only ids in the spec's alphabet reach the logs and the HSM.
        if (!KEY_ID.test(keyId)) {
          throw new XksError('ValidationException', 'externalKeyId must be 1-128 of A-Z a-z 0-9 . - _');
        }
        context.xks.keyId = keyId;
      }
      logger.appendKeys({ keystore: keystore.name, keyId: context.xks.keyId || undefined });
    },
  };
}

/** 5. The mTLS client certificate, when required; SigV4 over what the client sent. */
function authenticate(): Middleware {
  const allowed = config.clientCertificate && commonNameMatcher(config.clientCertificate.allowedCommonNames);
  return {
    before: ({ event, context }) => {
      if (allowed !== undefined) {
        // API Gateway mutual TLS (or the local server) checked the chain; the subject is ours to
        // check (spec: Authentication: only CN=cks.kms.<region>.amazonaws.com).
        if (!allowed(commonNameOf(event.requestContext?.identity?.clientCert?.subjectDN))) {
          throw new XksError(
            'AuthenticationFailedException',
            'mTLS client certificate missing or not allowed',
          );
        }
      }
      const keystore = context.xks.keystore as Keystore;
      const body = rawBody(event);
      context.xks.rawBody = body;
      const { accessKeyId } = verifySigV4(
        {
          method: event.httpMethod,
          // The full path the client sent and signed (with the stage or the base path).
          path: event.requestContext?.path ?? event.path,
          query: queryOf(event),
          headers: event.multiValueHeaders ?? singleValued(event.headers),
          body,
        },
        {
          service: SIGV4_SERVICE,
          secretOf: keystore.secretOf,
          allowedRegions: keystore.allowedRegions,
          now: Date.now(),
        },
      );
      logger.appendKeys({ accessKeyId });
    },
  };
}

/** 7. The key store's quota, counted after authentication: unsigned floods cannot use it up. */
function quota(): Middleware {
  return {
    before: ({ context }) => {
      if (!(context.xks.keystore as Keystore).admit()) {
        throw new XksError('ThrottlingException', 'The request rate of this key store is over its quota');
      }
    },
  };
}

/**
 * 8. Secondary authorization (spec: Authorization): the key store's Cedar policies decide from the
 * request metadata; the log line names the deciding policies. GetHealthStatus is never authorized
 * (spec: GetHealthStatus MUST be excluded).
 */
function authorize(operation: Operation): Middleware {
  return {
    before: ({ context }) => {
      const keystore = context.xks.keystore as Keystore;
      if (keystore.authorizer === undefined || operation === 'GetHealthStatus') return;
      const decision = keystore.authorizer.authorize({
        operation,
        keystore: keystore.name,
        keyId: context.xks.keyId,
        requestMetadata: (context.xks.body as { requestMetadata: RequestMetadata }).requestMetadata,
      });
      logger.appendKeys({
        authorization: decision.allowed ? 'allow' : 'deny',
        policyIds: decision.policyIds,
        ...(decision.errors.length > 0 ? { policyErrors: decision.errors } : {}),
      });
      if (!decision.allowed) {
        throw new XksError(
          'AccessDeniedException',
          decision.policyIds.length > 0
            ? `Denied by policy ${decision.policyIds.join(', ')}`
            : 'No policy permits this request',
        );
      }
    },
  };
}

/** 6. The JSON body against the route's schema. GetHealthStatus never answers ValidationException. */
function parseBody(operation: Operation): Middleware {
  const validate = validatorFor(operation);
  return {
    before: ({ event, context }) => {
      let body: unknown;
      try {
        body = JSON.parse((context.xks.rawBody ?? rawBody(event)).toString('utf8'));
      } catch {
        // The parser's message quotes the body: never pass it on.
        if (operation !== 'GetHealthStatus')
          throw new XksError('ValidationException', 'The body is not JSON');
      }
      if (operation === 'GetHealthStatus') {
        // Spec (Error codes): ValidationException is for all APIs except GetHealthStatus.
        try {
          validate(body);
        } catch {
          body = { requestMetadata: {} };
        }
      } else {
        validate(body);
      }
      context.xks.body = body;
      logger.appendKeys(metadataKeys((body as { requestMetadata: RequestMetadata }).requestMetadata));
    },
  };
}

/** The request metadata worth a log field (spec: Logging); the optional ones only when present. */
function metadataKeys(m: RequestMetadata): Record<string, string> {
  const keys: Record<string, string> = {};
  for (const name of [
    'kmsRequestId',
    'kmsOperation',
    'awsPrincipalArn',
    'kmsKeyArn',
    'awsSourceVpc',
    'awsSourceVpce',
    'kmsViaService',
  ] as const) {
    const value = m[name];
    if (typeof value === 'string') keys[name] = value;
  }
  return keys;
}

/**
 * For requests refused before their body was checked (path, mTLS, SigV4): the kmsRequestId the
 * body claims, so the refusal can be found from CloudTrail (spec: Logging). Marked unverified.
 */
function logUnverifiedRequestId(event: Event): void {
  try {
    const id = JSON.parse(rawBody(event).toString('utf8'))?.requestMetadata?.kmsRequestId;
    if (typeof id === 'string') logger.appendKeys({ unverifiedKmsRequestId: id.slice(0, 256) });
  } catch {
    // No JSON body: nothing to add.
  }
}

function rawBody(event: Event): Buffer {
  return Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
}

function singleValued(headers: Event['headers'] | null | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(headers ?? {})) if (value !== undefined) out[name] = [value];
  return out;
}

function queryOf(event: Event): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [name, values] of Object.entries(event.multiValueQueryStringParameters ?? {})) {
    for (const value of values ?? []) out.push([name, value]);
  }
  return out;
}

/** The HSM with each call's duration added to the request's HSM time. */
function timed(inner: Hsm, state: State): Hsm {
  const time = <T>(call: () => T): T => {
    const start = performance.now();
    try {
      return call();
    } finally {
      state.hsmMs += performance.now() - start;
    }
  };
  return {
    info: () => inner.info(),
    findKey: (label, version) => time(() => inner.findKey(label, version)),
    encrypt: (key, plaintext, aad) => time(() => inner.encrypt(key, plaintext, aad)),
    decrypt: (key, input, aad) => time(() => inner.decrypt(key, input, aad)),
    close: () => inner.close(),
  };
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
