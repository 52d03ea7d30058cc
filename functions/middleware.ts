// The middleware chain every XKS route runs, in one place and in one order:
//
//   0. sources       key store credentials (rotation) and the revocation switch, from Secrets
//                    Manager or a file, read again when due
//   1. respond       the JSON success body, or the spec's error body and status; per request one
//                    log line and one EMF metrics document (plus ErrorsByName on errors)
//   2. route         resource -> key store (404 InvalidUriPathException); POST only (405)
//   3. authenticate  mTLS client certificate CN when configured; no query string; SigV4 over the
//                    raw body (401). Nothing about the request is judged before this step but its
//                    path prefix and method: a caller without credentials learns nothing else.
//   4. parseBody     the key id, JSON and the route's schema (400 ValidationException)
//   5. quota         the key store's request rate, local server only (429 ThrottlingException)
//   6. authorize     the key store's Cedar policies, if any; never for GetHealthStatus (403)
//
// Then the route's handler (functions/<operation>.ts) runs with a checked, typed request.
//
// Logging and metrics: each middleware adds its log fields (keystore, keyId, accessKeyId, the
// request metadata, the authorization decision) to the request's state, and `respond` writes the
// request's line once, at the end, in the Powertools Logger's format (same fields, same order) and
// with the same EMF document Powertools Metrics would print, with a single write. Going through
// Powertools for these cost 40-50 us per request here (appendKeys, logger.info, addMetric,
// publishStoredMetrics: each reads the environment again and again), more than the HSM call.
// Powertools still prints everything else (the ColdStart metric, 5xx lines with their error, any
// other line, metrics a handler adds), and it is told each invocation's Lambda context.
//
// From step 1 on, every middleware is synchronous; the handlers wait only for their HSM calls. Only
// step 0 may also wait (for Secrets Manager), and it runs before anything per-request is set.
import { Console } from 'node:console';
import { performance } from 'node:perf_hooks';
import { LogLevelThreshold } from '@aws-lambda-powertools/logger';
import { MetricUnit } from '@aws-lambda-powertools/metrics';
import middy, { type MiddlewareObj, type Request } from '@middy/core';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import type { AesGcmCiphertext, Hsm, HsmKey } from '../layers/pkcs11/hsm.ts';
import { type AuditRecord, auditJson } from './audit.ts';
import { safeErrorMessage, toXksError, XksError } from './errors.ts';
import { METRIC, RequestMetrics } from './metrics.ts';
import { commonNameMatcher, commonNameOf } from './mtls.ts';
import { type Operation, parseRoute, type Route } from './routes.ts';
import {
  auditTrail,
  config,
  hsm,
  type Keystore,
  keystores,
  logger,
  metrics,
  refreshIfDue,
} from './runtime.ts';
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
  /** The version of the key the HSM used (the audit record's keyVersion). */
  keyVersion?: number;
  /** Which HSM of the fleet served the request (spec: Logging). */
  servedBy?: string;
  /** Whether this is the environment's first invocation (the log line's cold_start). */
  coldStart: boolean;
  /** The request's log fields, in the order they were learnt. */
  keys: Record<string, unknown>;
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
export function xksHandler<Body>(
  operation: Operation,
  handle: (request: XksRequest<Body>) => Promise<object>,
) {
  return middy<Event, Result, Error, XksContext>({ timeoutEarlyInMillis: 0 })
    .use({ before: () => refreshIfDue() })
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
        hsm: new TimedHsm(
          hsm.serving((id) => {
            state.servedBy = id;
          }),
          state,
        ),
      }) as unknown as Result;
    });
}

/** 1. Success and error responses; one log line and the metrics of every request. */
function respond(operation: Operation): Middleware {
  const requestMetrics = new RequestMetrics(metrics, operation);
  const finish = (request: XksMiddyRequest, response: Result, error?: XksError) => {
    request.response = response;
    const state = request.context.xks;
    const latencyMs = performance.now() - state.started;
    const hsmMs = state.hsmMs;
    const line = {
      operation,
      statusCode: response.statusCode,
      outcome: error === undefined ? 'success' : 'error',
      latencyMs: round(latencyMs),
      hsmLatencyMs: round(hsmMs),
      // Which HSM of the fleet served it (spec: Logging).
      hsm: hsmMs > 0 ? state.servedBy : undefined,
      ...(error === undefined ? {} : { errorName: error.errorName, errorMessage: error.message }),
      audit: undefined as AuditRecord | undefined,
    };
    line.audit = auditRecord(operation, state, line);
    const now = Date.now();
    // The EMF documents, one per line (Console.log adds the last newline).
    let documents = '';
    if (!requestMetrics.disabled && error !== undefined) {
      documents = requestMetrics.errorByName(now, error.errorName);
    }
    if (metrics.hasStoredMetrics()) {
      // The handler added metrics of its own (GetHealthStatus): one document with them, as before.
      metrics.addDimension('operation', operation);
      metrics.addMetric(METRIC.requests, MetricUnit.Count, 1);
      metrics.addMetric(METRIC.errors, MetricUnit.Count, error === undefined ? 0 : 1);
      metrics.addMetric(METRIC.latency, MetricUnit.Milliseconds, latencyMs);
      if (hsmMs > 0) metrics.addMetric(METRIC.hsmLatency, MetricUnit.Milliseconds, hsmMs);
      metrics.publishStoredMetrics();
    } else if (!requestMetrics.disabled) {
      const document = requestMetrics.request(now, error === undefined ? 0 : 1, latencyMs, hsmMs);
      documents = documents === '' ? document : `${documents}\n${document}`;
    }
    const level =
      error === undefined
        ? LogLevelThreshold.INFO
        : error.statusCode >= 500
          ? LogLevelThreshold.ERROR
          : LogLevelThreshold.WARN;
    // Written whatever the log level: the line carries the request's audit record.
    if (level === LogLevelThreshold.ERROR || powertoolsFormat.fallback) {
      // Rare (5xx, or a Powertools setting this file does not reproduce): through Powertools, which
      // also formats the error and its cause.
      if (documents !== '') out.log(documents);
      const fields = { ...state.keys, ...line };
      if (level === LogLevelThreshold.ERROR) {
        logger.error('XKS request', { ...fields, error: error?.cause ?? error });
      } else if (level === LogLevelThreshold.WARN) logger.warn('XKS request', fields);
      else logger.info('XKS request', fields);
      return;
    }
    const text = requestLine(level, now, request.context, state, line);
    if (level === LogLevelThreshold.INFO) {
      // stdout, as Powertools writes INFO lines: the line and its metrics in one write.
      if (text !== '') out.log(documents === '' ? text : `${text}\n${documents}`);
      else if (documents !== '') out.log(documents);
    } else {
      // WARN lines go to stderr, as Powertools writes them.
      if (text !== '') out.warn(text);
      if (documents !== '') out.log(documents);
    }
  };
  const start = (context: XksContext) => {
    const coldStart = coldStartPending;
    coldStartPending = false;
    context.xks = { started: performance.now(), hsmMs: 0, coldStart, keys: {}, keyId: '' };
    // For whatever else Powertools prints during the request (its lines carry the invocation).
    if (powertoolsFormat.samplingRate) logger.refreshSampleRateCalculation();
    logger.addContext(context);
    metrics.captureColdStartMetric(context.functionName);
    requestMetrics.prepare();
  };
  return {
    before: ({ context }) => start(context),
    after: (request) => {
      finish(request, { statusCode: 200, headers: JSON_HEADERS, body: JSON.stringify(request.response) });
    },
    onError: (request) => {
      if (request.context.xks === undefined) start(request.context);
      if (request.context.xks.body === undefined) logUnverifiedRequestId(request.event, request.context.xks);
      const error = toXksError(request.error);
      const body = { errorName: error.errorName, errorMessage: safeErrorMessage(error.message) };
      const headers = error.statusCode === 405 ? { ...JSON_HEADERS, allow: 'POST' } : JSON_HEADERS;
      finish(request, { statusCode: error.statusCode, headers, body: JSON.stringify(body) }, error);
    },
  };
}

/**
 * A request the local server answered itself, before any handler (an unknown path, its own limits,
 * a malformed request): its log line and audit record, as every request has.
 */
export function logRefusal(
  error: XksError,
  request: {
    method?: string | undefined;
    path?: string | undefined;
    sourceIp?: string | undefined;
    latencyMs?: number | undefined;
  },
): void {
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
  };
  const audit = auditTrail.next({
    outcome: 'error',
    statusCode: error.statusCode,
    errorName: error.errorName,
    latencyMs: request.latencyMs,
  });
  if (error.statusCode >= 500) logger.error('XKS request', { ...fields, audit });
  else logger.warn('XKS request', { ...fields, audit });
}

/**
 * The request's audit record (functions/audit.ts): who asked what, with which key and version,
 * what was decided and what happened. Never plaintext, AAD or secrets.
 */
function auditRecord(
  operation: Operation,
  state: State,
  line: { statusCode: number; outcome: string; latencyMs: number; hsm?: string; errorName?: string },
): AuditRecord {
  const k = state.keys as Record<string, string | string[] | undefined>;
  const text = (value: unknown) => (typeof value === 'string' ? value : undefined);
  return auditTrail.next({
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
function route(operation: Operation): Middleware {
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
    before: ({ event, context }) => {
      // Routed on the resource (`<prefix>/kms/xks/v1/keys/{keyId}/encrypt`) and its path
      // parameter: event.path carries the base path of a custom domain, requestContext.path the
      // stage of an execute-api URL, the resource neither.
      const parsed = routeOf(event.resource ?? '');
      const keystore = parsed && keystores.get(parsed.pathPrefix);
      if (parsed?.operation !== operation || keystore === undefined) {
        throw new XksError('InvalidUriPathException', 'No XKS API at this URI path');
      }
      if (event.httpMethod !== 'POST') {
        throw new XksError('MethodNotAllowed', `${operation} takes POST only`);
      }
      const state = context.xks;
      state.keystore = keystore;
      state.keys.keystore = keystore.name;
      // GetHealthStatus answers as usual (it reports the HSMs); its line says the store is cut off.
      if (keystore.revoked) state.keys.revoked = true;
    },
  };
}

/**
 * 3. The mTLS client certificate, when required; SigV4 over what the client sent. A query string is
 * refused here: Appendix A fixes the canonical query string of every XKS request to "", and API
 * Gateway hands the function decoded parameters from which the signed query cannot be rebuilt
 * exactly (`+`, `%2B` and `%20`, order, repeats), so no query string is ever verified.
 */
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
      if (hasQuery(event)) {
        throw new XksError(
          'AuthenticationFailedException',
          'SigV4 authentication failed: XKS requests have no query string',
        );
      }
      const keystore = context.xks.keystore as Keystore;
      const body = rawBody(event);
      context.xks.rawBody = body;
      const { accessKeyId } = verifySigV4(
        {
          method: event.httpMethod,
          // The full path the client sent and signed (with the stage or the base path).
          path: event.requestContext?.path ?? event.path,
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
      context.xks.keys.accessKeyId = accessKeyId;
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
      const keys = context.xks.keys;
      keys.authorization = decision.allowed ? 'allow' : 'deny';
      keys.policyIds = decision.policyIds;
      if (decision.errors.length > 0) keys.policyErrors = decision.errors;
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
    before: ({ event, context }) => {
      const state = context.xks;
      if (operation !== 'GetHealthStatus') {
        const keyId = event.pathParameters?.keyId ?? '';
        // Only ids in the spec's alphabet reach the logs and the HSM.
        if (!KEY_ID.test(keyId)) {
          throw new XksError('ValidationException', 'externalKeyId must be 1-128 of A-Z a-z 0-9 . - _');
        }
        state.keyId = keyId;
        state.keys.keyId = keyId;
      }
      let body: unknown;
      try {
        body = JSON.parse((state.rawBody ?? rawBody(event)).toString('utf8'));
      } catch {
        // The parser's message quotes the body: never pass it on.
        throw new XksError('ValidationException', 'The body is not JSON');
      }
      validate(body);
      state.body = body;
      addMetadataKeys(state.keys, (body as { requestMetadata: RequestMetadata }).requestMetadata);
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
function addMetadataKeys(keys: Record<string, unknown>, m: RequestMetadata): void {
  for (const name of METADATA_KEYS) {
    const value = m[name];
    if (typeof value === 'string') keys[name] = value;
  }
}

/**
 * For requests refused before their body was checked (path, mTLS, SigV4): the kmsRequestId the
 * body claims, so the refusal can be found from CloudTrail (spec: Logging). Marked unverified.
 */
function logUnverifiedRequestId(event: Event, state: State): void {
  try {
    const id = JSON.parse((state.rawBody ?? rawBody(event)).toString('utf8'))?.requestMetadata?.kmsRequestId;
    if (typeof id === 'string') state.keys.unverifiedKmsRequestId = id.slice(0, 256);
  } catch {
    // No JSON body: nothing to add.
  }
}

function rawBody(event: Event): Buffer {
  return Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
}

function singleValued(headers: Event['headers'] | null | undefined): Record<string, string[]> {
  // No prototype: a header named `__proto__` is kept as a header.
  const out: Record<string, string[]> = Object.create(null);
  for (const [name, value] of Object.entries(headers ?? {})) if (value !== undefined) out[name] = [value];
  return out;
}

function hasQuery(event: Event): boolean {
  const query = event.multiValueQueryStringParameters ?? event.queryStringParameters;
  return query !== null && query !== undefined && Object.keys(query).length > 0;
}

/** The HSM with each call's duration added to the request's HSM time. */
class TimedHsm implements Hsm {
  readonly #inner: Hsm;
  readonly #state: State;

  constructor(inner: Hsm, state: State) {
    this.#inner = inner;
    this.#state = state;
  }

  info() {
    return this.#inner.info();
  }

  findKey(label: string, version?: number): Promise<HsmKey | undefined> {
    return this.#timed(() => this.#inner.findKey(label, version));
  }

  encrypt(key: HsmKey, plaintext: Buffer, aad: Buffer): Promise<AesGcmCiphertext> {
    this.#state.keyVersion = key.version;
    return this.#timed(() => this.#inner.encrypt(key, plaintext, aad));
  }

  decrypt(key: HsmKey, input: AesGcmCiphertext, aad: Buffer): Promise<Buffer> {
    this.#state.keyVersion = key.version;
    return this.#timed(() => this.#inner.decrypt(key, input, aad));
  }

  /** Runs an HSM call, adding its duration (failed or not) to the request's HSM time. */
  async #timed<T>(call: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await call();
    } finally {
      this.#state.hsmMs += performance.now() - start;
    }
  }

  close(): void {
    this.#inner.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The request's log line, as the Powertools Logger formats it (PowertoolsLogFormatter): level,
// message, timestamp, service, the Lambda context, sampling_rate, xray_trace_id, tenant_id, then
// the request's keys, then the line's own fields; empty values ('' / null / undefined) left out.

/**
 * Where the line and the metrics go: stdout (INFO, EMF) and stderr (WARN), through a Console as
 * Powertools writes (which also ignores write errors such as EPIPE instead of crashing).
 */
const out = new Console({ stdout: process.stdout, stderr: process.stderr });

/** Whether the first invocation of this environment is still to come (Powertools: on-demand only). */
let coldStartPending = process.env.AWS_LAMBDA_INITIALIZATION_TYPE?.trim() === 'on-demand';

/** What the logger was configured with, read once (private in the typings: no public getter). */
const powertoolsFormat = (() => {
  const internals = logger as unknown as {
    powertoolsLogData?: { serviceName?: string; sampleRateValue?: number };
    logIndentation?: number;
  };
  const data = internals.powertoolsLogData;
  const timezone = process.env.TZ?.trim() ?? '';
  return {
    service: data?.serviceName,
    samplingRate: data?.sampleRateValue,
    // Pretty-printed (POWERTOOLS_DEV), a local time zone, or a Powertools version whose fields
    // moved: the line then goes through Powertools itself.
    fallback:
      data === undefined || internals.logIndentation !== 0 || (timezone !== '' && !timezone.includes('UTC')),
  };
})();

const LEVEL_NAMES: Record<number, string> = {
  [LogLevelThreshold.INFO]: 'INFO',
  [LogLevelThreshold.WARN]: 'WARN',
};

let isoMs = Number.NaN;
let iso = '';

/** The ISO timestamp of `ms`; one Date per millisecond, however many lines fall in it. */
function timestampOf(ms: number): string {
  if (ms !== isoMs) {
    iso = new Date(ms).toISOString();
    isoMs = ms;
  }
  return iso;
}

/** The X-Ray trace id's Root, from the invocation (Lambda Managed Instances) or the environment. */
function xrayTraceId(): string | undefined {
  const store = (globalThis as { awslambda?: { InvokeStore?: { getXRayTraceId(): string | undefined } } })
    .awslambda?.InvokeStore;
  const header = (store?.getXRayTraceId() ?? process.env._X_AMZN_TRACE_ID ?? '').trim();
  if (header === '') return undefined;
  if (!header.includes('=')) return header;
  let root: string | undefined;
  for (const field of header.split(';')) {
    const [key, value] = field.split('=');
    if (key === 'Root') root = value;
  }
  return root;
}

function requestLine(
  level: number,
  now: number,
  context: Context & { tenantId?: string },
  state: State,
  line: Record<string, unknown>,
): string {
  // Written out as a string (the fields are few and their names fixed): building an object of ~25
  // properties for JSON.stringify cost twice as much. The request's keys and the line's own fields
  // never share a name with each other or with the fields before them.
  let text = `{"level":"${LEVEL_NAMES[level]}","message":"XKS request","timestamp":"${timestampOf(now)}"${invocationFields(context, state.coldStart)}`;
  text += field('function_request_id', context.awsRequestId);
  text += field('sampling_rate', powertoolsFormat.samplingRate);
  text += field('xray_trace_id', xrayTraceId());
  text += field('tenant_id', context.tenantId);
  const keys = state.keys;
  for (const key in keys) text += field(key, keys[key]);
  for (const key in line) text += field(key, line[key]);
  return `${text}}`;
}

/**
 * `,"key":value`, or nothing for the values Powertools leaves out ('' / null / undefined). The keys
 * are this file's own names (plain identifiers), never from a request: written as they are.
 */
function field(key: string, value: unknown): string {
  if (value === undefined || value === null || value === '') return '';
  // Serialized once already, to be hashed.
  if (key === 'audit') return `,"audit":${auditJson(value as AuditRecord)}`;
  const json =
    typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))
      ? String(value)
      : JSON.stringify(value);
  return `,"${key}":${json}`;
}

/** The fields that only change with the function (service to function_name), kept per context. */
let invocation: { coldStart: boolean; arn: string; memory: string; name: string; text: string } | undefined;

function invocationFields(context: Context, coldStart: boolean): string {
  const { invokedFunctionArn: arn, memoryLimitInMB: memory, functionName: name } = context;
  if (
    invocation === undefined ||
    invocation.coldStart !== coldStart ||
    invocation.arn !== arn ||
    invocation.memory !== memory ||
    invocation.name !== name
  ) {
    const text =
      field('service', powertoolsFormat.service) +
      field('cold_start', coldStart) +
      field('function_arn', arn) +
      field('function_memory_size', memory) +
      field('function_name', name);
    invocation = { coldStart, arn, memory, name, text };
  }
  return invocation.text;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
