// The middleware chain every XKS route runs, in one place and in one order:
//
//      front door    the API Gateway or ALB event as one HttpRequest; the response back in the
//                    event's shape (functions/front-door.ts): nothing below knows which it was
//   0. sources       key store credentials (rotation) and the revocation switch, from Secrets
//                    Manager or a file, read again when due
//   1. respond       the JSON success body, or the spec's error body and status; per request one
//                    log line with its audit record, and its EMF metrics
//   2. route         resource -> key store (404 InvalidUriPathException); POST only (405)
//   3. authenticate  mTLS client certificate CN when configured; no query string; SigV4 over the
//                    raw body (401). Nothing about the request is judged before this step but its
//                    path prefix and method: a caller without credentials learns nothing else.
//   4. parseBody     the key id, JSON and the route's schema (400 ValidationException)
//   5. quota         the key store's request rate, where API Gateway does not enforce it (429
//                    ThrottlingException)
//   6. authorize     the key store's Cedar policies, if any; never for GetHealthStatus (403)
//
// Then the route's handler (functions/operations/<operation>.ts) runs with a checked, typed request.
//
// Logs and metrics go through Powertools. Each middleware adds what it learnt (keystore, keyId,
// accessKeyId, the request metadata, the authorization decision) to the request's own log fields,
// and `respond` hands them to the runtime's audit logger as the request's one line, with the
// request's Lambda context, and publishes the request's metrics: each in one synchronous step,
// because the local server serves requests that overlap, and keys or metrics stored in a shared
// logger or metrics instance between the steps of two requests would mix. Any other line of the
// invocation (an HSM event, a failed refresh) goes through the runtime's logger, which
// injectLambdaContext gives the invocation's context.
import { performance } from 'node:perf_hooks';
import type { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { MetricUnit } from '@aws-lambda-powertools/metrics/types';
import middy, { type MiddlewareObj, type Request } from '@middy/core';
import type { Context } from 'aws-lambda';
import type { AesGcmCiphertext, Hsm, HsmHealth, HsmInfo, HsmKey } from '../layers/pkcs11/hsm.ts';
import type { AuditChain, AuditRecord } from './audit.ts';
import { safeErrorMessage, toXksError, XksError } from './errors.ts';
import {
  type FrontDoorEvent,
  type FrontDoorResult,
  frontDoorResult,
  type HttpRequest,
  type HttpResponse,
  httpRequestOf,
} from './front-door.ts';
import { KEY_ID } from './ids.ts';
import { publishRequestMetrics } from './metrics.ts';
import { commonNameOf } from './mtls.ts';
import { type Operation, parseRoute, type Route } from './routes.ts';
import type { Keystore, Runtime } from './runtime.ts';
import { type RequestMetadata, validatorFor } from './schemas.ts';
import { verifySigV4 } from './sigv4.ts';
import type { YoungGenerationCollector } from './young-gc.ts';

/** What a route's handler gets: everything checked, nothing left to parse. */
export interface XksRequest<Body> {
  keystore: Keystore;
  /** The path's externalKeyId, in the spec's alphabet; '' for GetHealthStatus. */
  keyId: string;
  body: Body;
  /** The HSM fleet behind one Hsm: each call goes to the first HSM that serves. Timed (HsmLatency). */
  hsm: Hsm;
  /** The fleet's HSMs one by one (GetHealthStatus). Timed too. */
  fleet: HsmFleetView;
  /** For what the request's line does not say. */
  logger: Logger;
  /** Adds a metric to the request's EMF document (dimension operation). */
  addMetric(name: string, unit: MetricUnit, value: number): void;
}

/** Each HSM of the fleet, for GetHealthStatus: what it says about itself, its recent health, a deep check. */
export interface HsmFleetView {
  readonly members: readonly { readonly name: string; info(): HsmInfo | undefined }[];
  /** UNAVAILABLE while its circuit breaker is open, DEGRADED while its last calls failed, else ACTIVE. */
  health(index: number): HsmHealth;
  /** Runs `call` on that HSM whatever its circuit breaker says, recording the outcome in it. */
  probe<T>(index: number, call: (hsm: Hsm) => Promise<T>): Promise<T>;
}

type Event = FrontDoorEvent;
type Result = FrontDoorResult;
export type LambdaHandler = (event: Event, context: Context) => Promise<Result>;

/** Per-request state the middlewares hand on, kept on the (per-invocation) context. */
interface State {
  started: number;
  /**
   * Time in HSM calls, summed over the request's calls (GetHealthStatus checks the fleet's HSMs
   * side by side: the sum of their times).
   */
  hsmMs: number;
  /** The HSM of the fleet that served the request's last routed call (spec: Logging). */
  servedBy?: string | undefined;
  /** The version of the key the HSM used (the audit record's keyVersion). */
  keyVersion?: number;
  /** The request's log fields, in the order they were learnt. */
  logFields: Record<string, unknown>;
  /** Metrics the handler added. */
  metrics: Array<{ name: string; unit: MetricUnit; value: number }>;
  keystore?: Keystore;
  keyId: string;
  body?: unknown;
}
/** The invocation's context, with the request as the front door gave it and the state of the chain. */
type XksContext = Context & { http: HttpRequest; xks: State };
type XksMiddyRequest = Request<Event, Result, Error, XksContext>;
type Middleware = MiddlewareObj<Event, Result, Error, XksContext>;

const SIGV4_SERVICE = 'kms-xks-proxy';
const JSON_HEADERS = { 'content-type': 'application/json' };
const LINE = 'XKS request';

/**
 * The Lambda handler of one XKS operation on `runtime`: the chain above around `handle`, which
 * resolves to the response body.
 */
export function xksHandler<Body>(
  runtime: Runtime,
  operation: Operation,
  handle: (request: XksRequest<Body>) => Promise<object>,
): LambdaHandler {
  const members = runtime.hsm.members.map(({ name, hsm }) => ({ name, info: () => hsm.info() }));
  return middy<Event, Result, Error, XksContext>({ timeoutEarlyInMillis: 0 })
    .use(frontDoor())
    .use(injectLambdaContext(runtime.logger, { logEvent: false }))
    .use({ before: () => runtime.refreshIfDue() })
    .use(respond(runtime, operation))
    .use(route(runtime, operation))
    .use(authenticate(runtime))
    .use(parseBody(operation))
    .use(quota())
    .use(authorize(operation))
    .handler(async (_event, context) => {
      const state = context.xks;
      const body = await handle({
        keystore: state.keystore as Keystore,
        keyId: state.keyId,
        body: state.body as Body,
        hsm: new TimedHsm(
          runtime.hsm.serving((id) => {
            state.servedBy = id;
          }),
          state,
          runtime.collector,
        ),
        fleet: {
          members,
          health: (index) => runtime.hsm.health(index),
          probe: (index, call) =>
            runtime.hsm.probe(index, (hsm) => call(new TimedHsm(hsm, state, runtime.collector))),
        },
        logger: runtime.logger,
        addMetric: (name, unit, value) => {
          state.metrics.push({ name, unit, value });
        },
      });
      // The body; `respond` makes it the response.
      return body as Result;
    });
}

/**
 * The front door: the event as the request every step below reads, and the chain's response in the
 * shape the event came in. The only step that reads the event.
 */
function frontDoor(): Middleware {
  const reshape = (request: XksMiddyRequest) => {
    if (request.response !== undefined) {
      request.response = frontDoorResult(request.event, request.response as HttpResponse);
    }
  };
  return {
    before: ({ event, context }) => {
      context.http = httpRequestOf(event);
    },
    after: reshape,
    onError: reshape,
  };
}

/** 1. Success and error responses; one log line and the metrics of every request. */
function respond(runtime: Runtime, operation: Operation): Middleware {
  const metrics = runtime.metricsOf(operation);
  const finish = (request: XksMiddyRequest, response: HttpResponse, error?: XksError) => {
    request.response = response;
    const state = request.context.xks;
    const latencyMs = performance.now() - state.started;
    const line = {
      ...state.logFields,
      operation,
      statusCode: response.statusCode,
      outcome: error === undefined ? 'success' : 'error',
      latencyMs: round(latencyMs),
      hsmLatencyMs: round(state.hsmMs),
      hsm: state.servedBy,
      ...(error === undefined ? {} : { errorName: error.errorName, errorMessage: error.message }),
    };
    const audit = auditRecord(runtime.audit, operation, state, line);
    writeLine(runtime.auditLogger, request.context, { ...line, audit }, error);
    publishRequestMetrics(metrics, {
      errorName: error?.errorName,
      latencyMs,
      hsmMs: state.hsmMs,
      extra: state.metrics,
    });
    runtime.answered();
  };
  const start = (context: XksContext) => {
    context.xks = {
      started: performance.now(),
      hsmMs: 0,
      logFields: {},
      metrics: [],
      keyId: '',
    };
    runtime.metrics.captureColdStartMetric(context.functionName);
  };
  return {
    before: ({ context }) => start(context),
    after: (request) => {
      finish(request, { statusCode: 200, headers: JSON_HEADERS, body: JSON.stringify(request.response) });
    },
    onError: (request) => {
      if (request.context.xks === undefined) start(request.context);
      if (request.context.xks.body === undefined) logUnverifiedRequestId(request.context);
      const error = toXksError(request.error);
      const body = { errorName: error.errorName, errorMessage: safeErrorMessage(error.message) };
      const headers =
        error.errorName === 'MethodNotAllowed' ? { ...JSON_HEADERS, allow: 'POST' } : JSON_HEADERS;
      finish(request, { statusCode: error.statusCode, headers, body: JSON.stringify(body) }, error);
    },
  };
}

/**
 * A request's line: INFO for a success, WARN for a refusal, ERROR for a failure of the proxy (5xx),
 * with what caused it when a handler ran. `context`: the invocation's, when a handler answered.
 */
function writeLine(
  logger: Logger,
  context: Context | undefined,
  fields: Record<string, unknown>,
  error: XksError | undefined,
): void {
  if (context !== undefined) logger.addContext(context);
  if (error === undefined) logger.info(LINE, fields);
  else if (!error.isFault) logger.warn(LINE, fields);
  else if (context === undefined) logger.error(LINE, fields);
  else logger.error(LINE, { ...fields, error: error.cause ?? error });
}

/**
 * A request the local server answered itself, before any handler (an unknown path, its own limits,
 * a malformed request): its log line and audit record, as every request has.
 */
export function logRefusal(
  runtime: Runtime,
  error: XksError,
  request: {
    method?: string | undefined;
    path?: string | undefined;
    sourceIp?: string | undefined;
    latencyMs?: number | undefined;
  },
): void {
  const audit = runtime.audit.next({
    outcome: 'error',
    statusCode: error.statusCode,
    errorName: error.errorName,
    latencyMs: request.latencyMs,
  });
  const fields = {
    httpMethod: request.method,
    // The path as sent, cut short: it comes from a client the server has just refused.
    path: request.path === undefined ? undefined : safeErrorMessage(request.path).slice(0, 256),
    sourceIp: request.sourceIp,
    statusCode: error.statusCode,
    outcome: 'error',
    errorName: error.errorName,
    errorMessage: error.message,
    latencyMs: request.latencyMs,
    audit,
  };
  writeLine(runtime.auditLogger, undefined, fields, error);
}

/**
 * The request's audit record (functions/audit.ts): who asked what, with which key and version,
 * what was decided and what happened. Never plaintext, AAD or secrets.
 */
function auditRecord(
  audit: AuditChain,
  operation: Operation,
  state: State,
  line: {
    statusCode: number;
    outcome: string;
    latencyMs: number;
    hsm?: string | undefined;
    errorName?: string;
  },
): AuditRecord {
  const k = state.logFields as Record<string, string | string[] | undefined>;
  const text = (value: unknown) => (typeof value === 'string' ? value : undefined);
  return audit.next({
    operation,
    kmsRequestId: text(k.kmsRequestId),
    unverifiedKmsRequestId: text(k.unverifiedKmsRequestId),
    kmsOperation: text(k.kmsOperation),
    keystore: text(k.keystore),
    keyId: text(k.keyId),
    keyVersion: state.keyVersion,
    principal: text(k.awsPrincipalArn),
    sourceVpc: text(k.awsSourceVpc),
    sourceVpce: text(k.awsSourceVpce),
    accessKeyId: text(k.accessKeyId),
    decision: text(k.authorization),
    policyIds: Array.isArray(k.policyIds) ? k.policyIds : undefined,
    outcome: line.outcome as 'success' | 'error',
    statusCode: line.statusCode,
    errorName: line.errorName,
    hsm: line.hsm,
    latencyMs: line.latencyMs,
  });
}

/** 2. The key store the path prefix names; POST only. */
function route(runtime: Runtime, operation: Operation): Middleware {
  // A function sees a handful of resources (one per key store): each is parsed once. Bounded,
  // since the resource comes from the event.
  const routes = new Map<string, Route | undefined>();
  const routeOf = (resource: string) => {
    if (routes.has(resource)) return routes.get(resource);
    const parsed = parseRoute(resource);
    if (routes.size >= 64) routes.clear();
    routes.set(resource, parsed);
    return parsed;
  };
  return {
    before: ({ context }) => {
      // Routed on the resource (`<prefix>/kms/xks/v1/keys/{keyId}/encrypt`): the path as sent
      // may carry the base path of a custom domain or the stage of an execute-api URL.
      const parsed = routeOf(context.http.resource);
      const keystore = parsed && runtime.keystores.get(parsed.pathPrefix);
      if (parsed?.operation !== operation || keystore === undefined) {
        throw new XksError('InvalidUriPathException', 'No XKS API at this URI path');
      }
      if (context.http.method !== 'POST') {
        throw new XksError('MethodNotAllowed', `${operation} takes POST only`);
      }
      const state = context.xks;
      state.keystore = keystore;
      state.logFields.keystore = keystore.name;
      // GetHealthStatus answers as usual (it reports the HSMs); its line says the store is cut off.
      if (keystore.revoked) state.logFields.revoked = true;
    },
  };
}

/**
 * 3. The mTLS client certificate, when required; SigV4 over what the client sent. A query string is
 * refused here: Appendix A fixes the canonical query string of every XKS request to "", and the
 * front doors hand the function parameters from which the signed query cannot be rebuilt exactly
 * (API Gateway decodes them: `+`, `%2B` and `%20`; order, repeats), so no query string is ever
 * verified.
 */
function authenticate(runtime: Runtime): Middleware {
  const allowed = runtime.allowsCommonName;
  return {
    before: ({ context }) => {
      const http = context.http;
      if (allowed !== undefined) {
        // The front door's mutual TLS (or the local server) checked the chain; the subject is ours
        // to check (spec: Authentication: only CN=cks.kms.<region>.amazonaws.com). Exactly one
        // subject: a second is one the client sent itself (functions/front-door.ts).
        const [subject, ...more] = http.clientCertSubjects;
        if (more.length > 0 || !allowed(commonNameOf(subject))) {
          throw new XksError(
            'AuthenticationFailedException',
            'mTLS client certificate missing or not allowed',
          );
        }
      }
      if (http.hasQuery) {
        throw new XksError(
          'AuthenticationFailedException',
          'SigV4 authentication failed: XKS requests have no query string',
        );
      }
      const keystore = context.xks.keystore as Keystore;
      const { accessKeyId } = verifySigV4(
        // The full path the client sent and signed (with the stage or the base path).
        { method: http.method, path: http.path, headers: http.headers, body: http.body },
        {
          service: SIGV4_SERVICE,
          secretOf: keystore.secretOf,
          allowedRegions: keystore.allowedRegions,
          now: Date.now(),
        },
      );
      context.xks.logFields.accessKeyId = accessKeyId;
    },
  };
}

/** 5. The key store's quota, counted after authentication: unsigned floods cannot use it up. */
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
 * 6. Secondary authorization (spec: Authorization): the key store's Cedar policies decide from the
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
      const fields = context.xks.logFields;
      fields.authorization = decision.allowed ? 'allow' : 'deny';
      fields.policyIds = decision.policyIds;
      if (decision.errors.length > 0) fields.policyErrors = decision.errors;
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

/**
 * 4. The key id and the JSON body against the route's schema (400 ValidationException), only once
 * the request is authenticated: a caller without credentials learns nothing from them.
 * GetHealthStatus too: its section makes kmsRequestId and kmsOperation REQUIRED, and AWS's public
 * XKS test client expects ValidationException without them, although the Error codes table lists
 * ValidationException for "ALL except GetHealthStatus" (docs/security.md, Request checks).
 */
function parseBody(operation: Operation): Middleware {
  const validate = validatorFor(operation);
  return {
    before: ({ context }) => {
      const state = context.xks;
      if (operation !== 'GetHealthStatus') {
        const keyId = context.http.keyId;
        // Only ids in the spec's alphabet reach the logs and the HSM.
        if (!KEY_ID.test(keyId)) {
          throw new XksError('ValidationException', 'externalKeyId must be 1-128 of A-Z a-z 0-9 . - _');
        }
        state.keyId = keyId;
        state.logFields.keyId = keyId;
      }
      let body: unknown;
      try {
        body = JSON.parse(context.http.body.toString('utf8'));
      } catch {
        // The parser's message quotes the body: never pass it on.
        throw new XksError('ValidationException', 'The body is not JSON');
      }
      validate(body);
      state.body = body;
      addMetadataKeys(state.logFields, (body as { requestMetadata: RequestMetadata }).requestMetadata);
    },
  };
}

const METADATA_KEYS = [
  'kmsRequestId',
  'kmsOperation',
  'awsPrincipalArn',
  'kmsKeyArn',
  'awsSourceVpc',
  'awsSourceVpce',
  'kmsViaService',
] as const;

/** The request metadata worth a log field (spec: Logging); the optional ones only when present. */
function addMetadataKeys(fields: Record<string, unknown>, m: RequestMetadata): void {
  for (const name of METADATA_KEYS) {
    const value = m[name];
    if (typeof value === 'string') fields[name] = value;
  }
}

/**
 * For requests refused before their body was checked (path, mTLS, SigV4): the kmsRequestId the
 * body claims, so the refusal can be found from CloudTrail (spec: Logging). Marked unverified.
 */
function logUnverifiedRequestId(context: XksContext): void {
  try {
    const id = JSON.parse(context.http.body.toString('utf8'))?.requestMetadata?.kmsRequestId;
    if (typeof id === 'string') context.xks.logFields.unverifiedKmsRequestId = id.slice(0, 256);
  } catch {
    // No JSON body (or no request at all): nothing to add.
  }
}

/**
 * An Hsm with each call's duration added to the request's HSM time, and, for the fleet's routed
 * calls, the HSM that served it noted as each call ends. While a call is out, the runtime's
 * collector (in Lambda) may collect the young generation (functions/young-gc.ts).
 */
class TimedHsm implements Hsm {
  readonly #inner: Hsm;
  readonly #state: State;
  readonly #collector: YoungGenerationCollector | undefined;

  constructor(inner: Hsm, state: State, collector: YoungGenerationCollector | undefined) {
    this.#inner = inner;
    this.#state = state;
    this.#collector = collector;
  }

  info() {
    return this.#inner.info();
  }

  findKey(label: string, version?: number): Promise<HsmKey | undefined> {
    return this.#timed('findKey', () => this.#inner.findKey(label, version));
  }

  encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): Promise<AesGcmCiphertext> {
    this.#state.keyVersion = key.version;
    return this.#timed('encrypt', () => this.#inner.encrypt(key, plaintext, aad));
  }

  decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Promise<Buffer> {
    this.#state.keyVersion = key.version;
    return this.#timed('decrypt', () => this.#inner.decrypt(key, input, aad));
  }

  close(): void {
    this.#inner.close();
  }

  /** Runs an HSM call, adding its duration (failed or not) to the request's HSM time. */
  async #timed<T>(kind: string, call: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      const answer = call();
      // The call is on its way to the HSM's worker thread (WorkerHsm posts it before returning), as
      // every call is in Lambda once the worker has started: this thread would idle now.
      this.#collector?.whileWaiting(kind);
      return await answer;
    } finally {
      const ms = performance.now() - start;
      this.#state.hsmMs += ms;
      this.#collector?.took(kind, ms);
    }
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
