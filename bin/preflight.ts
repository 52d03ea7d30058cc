// `xks-proxy preflight`: checks an XKS proxy endpoint the way AWS KMS will use it, before
// CreateCustomKeyStore does, and names the KMS exception each problem would cause (spec: "Error
// codes", the KMS exception table).
//
//   npx xks-proxy preflight --endpoint https://xks.example.com --path /prefix/kms/xks/v1 \
//     --credential console.json [--key <externalKeyId>] [--mtls-cert c.pem --mtls-key k.pem] [--json]
//
// What it checks, in order: the URI rules (spec: API operations), the credential file (spec: "XKS
// proxy configuration in AWS KMS console"), TLS (spec: API content type; Authentication: the chain
// must end at one of the root CAs in TrustedCertificateAuthorities, see bin/trusted-cas.ts), mutual
// TLS, GetHealthStatus signed as KMS signs (Appendix A: SignedHeaders=host;x-amz-date), with --key
// GetKeyMetadata and an Encrypt/Decrypt round trip with a CDIV (Appendix C), the error behaviour
// (404 InvalidUriPathException, 401 AuthenticationFailedException, 405 for GET) and latency against
// KMS's 250 ms budget.
//
// The secret access key is never printed: not in the report, the JSON, or an error message.
import {
  createHash,
  createHmac,
  type Hash,
  type Hmac,
  randomBytes,
  randomUUID,
  X509Certificate,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request } from 'node:https';
import { isIP } from 'node:net';
import {
  type ConnectionOptions,
  checkServerIdentity,
  connect,
  type DetailedPeerCertificate,
  rootCertificates,
  type TLSSocket,
} from 'node:tls';
import { parseArgs } from 'node:util';
import { SignatureV4 } from '@smithy/signature-v4';
import { TRUSTED_CAS, type TrustedCa } from './trusted-cas.ts';

// ---------------------------------------------------------------------------------------------
// The report.

export type Status = 'pass' | 'warn' | 'fail';

export interface Check {
  /** Stable identifier, e.g. `tls.chain`. */
  id: string;
  title: string;
  status: Status;
  /** What was seen, in a sentence or two. */
  detail: string;
  /** For a warn or fail: the exception AWS KMS would raise because of it (spec: KMS exception table). */
  kmsException?: string;
  /** The KMS operations that exception shows up in. */
  kmsOperation?: string;
  /** The message KMS gives with it (spec: KMS exception table). */
  kmsMessage?: string;
}

export interface Report {
  target: {
    endpoint: string;
    uriPath: string;
    region: string;
    accessKeyId: string;
    externalKeyId?: string;
    mutualTls: boolean;
  };
  startedAt: string;
  durationMs: number;
  checks: Check[];
  /** Checks that could not run, with the reason (e.g. no TLS connection at all). */
  skipped: string[];
  summary: Record<Status, number>;
  /** True when no check failed. */
  ok: boolean;
}

export interface PreflightOptions {
  /** XksProxyUriEndpoint: `https://host[:port]`. */
  endpoint: string;
  /** XksProxyUriPath; default: the credential file's. */
  path?: string;
  /** The KMS console JSON file (XksProxyUriPath, XksProxyAuthenticationCredential). */
  credentialFile?: string;
  /** Instead of credentialFile. */
  credential?: { accessKeyId: string; secretAccessKey: string };
  /** An externalKeyId: GetKeyMetadata and an Encrypt/Decrypt round trip. */
  key?: string;
  /** A client certificate and key (PEM) for mutual TLS, presented as KMS presents its own. */
  mtls?: { cert: string | Buffer; key: string | Buffer };
  /** Extra CA certificates (PEM) to build the chain with: testing only, KMS does not trust them. */
  ca?: (string | Buffer)[];
  /** Testing only: a chain ending at a `ca` certificate passes (with a note) instead of warning. */
  allowUntrustedCa?: boolean;
  /** Testing only: an IP address or a single-label host name (localhost) is a warning, not a failure. */
  allowIp?: boolean;
  /** The region KMS signs from (default us-east-1). */
  region?: string;
  /** Per network call, connection and response together (default 2000 ms). */
  timeoutMs?: number;
  /** Calls per latency measurement (default 10). */
  samples?: number;
  /** requestMetadata.awsPrincipalArn of the key requests. */
  principalArn?: string;
  /** requestMetadata.kmsKeyArn of the key requests. */
  kmsKeyArn?: string;
}

/** A problem with the options themselves (a missing or unreadable file): no report can be made. */
export class PreflightUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PreflightUsageError';
  }
}

// ---------------------------------------------------------------------------------------------
// Spec constants.

/** KMS's timeout for any call, connection included (spec: KMS considerations of every API). */
export const KMS_BUDGET_MS = 250;
/** Above this a call is close enough to the budget to warn. */
export const WARN_MS = 150;
export const URI_SUFFIX = '/kms/xks/v1';
export const SERVICE = 'kms-xks-proxy';
/** Spec, API content type: TLS 1.2+ with at least one of these (OpenSSL names for the TLS 1.2 ones). */
export const SPEC_CIPHER_SUITES = [
  { name: 'TLS_AES_256_GCM_SHA384', openssl: 'TLS_AES_256_GCM_SHA384', version: 'TLSv1.3' },
  { name: 'TLS_CHACHA20_POLY1305_SHA256', openssl: 'TLS_CHACHA20_POLY1305_SHA256', version: 'TLSv1.3' },
  {
    name: 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384',
    openssl: 'ECDHE-RSA-AES256-GCM-SHA384',
    version: 'TLSv1.2',
  },
  {
    name: 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384',
    openssl: 'ECDHE-ECDSA-AES256-GCM-SHA384',
    version: 'TLSv1.2',
  },
] as const;

const ACCESS_KEY_ID = /^[A-Z2-7]{20,30}$/;
const SECRET = /^[A-Za-z0-9/+=]{43,64}$/;
const KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;
const PATH_ALPHABET = /^[A-Za-z0-9/_-]*$/;
const FLEET_STATES = ['ACTIVE', 'DEGRADED', 'UNAVAILABLE'];

// ---------------------------------------------------------------------------------------------
// What KMS raises (spec: "Error codes", KMS considerations: the failure scenario table).

type KmsContext = 'customKeyStore' | 'createKey' | 'crypto';

interface Scenario {
  customKeyStore?: string;
  createKey?: string;
  crypto?: string;
  message: string;
}

const CONTEXT_OPERATIONS: Record<KmsContext, string> = {
  customKeyStore: 'CreateCustomKeyStore, UpdateCustomKeyStore',
  createKey: 'CreateKey',
  crypto: 'cryptographic operations (Encrypt, Decrypt, GenerateDataKey, ReEncrypt)',
};

const CKS_STATE = 'CustomKeyStoreInvalidStateException';
const KMS_STATE = 'KMSInvalidStateException';
const CANNOT_INTERPRET =
  'AWS KMS cannot interpret the response from the external key store proxy. If you see this error repeatedly, report it to your external key store proxy administrator.';

/** The spec's table, row by row (keyed by the proxy's errorName, or by the network failure). */
export const KMS_SCENARIOS = {
  ValidationException: {
    customKeyStore: 'XksProxyInvalidResponseException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message: CANNOT_INTERPRET,
  },
  InvalidStateException: {
    createKey: 'XksKeyInvalidConfigurationException',
    crypto: KMS_STATE,
    message:
      'The external key associated with this KMS key in an external key store is not enabled in the external key manager. Enable the external key in the external key manager and retry the request.',
  },
  InvalidCiphertextException: {
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because the specified ciphertext or encryption context is corrupted, missing, or otherwise invalid.',
  },
  invalidCiphertext: {
    crypto: KMS_STATE,
    message:
      'The ciphertext that the external key store proxy submitted for decryption, or the encryption context, is corrupted, missing, or otherwise invalid.',
  },
  InvalidKeyUsageException: {
    createKey: 'XksKeyInvalidConfigurationException',
    crypto: KMS_STATE,
    message:
      'The external key associated with this KMS key in an external key store does not support the requested operation. Enable the operation on the key in your external key manager, and try the request again.',
  },
  AuthenticationFailedException: {
    customKeyStore: 'XksProxyIncorrectAuthenticationCredentialException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because it could not authenticate AWS KMS. Verify the XKS proxy authentication credentials for your external key store and update if necessary.',
  },
  AccessDeniedException: {
    createKey: KMS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy denied access to the operation. Verify that the user and the external key are both authorized for this operation, and try the request again.',
  },
  KeyNotFoundException: {
    createKey: 'XksKeyNotFoundException',
    crypto: KMS_STATE,
    message:
      'The external key associated with this KMS key in an external key store was not found in its external key manager. If the external key ID associated with this KMS key is incorrect, create a new KMS key with the correct external key ID.',
  },
  InvalidUriPathException: {
    customKeyStore: 'XksProxyInvalidConfigurationException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because of an invalid URI path. Verify the URI path for your external key store and update if necessary.',
  },
  UnsupportedOperationException: {
    createKey: 'XksKeyInvalidResponseException',
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because it does not support the requested operation. If you see this error repeatedly, report it to your external key store proxy administrator.',
  },
  DependencyTimeoutException: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy did not respond to the request in the time allotted. Retry the request. If you see this error repeatedly, report it to your external key store proxy administrator.',
  },
  ThrottlingException: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request due to a very high request rate. Reduce the frequency of your calls using KMS keys in this external key store.',
  },
  InternalException: {
    customKeyStore: 'XksProxyInvalidResponseException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'The external key store proxy rejected the request because it cannot communicate with the external key manager. Verify that the external key store proxy configuration is correct and that the external key manager is available.',
  },
  tcp: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'AWS KMS cannot communicate with the external key store proxy. This might be a transient network issue. If you see this error repeatedly, verify that your external key store proxy is active and is connected to the network, and that its endpoint URI is correct in your external keystore.',
  },
  tls: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'AWS KMS cannot establish a TLS connection to the external key store proxy. Verify the TLS configuration, including its certificate.',
  },
  timeout: {
    customKeyStore: 'XksProxyUriUnreachableException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message:
      'AWS KMS rejected the request because the external key store proxy did not respond in time. Retry the request. If you see this error repeatedly, report it to your external key store proxy administrator.',
  },
  malformed: {
    customKeyStore: 'XksProxyInvalidResponseException',
    createKey: CKS_STATE,
    crypto: KMS_STATE,
    message: CANNOT_INTERPRET,
  },
  // Not in the spec's table; from the KMS API reference.
  allUnavailable: {
    customKeyStore: 'XksProxyUriUnreachableException',
    message:
      'GetHealthStatus reports every external key manager UNAVAILABLE: KMS does not connect the key store (KMS API reference, XksProxyUriUnreachableException).',
  },
  keyConfiguration: {
    createKey: 'XksKeyInvalidConfigurationException',
    message:
      'The external key must be an AES-256 symmetric key that is enabled and performs encryption and decryption (spec: GetKeyMetadata, KMS considerations).',
  },
  parameters: {
    customKeyStore: 'ValidationException',
    message:
      'The value does not satisfy the constraints of the KMS API parameters (XksProxyUriEndpoint, XksProxyUriPath, XksProxyAuthenticationCredential): KMS refuses it before calling the proxy.',
  },
  keyParameters: {
    createKey: 'ValidationException',
    message:
      'The external key id does not satisfy the constraints of XksKeyId, or makes a URI longer than 256 characters: CreateKey refuses it.',
  },
} satisfies Record<string, Scenario>;

export type ScenarioName = keyof typeof KMS_SCENARIOS;

/**
 * The exception fields of a check: the exception of the KMS operation the check stands for, else
 * the row's first one; kmsOperation names where that exception shows, then the row's others.
 */
export function kmsOutcome(
  scenario: ScenarioName,
  context: KmsContext,
): Pick<Check, 'kmsException' | 'kmsOperation' | 'kmsMessage'> {
  const row: Scenario = KMS_SCENARIOS[scenario];
  const contexts: KmsContext[] = ['customKeyStore', 'createKey', 'crypto'];
  const chosen = [context, ...contexts].find((ctx) => row[ctx] !== undefined);
  if (chosen === undefined) return { kmsMessage: row.message };
  const name = row[chosen] as string;
  const same = contexts.filter((ctx) => row[ctx] === name).map((ctx) => CONTEXT_OPERATIONS[ctx]);
  const others = contexts
    .filter((ctx) => row[ctx] !== undefined && row[ctx] !== name)
    .map((ctx) => `${row[ctx]} in ${CONTEXT_OPERATIONS[ctx]}`);
  return {
    kmsException: name,
    kmsOperation: [same.join(', '), ...others].join('; '),
    kmsMessage: row.message,
  };
}

// ---------------------------------------------------------------------------------------------
// SigV4 as KMS signs (Appendix A): SignedHeaders=host;x-amz-date, service kms-xks-proxy.

type SourceData = string | ArrayBuffer | ArrayBufferView;

function toBuffer(data: SourceData): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(data);
}

/** SHA-256 and HMAC-SHA-256 on node:crypto, in the shape @smithy/signature-v4 expects. */
class NodeSha256 {
  readonly #secret: Buffer | undefined;
  #hash: Hash | Hmac;
  constructor(secret?: SourceData) {
    this.#secret = secret === undefined ? undefined : toBuffer(secret);
    this.#hash = this.#fresh();
  }
  #fresh(): Hash | Hmac {
    return this.#secret === undefined ? createHash('sha256') : createHmac('sha256', this.#secret);
  }
  update(data: SourceData): void {
    this.#hash.update(toBuffer(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#hash.digest()));
  }
  reset(): void {
    this.#hash = this.#fresh();
  }
}

interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

async function signKms(
  target: Target,
  region: string,
  credential: Credential,
  method: string,
  path: string,
  body: string,
): Promise<Record<string, string>> {
  const signer = new SignatureV4({
    service: SERVICE,
    region,
    credentials: credential,
    sha256: NodeSha256,
    applyChecksum: false,
  });
  const signed = await signer.sign(
    {
      method,
      protocol: 'https:',
      hostname: target.hostname,
      path,
      headers: { host: target.hostHeader, 'content-type': 'application/json' },
      body,
    },
    { signingDate: new Date(), unsignableHeaders: new Set(['content-type']) },
  );
  const headers = signed.headers as Record<string, string>;
  if (!/ SignedHeaders=host;x-amz-date, /.test(headers.authorization ?? '')) {
    throw new Error('internal: the request was not signed over host;x-amz-date only');
  }
  return headers;
}

// ---------------------------------------------------------------------------------------------
// The network: TLS probes and HTTPS calls, each with a deadline.

interface Target {
  /** What to connect to (brackets of an IPv6 literal removed). */
  hostname: string;
  port: number;
  /** The Host header (and SigV4 host): host[:port], as KMS sends it. */
  hostHeader: string;
  /** SNI: the host name, never an IP address. */
  servername: string | undefined;
}

type Stage = 'tcp' | 'tls' | 'timeout' | 'http';

interface NetError {
  ok: false;
  stage: Stage;
  code: string;
  message: string;
  ms: number;
}

interface Probe {
  ok: true;
  protocol: string | null;
  cipher: string;
  alpn: string | false;
  peer: DetailedPeerCertificate;
  authorizationError: string | undefined;
  ms: number;
}

interface HttpReply {
  ok: true;
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  httpVersion: string;
  ms: number;
  reusedSocket: boolean;
}

const MAX_BODY = 1024 * 1024;

function errorCode(error: unknown): string {
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

class Network {
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

// ---------------------------------------------------------------------------------------------
// Small helpers.

/** Nearest-rank percentile. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

const ms = (value: number) => `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;

/** Standard Base64 (RFC 4648 section 4), padded and canonical: the only form the spec allows. */
export function decodeBase64(value: unknown): Buffer | undefined {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
    return undefined;
  }
  const bytes = Buffer.from(value, 'base64');
  return bytes.toString('base64') === value ? bytes : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function contentType(reply: HttpReply): string {
  return String(reply.headers['content-type'] ?? '');
}

function isJsonContentType(reply: HttpReply): boolean {
  return /^application\/json\s*(;|$)/i.test(contentType(reply));
}

/** A short, printable excerpt of a body, for a detail line. */
function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  // biome-ignore lint/suspicious/noControlCharactersInRegex: strips control characters
  const clean = flat.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return clean.length > 80 ? `${clean.slice(0, 80)}...` : clean;
}

interface ErrorBody {
  errorName: string;
  errorMessage?: string;
  /** Where the body departs from the spec's error format, if it does. */
  problem?: string;
}

/** The spec's error body: {"errorName": ..., "errorMessage"?: <512 printable ASCII}. */
function errorBodyOf(reply: HttpReply): ErrorBody | undefined {
  const body = parseJson(reply.body);
  if (!isObject(body) || typeof body.errorName !== 'string') return undefined;
  const result: ErrorBody = { errorName: body.errorName };
  if (body.errorMessage !== undefined) {
    if (typeof body.errorMessage !== 'string') result.problem = 'errorMessage is not a string';
    else {
      result.errorMessage = body.errorMessage;
      if (body.errorMessage.length >= 512) result.problem = 'errorMessage is 512 characters or more';
      else if (!/^[\x20-\x7e]*$/.test(body.errorMessage))
        result.problem = 'errorMessage has characters outside printable ASCII';
    }
  }
  if (!isJsonContentType(reply)) result.problem ??= `Content-Type is '${contentType(reply)}'`;
  return result;
}

function isScenario(name: string): name is ScenarioName {
  return Object.hasOwn(KMS_SCENARIOS, name) && /^[A-Z]/.test(name);
}

/** What KMS makes of a failed network call. */
function networkScenario(error: NetError): ScenarioName {
  if (error.stage === 'timeout') return 'timeout';
  if (error.stage === 'tls') return 'tls';
  return 'tcp';
}

function describeNetError(error: NetError): string {
  const what = {
    tcp: 'no TCP connection',
    tls: 'the TLS handshake failed',
    timeout: 'timed out',
    http: 'the connection broke before a response',
  }[error.stage];
  return `${what}: ${error.code}${error.message && error.message !== error.code ? ` (${error.message})` : ''}`;
}

/**
 * What KMS makes of a non-2xx reply: the errorName's row of the table, or "cannot interpret" for
 * anything that is not the spec's JSON error body (HTML pages, empty bodies, unknown names).
 */
function replyScenario(reply: HttpReply): { scenario: ScenarioName; what: string } {
  const error = errorBodyOf(reply);
  const type = contentType(reply) || 'no Content-Type';
  if (error === undefined) {
    return {
      scenario: 'malformed',
      what: `HTTP ${reply.status} with a body that is not the spec's JSON error (${type}: '${excerpt(reply.body)}')`,
    };
  }
  if (!isScenario(error.errorName)) {
    return { scenario: 'malformed', what: `HTTP ${reply.status} ${error.errorName}, not an XKS error name` };
  }
  return { scenario: error.errorName, what: `HTTP ${reply.status} ${error.errorName}` };
}

/**
 * Judges the time of a call on a fresh connection: over KMS's budget KMS gives up (a socket
 * timeout), so the check fails; near it, a warning. A check that already fails keeps its reason.
 */
function withTiming(check: Check, reply: { ms: number }, context: KmsContext): Check {
  if (check.status === 'fail' || reply.ms <= WARN_MS) return check;
  const over = reply.ms > KMS_BUDGET_MS;
  if (!over && check.status === 'warn') return check;
  return {
    ...check,
    status: over ? 'fail' : 'warn',
    detail: `${check.detail}; took ${ms(reply.ms)} on a fresh connection: ${over ? 'over' : 'close to'} KMS's ${KMS_BUDGET_MS} ms budget`,
    ...kmsOutcome('timeout', context),
  };
}

// ---------------------------------------------------------------------------------------------
// Input: endpoint, path, credential file.

interface Inputs {
  endpointRaw: string;
  url: URL;
  target: Target;
  uriPath: string;
  credential: Credential;
  region: string;
}

function readConsoleFile(file: string): { uriPath?: string; credential?: Partial<Credential> } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new PreflightUsageError(`cannot read ${file}: ${errorCode(error)}`);
  }
  // JSON.parse's message would quote the text, which holds the secret.
  const value = parseJson(text);
  if (!isObject(value)) throw new PreflightUsageError(`${file} is not a JSON object`);
  const auth = value.XksProxyAuthenticationCredential;
  return {
    ...(typeof value.XksProxyUriPath === 'string' ? { uriPath: value.XksProxyUriPath } : {}),
    credential: isObject(auth)
      ? {
          ...(typeof auth.AccessKeyId === 'string' ? { accessKeyId: auth.AccessKeyId } : {}),
          ...(typeof auth.RawSecretAccessKey === 'string'
            ? { secretAccessKey: auth.RawSecretAccessKey }
            : {}),
        }
      : {},
  };
}

function uriChecks(inputs: Inputs, options: PreflightOptions, fromFile: string | undefined): Check[] {
  const checks: Check[] = [];
  const { url, endpointRaw, uriPath } = inputs;
  const params = (context: KmsContext) =>
    kmsOutcome(context === 'createKey' ? 'keyParameters' : 'parameters', context);

  // XksProxyUriEndpoint: https://, host name, no path; KMS connects on 443 and takes no port.
  const endpointProblems: string[] = [];
  if (!/^https:\/\/[A-Za-z0-9.-]+(?::\d+)?$/.test(endpointRaw)) {
    endpointProblems.push(
      'it must be https:// and a host name only (letters, digits, dots, hyphens): no path, slash, user or query',
    );
  }
  if (endpointRaw.replace(/:\d+$/, '').length < 10 || endpointRaw.replace(/:\d+$/, '').length > 128) {
    endpointProblems.push('it must be 10 to 128 characters');
  }
  if (endpointProblems.length > 0) {
    checks.push({
      id: 'uri.endpoint',
      title: 'XksProxyUriEndpoint',
      status: 'fail',
      detail: `'${endpointRaw}': ${endpointProblems.join('; ')}`,
      ...params('customKeyStore'),
    });
  } else if (url.port !== '') {
    checks.push({
      id: 'uri.endpoint',
      title: 'XksProxyUriEndpoint',
      status: 'warn',
      detail: `port ${url.port}: KMS connects on 443 and XksProxyUriEndpoint cannot hold a port; this only works for testing`,
      ...params('customKeyStore'),
    });
  } else {
    checks.push({ id: 'uri.endpoint', title: 'XksProxyUriEndpoint', status: 'pass', detail: endpointRaw });
  }

  // <server> MUST be a fully qualified domain name, not an IP address (spec: API operations).
  const host = inputs.target.hostname;
  const labels = host.split('.');
  let fqdnProblem: string | undefined;
  if (isIP(host) !== 0) fqdnProblem = `${host} is an IP address`;
  else if (labels.length < 2) fqdnProblem = `${host} is a single label, not a fully qualified domain name`;
  else if (host.length > 253) fqdnProblem = 'the host name is longer than 253 characters';
  else if (!labels.every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l)))
    fqdnProblem = `${host} has an empty or invalid label`;
  else if (/^\d+$/.test(labels[labels.length - 1] as string)) fqdnProblem = `${host} ends in a numeric label`;
  if (fqdnProblem === undefined) {
    checks.push({
      id: 'uri.fqdn',
      title: 'Endpoint is a fully qualified domain name',
      status: 'pass',
      detail: host,
    });
  } else {
    checks.push({
      id: 'uri.fqdn',
      title: 'Endpoint is a fully qualified domain name',
      status: options.allowIp ? 'warn' : 'fail',
      detail: `${fqdnProblem}: KMS needs a DNS name that a publicly trusted certificate names${options.allowIp ? ' (allowed by --allow-ip, for testing only)' : ''}`,
      ...kmsOutcome('tls', 'customKeyStore'),
    });
  }

  // XksProxyUriPath: A-Za-z0-9/_- only, at most 128 characters, ending in /kms/xks/v1.
  const badCharacters = [...new Set(uriPath.replace(/[A-Za-z0-9/_-]/g, ''))];
  const pathChecks: [string, string, string | undefined][] = [
    [
      'uri.path-alphabet',
      'XksProxyUriPath characters',
      PATH_ALPHABET.test(uriPath) && uriPath.startsWith('/')
        ? undefined
        : badCharacters.length > 0
          ? `characters outside A-Za-z0-9/_-: ${badCharacters.map((c) => JSON.stringify(c)).join(' ')}`
          : 'it must start with /',
    ],
    [
      'uri.path-length',
      'XksProxyUriPath length',
      uriPath.length <= 128 ? undefined : `${uriPath.length} characters; at most 128 are allowed`,
    ],
    [
      'uri.path-suffix',
      'XksProxyUriPath ends in /kms/xks/v1',
      uriPath.endsWith(URI_SUFFIX) &&
      (uriPath === URI_SUFFIX || /^\/[A-Za-z0-9/_-]+\/kms\/xks\/v1$/.test(uriPath))
        ? undefined
        : `'${uriPath}' is not [/<prefix>]${URI_SUFFIX}`,
    ],
  ];
  for (const [id, title, problem] of pathChecks) {
    checks.push(
      problem === undefined
        ? {
            id,
            title,
            status: 'pass',
            detail: id === 'uri.path-length' ? `${uriPath.length} of 128 characters` : uriPath,
          }
        : { id, title, status: 'fail', detail: problem, ...params('customKeyStore') },
    );
  }
  if (fromFile !== undefined && fromFile !== uriPath) {
    checks.push({
      id: 'uri.path-file',
      title: 'XksProxyUriPath of the console file',
      status: 'warn',
      detail: `the credential file says '${fromFile}', --path says '${uriPath}': checking --path; upload the one the proxy serves`,
    });
  }

  // The whole URI, key routes included, MUST NOT exceed 256 characters.
  const origin = `https://${url.host}`;
  const keyRouteFixed = `${origin}${uriPath}/keys//metadata`.length;
  const room = 256 - keyRouteFixed;
  if (options.key !== undefined) {
    const length = keyRouteFixed + options.key.length;
    checks.push(
      length <= 256
        ? {
            id: 'uri.length',
            title: 'URI length',
            status: 'pass',
            detail: `${length} of 256 characters for ${options.key}'s longest route (.../metadata)`,
          }
        : {
            id: 'uri.length',
            title: 'URI length',
            status: 'fail',
            detail: `${length} characters for ${options.key}'s metadata route; at most 256`,
            ...params('createKey'),
          },
    );
  } else if (room < 1) {
    checks.push({
      id: 'uri.length',
      title: 'URI length',
      status: 'fail',
      detail: `endpoint and path leave no room for an external key id within 256 characters`,
      ...params('customKeyStore'),
    });
  } else if (room < 128) {
    checks.push({
      id: 'uri.length',
      title: 'URI length',
      status: 'warn',
      detail: `external key ids longer than ${room} characters will not fit in 256 (the spec allows 128)`,
      ...params('createKey'),
    });
  } else {
    checks.push({
      id: 'uri.length',
      title: 'URI length',
      status: 'pass',
      detail: `any external key id (up to 128 characters) fits within 256`,
    });
  }
  if (options.key !== undefined && !KEY_ID.test(options.key)) {
    checks.push({
      id: 'uri.key-id',
      title: 'External key id',
      status: 'fail',
      detail: `'${options.key}' is not 1-128 characters of A-Za-z0-9._-`,
      ...params('createKey'),
    });
  }
  return checks;
}

function credentialCheck(credential: Partial<Credential>): Check {
  const problems: string[] = [];
  const id = credential.accessKeyId;
  const secret = credential.secretAccessKey;
  if (id === undefined) problems.push('no AccessKeyId');
  else if (!ACCESS_KEY_ID.test(id)) problems.push('AccessKeyId is not 20-30 characters of A-Z and 2-7');
  if (secret === undefined) problems.push('no RawSecretAccessKey');
  else if (!SECRET.test(secret)) {
    problems.push(`RawSecretAccessKey (${secret.length} characters) is not 43-64 characters of A-Za-z0-9+/=`);
  }
  if (problems.length > 0) {
    return {
      id: 'credential',
      title: 'SigV4 credential (XksProxyAuthenticationCredential)',
      status: 'fail',
      detail: problems.join('; '),
      ...kmsOutcome('parameters', 'customKeyStore'),
    };
  }
  return {
    id: 'credential',
    title: 'SigV4 credential (XksProxyAuthenticationCredential)',
    status: 'pass',
    detail: `access key id ${id}, secret of ${secret?.length} characters`,
  };
}

// ---------------------------------------------------------------------------------------------
// TLS.

function certificateChain(peer: DetailedPeerCertificate): DetailedPeerCertificate[] {
  const chain: DetailedPeerCertificate[] = [];
  const seen = new Set<string>();
  let current: DetailedPeerCertificate | undefined = peer;
  while (current?.fingerprint256 && !seen.has(current.fingerprint256)) {
    chain.push(current);
    seen.add(current.fingerprint256);
    current = current.issuerCertificate;
  }
  return chain;
}

const fingerprintOf = (cert: { fingerprint256: string }) =>
  cert.fingerprint256.replace(/:/g, '').toLowerCase();

function nameOf(name: unknown): string {
  if (!isObject(name)) return '?';
  const cn = name.CN ?? name.O ?? Object.values(name)[0];
  return Array.isArray(cn) ? String(cn[0]) : String(cn ?? '?');
}

function selfSigned(cert: DetailedPeerCertificate): boolean {
  try {
    const x509 = new X509Certificate(cert.raw);
    return x509.checkIssued(x509) && x509.verify(x509.publicKey);
  } catch {
    return false;
  }
}

function cnOfOwner(owner: string): string | undefined {
  return /(?:^|,\s*)CN=("[^"]*"|[^,]*)/.exec(owner)?.[1]?.replace(/^"|"$/g, '');
}

const CHAIN_ERRORS = new Set([
  'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
]);

interface ChainContext {
  trusted: readonly TrustedCa[];
  extraCa: Map<string, string>;
  allowUntrustedCa: boolean;
}

function chainCheck(hello: Probe, context: ChainContext): Check {
  const title = 'Certificate chain ends at a root CA KMS trusts';
  const chain = certificateChain(hello.peer);
  const top = chain[chain.length - 1];
  const path = chain.map((c) => nameOf(c.subject)).join(' <- ');
  const tlsFail = (detail: string): Check => ({
    id: 'tls.chain',
    title,
    status: 'fail',
    detail,
    ...kmsOutcome('tls', 'customKeyStore'),
  });
  if (top === undefined) return tlsFail('the server sent no certificate');
  if (hello.authorizationError !== undefined && CHAIN_ERRORS.has(hello.authorizationError)) {
    return tlsFail(`the chain does not verify: ${hello.authorizationError} (${path})`);
  }
  if (!selfSigned(top)) {
    const issuer = nameOf(top.issuer);
    const byName = context.trusted.find((ca) => cnOfOwner(ca.owner) === issuer);
    if (byName !== undefined) {
      return {
        id: 'tls.chain',
        title,
        status: 'warn',
        detail: `${path}, issued by '${issuer}': a root KMS trusts by name (${byName.alias}), but its certificate is neither sent nor in the local store, so its fingerprint cannot be compared`,
        ...kmsOutcome('tls', 'customKeyStore'),
      };
    }
    return tlsFail(
      `${path}: the chain stops at a certificate issued by '${issuer}', which is neither sent by the server nor a root KMS trusts (send the intermediate certificates)`,
    );
  }
  const fingerprint = fingerprintOf(top);
  const known = context.trusted.find((ca) => ca.sha256 === fingerprint);
  if (known !== undefined) {
    return {
      id: 'tls.chain',
      title,
      status: 'pass',
      detail: `${path}: root ${known.alias} (${known.owner})`,
    };
  }
  const extra = context.extraCa.get(fingerprint);
  if (extra !== undefined) {
    return context.allowUntrustedCa
      ? {
          id: 'tls.chain',
          title,
          status: 'pass',
          detail: `${path}: root '${extra}' from --ca, accepted by --allow-untrusted-ca (testing only: KMS will not trust it)`,
        }
      : {
          id: 'tls.chain',
          title,
          status: 'warn',
          detail: `${path}: root '${extra}' is trusted only because of --ca; KMS will not trust it`,
          ...kmsOutcome('tls', 'customKeyStore'),
        };
  }
  const root = chain.length === 1 ? 'a self-signed server certificate' : `the root '${nameOf(top.subject)}'`;
  return tlsFail(
    `${path}: ${root} (SHA-256 ${fingerprint.slice(0, 16)}...) is not one of the ${context.trusted.length} root CAs KMS trusts`,
  );
}

function validityCheck(hello: Probe, now: Date): Check {
  const title = 'Certificate valid now';
  const chain = certificateChain(hello.peer);
  const leaf = chain[0];
  if (leaf === undefined) {
    return {
      id: 'tls.validity',
      title,
      status: 'fail',
      detail: 'no certificate',
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  for (const cert of chain) {
    const from = Date.parse(cert.valid_from);
    const to = Date.parse(cert.valid_to);
    const which = cert === leaf ? 'the server certificate' : `'${nameOf(cert.subject)}' in the chain`;
    if (now.getTime() < from) {
      return {
        id: 'tls.validity',
        title,
        status: 'fail',
        detail: `${which} is not valid before ${new Date(from).toISOString()}`,
        ...kmsOutcome('tls', 'customKeyStore'),
      };
    }
    if (now.getTime() > to) {
      return {
        id: 'tls.validity',
        title,
        status: 'fail',
        detail: `${which} expired on ${new Date(to).toISOString()}`,
        ...kmsOutcome('tls', 'customKeyStore'),
      };
    }
  }
  const notAfter = Date.parse(leaf.valid_to);
  const days = Math.floor((notAfter - now.getTime()) / 86_400_000);
  const until = `valid until ${new Date(notAfter).toISOString().slice(0, 10)}: ${days} more day${days === 1 ? '' : 's'}`;
  if (days < 30) {
    return {
      id: 'tls.validity',
      title,
      status: 'warn',
      detail: `${until}; renew it soon`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  return { id: 'tls.validity', title, status: 'pass', detail: until };
}

function hostnameCheck(hello: Probe, hostname: string): Check {
  const title = 'Certificate matches the host name';
  const names = hello.peer.subjectaltname || `CN=${nameOf(hello.peer.subject)}`;
  const error = checkServerIdentity(hostname, hello.peer);
  if (error !== undefined) {
    return {
      id: 'tls.hostname',
      title,
      status: 'fail',
      detail: `${hostname} is not among the certificate's names (${names})`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  return { id: 'tls.hostname', title, status: 'pass', detail: `${hostname} matches ${names}` };
}

async function versionCheck(net: Network, hello: Probe): Promise<Check> {
  const title = 'TLS 1.2 or later';
  const legacy = await net.probe({
    minVersion: 'TLSv1',
    maxVersion: 'TLSv1.1',
    ciphers: 'DEFAULT:@SECLEVEL=0',
  });
  const negotiated = hello.protocol ?? 'unknown';
  if (negotiated !== 'TLSv1.2' && negotiated !== 'TLSv1.3') {
    return {
      id: 'tls.version',
      title,
      status: 'fail',
      detail: `negotiated ${negotiated}`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  if (legacy.ok) {
    return {
      id: 'tls.version',
      title,
      status: 'warn',
      detail: `negotiated ${negotiated}, but the server also accepts ${legacy.protocol}: KMS does not need it and old protocols are a risk`,
    };
  }
  return {
    id: 'tls.version',
    title,
    status: 'pass',
    detail: `negotiated ${negotiated}; TLS 1.0 and 1.1 refused`,
  };
}

async function cipherCheck(net: Network): Promise<Check> {
  const title = "At least one of the spec's cipher suites";
  const offered: string[] = [];
  for (const suite of SPEC_CIPHER_SUITES) {
    const result = await net.probe({
      minVersion: suite.version,
      maxVersion: suite.version,
      ciphers: suite.openssl,
    });
    if (result.ok) offered.push(suite.name);
  }
  if (offered.length === 0) {
    return {
      id: 'tls.ciphers',
      title,
      status: 'fail',
      detail: `none of ${SPEC_CIPHER_SUITES.map((s) => s.name).join(', ')} is accepted`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  return {
    id: 'tls.ciphers',
    title,
    status: 'pass',
    detail: `${offered.length} of ${SPEC_CIPHER_SUITES.length}: ${offered.join(', ')}`,
  };
}

async function httpCheck(net: Network, health: HttpReply | NetError): Promise<Check> {
  const title = 'HTTP/1.1 (and the fallback to it)';
  const only11 = await net.probe({ ALPNProtocols: ['http/1.1'] });
  const both = await net.probe({ ALPNProtocols: ['h2', 'http/1.1'] });
  if (!only11.ok) {
    return {
      id: 'http.version',
      title,
      status: 'fail',
      detail: `a client offering only http/1.1 (ALPN) cannot connect: ${describeNetError(only11)}`,
      ...kmsOutcome('tls', 'customKeyStore'),
    };
  }
  const alpn = both.ok
    ? both.alpn === false
      ? 'the server does not use ALPN'
      : `offered h2 and http/1.1, the server chose ${both.alpn}`
    : `offering h2 and http/1.1 failed (${describeNetError(both)})`;
  if (!health.ok) {
    return {
      id: 'http.version',
      title,
      status: 'fail',
      detail: `no HTTP/1.1 response (${describeNetError(health)}); ${alpn}`,
      ...kmsOutcome(networkScenario(health), 'customKeyStore'),
    };
  }
  return {
    id: 'http.version',
    title,
    status: 'pass',
    detail: `HTTP/${health.httpVersion} request answered; ${alpn}`,
  };
}

// ---------------------------------------------------------------------------------------------
// The XKS API.

function healthBody(kmsOperation: string): string {
  return JSON.stringify({ requestMetadata: { kmsRequestId: randomUUID(), kmsOperation } });
}

interface ApiContext {
  net: Network;
  inputs: Inputs;
  principalArn: string;
  kmsKeyArn: string;
}

async function signedCall(
  api: ApiContext,
  route: string,
  body: string,
  options: { agent?: Agent | false; credential?: Credential; path?: string; noClientCert?: boolean } = {},
): Promise<HttpReply | NetError> {
  const path = options.path ?? `${api.inputs.uriPath}/${route}`;
  const headers = await signKms(
    api.inputs.target,
    api.inputs.region,
    options.credential ?? api.inputs.credential,
    'POST',
    path,
    body,
  );
  return api.net.call({
    method: 'POST',
    path,
    body,
    headers: { ...headers, 'content-type': 'application/json' },
    agent: options.agent ?? false,
    ...(options.noClientCert ? { noClientCert: true } : {}),
  });
}

/** The fields of a success body, or a reason it is not one. */
function successJson(reply: HttpReply): { body: Record<string, unknown> } | { problem: string } {
  const body = parseJson(reply.body);
  if (!isObject(body)) {
    return {
      problem: `HTTP 200 but the body is not a JSON object (${contentType(reply) || 'no Content-Type'}: '${excerpt(reply.body)}')`,
    };
  }
  return { body };
}

function healthSchemaProblems(body: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const size = body.xksProxyFleetSize;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1) {
    problems.push('xksProxyFleetSize is not an integer greater than zero');
  }
  for (const field of ['xksProxyVendor', 'xksProxyModel', 'ekmVendor']) {
    if (typeof body[field] !== 'string') problems.push(`${field} is not a string`);
  }
  const fleet = body.ekmFleetDetails;
  if (!Array.isArray(fleet)) problems.push('ekmFleetDetails is not an array');
  else {
    if (fleet.length < 1 || fleet.length > 10)
      problems.push(`ekmFleetDetails has ${fleet.length} entries, not 1-10`);
    fleet.forEach((entry, i) => {
      if (!isObject(entry)) problems.push(`ekmFleetDetails[${i}] is not an object`);
      else {
        if (typeof entry.id !== 'string') problems.push(`ekmFleetDetails[${i}].id is not a string`);
        if (typeof entry.model !== 'string') problems.push(`ekmFleetDetails[${i}].model is not a string`);
        if (!FLEET_STATES.includes(entry.healthStatus as string)) {
          problems.push(`ekmFleetDetails[${i}].healthStatus is not ACTIVE, DEGRADED or UNAVAILABLE`);
        }
      }
    });
  }
  return problems;
}

function healthChecks(health: HttpReply | NetError): Check[] {
  const statusTitle = 'GetHealthStatus answers 200 (signed as KMS signs)';
  const schemaTitle = 'GetHealthStatus body matches the spec';
  const fleetTitle = 'External key managers are healthy';
  if (!health.ok) {
    return [
      {
        id: 'health.status',
        title: statusTitle,
        status: 'fail',
        detail: describeNetError(health),
        ...kmsOutcome(networkScenario(health), 'customKeyStore'),
      },
    ];
  }
  if (health.status !== 200) {
    const { scenario, what } = replyScenario(health);
    return [
      {
        id: 'health.status',
        title: statusTitle,
        status: 'fail',
        detail: `${what} (${ms(health.ms)})`,
        ...kmsOutcome(scenario, 'customKeyStore'),
      },
    ];
  }
  const checks: Check[] = [];
  const jsonType = isJsonContentType(health);
  checks.push(
    withTiming(
      {
        id: 'health.status',
        title: statusTitle,
        status: jsonType ? 'pass' : 'warn',
        detail: `HTTP 200 in ${ms(health.ms)} (TCP + TLS + request)${jsonType ? '' : `; Content-Type is '${contentType(health)}', not application/json`}`,
      },
      health,
      'customKeyStore',
    ),
  );
  const parsed = successJson(health);
  if ('problem' in parsed) {
    checks.push({
      id: 'health.schema',
      title: schemaTitle,
      status: 'fail',
      detail: parsed.problem,
      ...kmsOutcome('malformed', 'customKeyStore'),
    });
    return checks;
  }
  const problems = healthSchemaProblems(parsed.body);
  if (problems.length > 0) {
    checks.push({
      id: 'health.schema',
      title: schemaTitle,
      status: 'fail',
      detail: problems.join('; '),
      ...kmsOutcome('malformed', 'customKeyStore'),
    });
    return checks;
  }
  const body = parsed.body as {
    xksProxyFleetSize: number;
    xksProxyVendor: string;
    xksProxyModel: string;
    ekmVendor: string;
    ekmFleetDetails: { id: string; model: string; healthStatus: string }[];
  };
  checks.push({
    id: 'health.schema',
    title: schemaTitle,
    status: 'pass',
    detail: `${body.xksProxyVendor} / ${body.xksProxyModel}, fleet of ${body.xksProxyFleetSize}; key manager vendor ${body.ekmVendor}`,
  });
  const fleet = body.ekmFleetDetails.map((e) => `${e.id} (${e.model}): ${e.healthStatus}`).join(', ');
  const states = body.ekmFleetDetails.map((e) => e.healthStatus);
  if (states.every((s) => s === 'UNAVAILABLE')) {
    checks.push({
      id: 'health.fleet',
      title: fleetTitle,
      status: 'fail',
      detail: fleet,
      ...kmsOutcome('allUnavailable', 'customKeyStore'),
    });
  } else if (states.some((s) => s !== 'ACTIVE')) {
    checks.push({
      id: 'health.fleet',
      title: fleetTitle,
      status: 'warn',
      detail: `${fleet}: KMS still connects, but capacity or redundancy is reduced`,
    });
  } else {
    checks.push({ id: 'health.fleet', title: fleetTitle, status: 'pass', detail: fleet });
  }
  return checks;
}

function metadataRequest(api: ApiContext): string {
  return JSON.stringify({
    requestMetadata: {
      awsPrincipalArn: api.principalArn,
      kmsOperation: 'CreateKey',
      kmsRequestId: randomUUID(),
    },
  });
}

function failedReply(
  id: string,
  title: string,
  reply: HttpReply | NetError,
  context: KmsContext,
  operation: string,
): Check {
  if (!reply.ok) {
    return {
      id,
      title,
      status: 'fail',
      detail: `${operation}: ${describeNetError(reply)}`,
      ...kmsOutcome(networkScenario(reply), context),
    };
  }
  const { scenario, what } = replyScenario(reply);
  return { id, title, status: 'fail', detail: `${operation}: ${what}`, ...kmsOutcome(scenario, context) };
}

async function metadataCheck(api: ApiContext, key: string): Promise<Check> {
  const id = 'key.metadata';
  const title = 'GetKeyMetadata: AES_256, ENCRYPT and DECRYPT, ENABLED (what CreateKey needs)';
  const reply = await signedCall(api, `keys/${key}/metadata`, metadataRequest(api));
  if (!reply.ok || reply.status !== 200) return failedReply(id, title, reply, 'createKey', 'GetKeyMetadata');
  const parsed = successJson(reply);
  if ('problem' in parsed) {
    return { id, title, status: 'fail', detail: parsed.problem, ...kmsOutcome('malformed', 'createKey') };
  }
  const { keySpec, keyUsage, keyStatus } = parsed.body;
  const problems: string[] = [];
  if (typeof keySpec !== 'string') problems.push('keySpec is not a string');
  if (!Array.isArray(keyUsage) || !keyUsage.every((u) => typeof u === 'string')) {
    problems.push('keyUsage is not an array of strings');
  } else if (keyUsage.length > 10) problems.push(`keyUsage has ${keyUsage.length} values; at most 10`);
  if (keyStatus !== 'ENABLED' && keyStatus !== 'DISABLED')
    problems.push('keyStatus is not ENABLED or DISABLED');
  if (problems.length > 0) {
    return {
      id,
      title,
      status: 'fail',
      detail: problems.join('; '),
      ...kmsOutcome('malformed', 'createKey'),
    };
  }
  const usage = keyUsage as string[];
  const summary = `${keySpec}, [${usage.join(', ')}], ${keyStatus}`;
  const unfit: string[] = [];
  if (keySpec !== 'AES_256') unfit.push(`keySpec is ${keySpec}, not AES_256`);
  for (const needed of ['ENCRYPT', 'DECRYPT'])
    if (!usage.includes(needed)) unfit.push(`keyUsage lacks ${needed}`);
  if (keyStatus !== 'ENABLED') unfit.push(`keyStatus is ${keyStatus}`);
  if (unfit.length > 0) {
    return {
      id,
      title,
      status: 'fail',
      detail: `${summary}: ${unfit.join('; ')}`,
      ...kmsOutcome('keyConfiguration', 'createKey'),
    };
  }
  return withTiming(
    { id, title, status: 'pass', detail: `${summary} (${ms(reply.ms)})` },
    reply,
    'createKey',
  );
}

interface EncryptOutput {
  ciphertext: string;
  ciphertextMetadata?: string;
  initializationVector: string;
  authenticationTag: string;
}

/** Appendix C: SHA-256 over AAD || ciphertextMetadata || IV || ciphertext || tag, Base64. */
export function cdiv(
  aad: Buffer,
  output: { metadata: Buffer; iv: Buffer; ciphertext: Buffer; tag: Buffer },
): string {
  return createHash('sha256')
    .update(aad)
    .update(output.metadata)
    .update(output.iv)
    .update(output.ciphertext)
    .update(output.tag)
    .digest('base64');
}

async function roundTripChecks(api: ApiContext, key: string): Promise<Check[]> {
  const encryptTitle = 'Encrypt with a CDIV: fields, sizes and CDIV as the spec requires';
  const decryptTitle = 'Decrypt returns the plaintext';
  const plaintext = randomBytes(32);
  const aad = randomBytes(24);
  const reply = await signedCall(
    api,
    `keys/${key}/encrypt`,
    JSON.stringify({
      requestMetadata: {
        awsPrincipalArn: api.principalArn,
        kmsKeyArn: api.kmsKeyArn,
        kmsOperation: 'GenerateDataKey',
        kmsRequestId: randomUUID(),
      },
      plaintext: plaintext.toString('base64'),
      additionalAuthenticatedData: aad.toString('base64'),
      encryptionAlgorithm: 'AES_GCM',
      ciphertextDataIntegrityValueAlgorithm: 'SHA_256',
    }),
  );
  if (!reply.ok || reply.status !== 200)
    return [failedReply('key.encrypt', encryptTitle, reply, 'crypto', 'Encrypt')];
  const parsed = successJson(reply);
  if ('problem' in parsed) {
    return [
      {
        id: 'key.encrypt',
        title: encryptTitle,
        status: 'fail',
        detail: parsed.problem,
        ...kmsOutcome('malformed', 'crypto'),
      },
    ];
  }
  const body = parsed.body;
  const problems: string[] = [];
  const ciphertext = decodeBase64(body.ciphertext);
  const iv = decodeBase64(body.initializationVector);
  const tag = decodeBase64(body.authenticationTag);
  const metadata =
    body.ciphertextMetadata === undefined ? Buffer.alloc(0) : decodeBase64(body.ciphertextMetadata);
  const integrity = decodeBase64(body.ciphertextDataIntegrityValue);
  if (ciphertext === undefined) problems.push('ciphertext is missing or not standard Base64');
  else if (ciphertext.length !== plaintext.length) {
    problems.push(`ciphertext is ${ciphertext.length} bytes for ${plaintext.length} of plaintext`);
  }
  if (iv === undefined) problems.push('initializationVector is missing or not standard Base64');
  else if (iv.length !== 12 && iv.length !== 16)
    problems.push(`initializationVector is ${iv.length} bytes, not 12 or 16`);
  if (tag === undefined) problems.push('authenticationTag is missing or not standard Base64');
  else if (tag.length !== 16) problems.push(`authenticationTag is ${tag.length} bytes, not 16`);
  if (metadata === undefined) problems.push('ciphertextMetadata is not standard Base64');
  else if (metadata.length > 20) problems.push(`ciphertextMetadata is ${metadata.length} bytes; at most 20`);
  if (integrity === undefined)
    problems.push('ciphertextDataIntegrityValue is missing or not standard Base64 although requested');
  if (problems.length === 0 && ciphertext && iv && tag && metadata && integrity) {
    const expected = cdiv(aad, { metadata, iv, ciphertext, tag });
    if (expected !== body.ciphertextDataIntegrityValue) {
      problems.push(
        'ciphertextDataIntegrityValue does not match SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag)',
      );
    }
  }
  if (problems.length > 0) {
    return [
      {
        id: 'key.encrypt',
        title: encryptTitle,
        status: 'fail',
        detail: problems.join('; '),
        ...kmsOutcome('malformed', 'crypto'),
      },
    ];
  }
  const output = body as unknown as EncryptOutput;
  const checks: Check[] = [
    withTiming(
      {
        id: 'key.encrypt',
        title: encryptTitle,
        status: 'pass',
        detail: `IV ${iv?.length} bytes, tag 16 bytes, ciphertextMetadata ${metadata?.length} byte${metadata?.length === 1 ? '' : 's'}, CDIV verified (${ms(reply.ms)})`,
      },
      reply,
      'crypto',
    ),
  ];
  const decrypt = await signedCall(
    api,
    `keys/${key}/decrypt`,
    JSON.stringify({
      requestMetadata: {
        awsPrincipalArn: api.principalArn,
        kmsKeyArn: api.kmsKeyArn,
        kmsOperation: 'Decrypt',
        kmsRequestId: randomUUID(),
      },
      ciphertext: output.ciphertext,
      ...(output.ciphertextMetadata === undefined ? {} : { ciphertextMetadata: output.ciphertextMetadata }),
      encryptionAlgorithm: 'AES_GCM',
      additionalAuthenticatedData: aad.toString('base64'),
      initializationVector: output.initializationVector,
      authenticationTag: output.authenticationTag,
    }),
  );
  if (!decrypt.ok || decrypt.status !== 200) {
    checks.push(failedReply('key.decrypt', decryptTitle, decrypt, 'crypto', 'Decrypt'));
    return checks;
  }
  const decrypted = successJson(decrypt);
  const plain = 'body' in decrypted ? decodeBase64(decrypted.body.plaintext) : undefined;
  if (plain === undefined || !plain.equals(plaintext)) {
    checks.push({
      id: 'key.decrypt',
      title: decryptTitle,
      status: 'fail',
      detail:
        'problem' in decrypted
          ? decrypted.problem
          : plain === undefined
            ? 'plaintext is missing or not standard Base64'
            : `the plaintext differs from what was encrypted (${plain.length} bytes for ${plaintext.length})`,
      ...kmsOutcome('malformed', 'crypto'),
    });
    return checks;
  }
  checks.push(
    withTiming(
      {
        id: 'key.decrypt',
        title: decryptTitle,
        status: 'pass',
        detail: `${plaintext.length} bytes back, with AAD${output.ciphertextMetadata === undefined ? '' : ' and ciphertextMetadata'} (${ms(decrypt.ms)})`,
      },
      decrypt,
      'crypto',
    ),
  );
  return checks;
}

// Error behaviour: what KMS sees when its configuration is wrong.

/** What KMS makes of an answer that should have been an error: the check's kmsException. */
function observedOutcome(reply: HttpReply | NetError, context: KmsContext): Partial<Check> {
  if (!reply.ok) return kmsOutcome(networkScenario(reply), context);
  if (reply.status >= 200 && reply.status < 300) {
    const parsed = successJson(reply);
    if ('body' in parsed && healthSchemaProblems(parsed.body).length === 0) return {};
    return kmsOutcome('malformed', context);
  }
  return kmsOutcome(replyScenario(reply).scenario, context);
}

function observed(reply: HttpReply | NetError): string {
  if (!reply.ok) return describeNetError(reply);
  const error = errorBodyOf(reply);
  return error === undefined
    ? `HTTP ${reply.status} (${contentType(reply) || 'no Content-Type'}: '${excerpt(reply.body)}')`
    : `HTTP ${reply.status} ${error.errorName}${error.problem ? ` (${error.problem})` : ''}`;
}

async function unknownPathCheck(api: ApiContext): Promise<Check> {
  const id = 'errors.unknown-path';
  const title = 'An unknown path: 404 InvalidUriPathException, as JSON';
  const path = `/xks-preflight-${randomBytes(4).toString('hex')}${api.inputs.uriPath}/health`;
  const reply = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'), { path });
  const error = reply.ok ? errorBodyOf(reply) : undefined;
  if (reply.ok && reply.status === 404 && error?.errorName === 'InvalidUriPathException') {
    return {
      id,
      title,
      status: error.problem === undefined ? 'pass' : 'warn',
      detail: `${path}: ${observed(reply)}`,
      ...(error.problem === undefined ? {} : kmsOutcome('malformed', 'customKeyStore')),
    };
  }
  const outcome = observedOutcome(reply, 'customKeyStore');
  const consequence =
    outcome.kmsException === undefined
      ? 'KMS would take it for a working proxy at a wrong XksProxyUriPath'
      : `a wrong XksProxyUriPath would show as ${outcome.kmsException} instead of XksProxyInvalidConfigurationException`;
  return { id, title, status: 'fail', detail: `${path}: ${observed(reply)}; ${consequence}`, ...outcome };
}

async function badSignatureCheck(api: ApiContext): Promise<Check> {
  const id = 'errors.bad-signature';
  const title = 'A bad signature: 401 AuthenticationFailedException';
  const wrong: Credential = {
    accessKeyId: api.inputs.credential.accessKeyId,
    secretAccessKey: randomBytes(32).toString('base64'),
  };
  const reply = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'), { credential: wrong });
  const error = reply.ok ? errorBodyOf(reply) : undefined;
  if (reply.ok && reply.status === 401 && error?.errorName === 'AuthenticationFailedException') {
    return {
      id,
      title,
      status: error.problem === undefined ? 'pass' : 'warn',
      detail: `signed with a wrong secret: ${observed(reply)}`,
      ...(error.problem === undefined ? {} : kmsOutcome('malformed', 'customKeyStore')),
    };
  }
  if (reply.ok && reply.status >= 200 && reply.status < 300) {
    return {
      id,
      title,
      status: 'fail',
      detail: `signed with a wrong secret: ${observed(reply)}: the proxy does not check SigV4 signatures`,
    };
  }
  const outcome = observedOutcome(reply, 'customKeyStore');
  return {
    id,
    title,
    status: 'fail',
    detail: `signed with a wrong secret: ${observed(reply)}; wrong credentials would show as ${outcome.kmsException ?? 'no error'} instead of XksProxyIncorrectAuthenticationCredentialException`,
    ...outcome,
  };
}

async function getCheck(api: ApiContext): Promise<Check> {
  const id = 'errors.get';
  const title = 'GET on an API route: 405';
  const reply = await api.net.call({ method: 'GET', path: `${api.inputs.uriPath}/health`, agent: false });
  if (reply.ok && reply.status === 405) {
    const allow = reply.headers.allow;
    return {
      id,
      title,
      status: 'pass',
      detail: `HTTP 405${allow === undefined ? ' (no Allow header)' : `, Allow: ${allow}`}`,
    };
  }
  return {
    id,
    title,
    status: 'fail',
    detail: `${observed(reply)}: the spec requires 405 (KMS itself never sends GET; load balancers and scanners do)`,
  };
}

// mTLS (spec: Authentication): KMS's certificate gets in; no certificate, no handshake.

async function mtlsChecks(api: ApiContext, health: HttpReply | NetError): Promise<Check[]> {
  const checks: Check[] = [];
  if (health.ok) {
    checks.push({
      id: 'mtls.with-cert',
      title: 'Mutual TLS: the handshake succeeds with the client certificate',
      status: 'pass',
      detail: `handshake done, HTTP ${health.status}`,
    });
  } else {
    checks.push({
      id: 'mtls.with-cert',
      title: 'Mutual TLS: the handshake succeeds with the client certificate',
      status: 'fail',
      detail: describeNetError(health),
      ...kmsOutcome(networkScenario(health), 'customKeyStore'),
    });
  }
  const without = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'), { noClientCert: true });
  const title = 'Mutual TLS: no client certificate, no connection';
  if (!without.ok) {
    checks.push({
      id: 'mtls.without-cert',
      title,
      status: 'pass',
      detail: `refused: ${describeNetError(without)}`,
    });
  } else if (without.status >= 200 && without.status < 300) {
    checks.push({
      id: 'mtls.without-cert',
      title,
      status: 'fail',
      detail: `HTTP ${without.status} without a client certificate: mutual TLS is not enforced`,
    });
  } else {
    checks.push({
      id: 'mtls.without-cert',
      title,
      status: 'warn',
      detail: `the handshake succeeded and the request got ${observed(without)}: refused, but after the handshake (the spec says to terminate it)`,
    });
  }
  return checks;
}

// Latency: what KMS pays on a fresh connection (TCP + TLS + request) and on a kept-alive one.

async function latencyChecks(api: ApiContext, samples: number): Promise<Check[]> {
  const checks: Check[] = [];
  const judge = (id: string, title: string, times: number[], extra: string): Check => {
    const p50 = percentile(times, 50);
    const p99 = percentile(times, 99);
    const numbers = `p50 ${ms(p50)}, p99 ${ms(p99)} over ${times.length} calls${extra}`;
    if (p50 > KMS_BUDGET_MS) {
      return {
        id,
        title,
        status: 'fail',
        detail: `${numbers}: over KMS's ${KMS_BUDGET_MS} ms budget`,
        ...kmsOutcome('timeout', 'customKeyStore'),
      };
    }
    if (p99 > WARN_MS) {
      return {
        id,
        title,
        status: 'warn',
        detail: `${numbers}: ${p99 > KMS_BUDGET_MS ? `some calls exceed KMS's ${KMS_BUDGET_MS} ms budget` : `close to KMS's ${KMS_BUDGET_MS} ms budget`}`,
        ...kmsOutcome('timeout', 'customKeyStore'),
      };
    }
    return { id, title, status: 'pass', detail: `${numbers}; budget ${KMS_BUDGET_MS} ms` };
  };
  const failed = (id: string, title: string, reply: HttpReply | NetError): Check =>
    failedReply(id, title, reply, 'customKeyStore', 'GetHealthStatus');

  const freshTitle = 'Latency on fresh connections (TCP + TLS + request)';
  const fresh: number[] = [];
  let freshFailure: Check | undefined;
  for (let i = 0; i < samples; i++) {
    const reply = await signedCall(api, 'health', healthBody('KmsHealthCheck'));
    if (!reply.ok && reply.stage === 'timeout') {
      fresh.push(reply.ms);
      continue;
    }
    if (!reply.ok || reply.status !== 200) {
      freshFailure = failed('latency.fresh', freshTitle, reply);
      break;
    }
    fresh.push(reply.ms);
  }
  checks.push(freshFailure ?? judge('latency.fresh', freshTitle, fresh, ''));

  const keptTitle = 'Latency on a kept-alive connection';
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const warmup = await signedCall(api, 'health', healthBody('KmsHealthCheck'), { agent });
    if (!warmup.ok || warmup.status !== 200) {
      checks.push(failed('latency.keepalive', keptTitle, warmup));
      return checks;
    }
    const kept: number[] = [];
    let reused = 0;
    for (let i = 0; i < samples; i++) {
      const reply = await signedCall(api, 'health', healthBody('KmsHealthCheck'), { agent });
      if (!reply.ok && reply.stage === 'timeout') {
        kept.push(reply.ms);
        continue;
      }
      if (!reply.ok || reply.status !== 200) {
        checks.push(failed('latency.keepalive', keptTitle, reply));
        return checks;
      }
      if (reply.reusedSocket) reused++;
      kept.push(reply.ms);
    }
    const check = judge('latency.keepalive', keptTitle, kept, `, ${reused} on a reused connection`);
    if (check.status === 'pass' && reused < samples) {
      check.status = 'warn';
      check.detail += '; the server closed kept-alive connections, so KMS pays TCP + TLS more often';
    }
    checks.push(check);
  } finally {
    agent.destroy();
  }
  return checks;
}

// ---------------------------------------------------------------------------------------------
// The run.

function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function resolveInputs(options: PreflightOptions): {
  inputs: Inputs;
  fromFile?: string;
  credentialInput: Partial<Credential>;
} {
  const endpointRaw = options.endpoint.trim();
  let url: URL;
  try {
    url = new URL(endpointRaw);
  } catch {
    throw new PreflightUsageError(`--endpoint '${endpointRaw}' is not a URL (https://host[:port])`);
  }
  if (url.protocol !== 'https:')
    throw new PreflightUsageError(`--endpoint must be https://, not ${url.protocol}//`);
  const file = options.credentialFile === undefined ? undefined : readConsoleFile(options.credentialFile);
  const credentialInput: Partial<Credential> = options.credential ?? file?.credential ?? {};
  const uriPath = options.path ?? file?.uriPath;
  if (uriPath === undefined) {
    throw new PreflightUsageError('no XksProxyUriPath: give --path or a credential file that has one');
  }
  if (credentialInput.accessKeyId === undefined || credentialInput.secretAccessKey === undefined) {
    if (options.credentialFile === undefined && options.credential === undefined) {
      throw new PreflightUsageError('--credential (the KMS console JSON file) is required');
    }
  }
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const target: Target = {
    hostname,
    port: url.port === '' ? 443 : Number(url.port),
    hostHeader: url.host,
    servername: isIP(hostname) === 0 ? hostname : undefined,
  };
  return {
    inputs: {
      endpointRaw,
      url,
      target,
      uriPath,
      credential: {
        accessKeyId: credentialInput.accessKeyId ?? '',
        secretAccessKey: credentialInput.secretAccessKey ?? '',
      },
      region: options.region ?? 'us-east-1',
    },
    ...(options.path !== undefined && file?.uriPath !== undefined ? { fromFile: file.uriPath } : {}),
    credentialInput,
  };
}

function summarize(checks: Check[]): Record<Status, number> {
  const summary: Record<Status, number> = { pass: 0, warn: 0, fail: 0 };
  for (const check of checks) summary[check.status]++;
  return summary;
}

/** Runs every check against the endpoint; never throws for what it finds (only for bad options). */
export async function runPreflight(options: PreflightOptions): Promise<Report> {
  const started = Date.now();
  const { inputs, fromFile, credentialInput } = resolveInputs(options);
  const checks: Check[] = [];
  const skipped: string[] = [];
  const report = (): Report => {
    const summary = summarize(checks);
    return {
      target: {
        endpoint: inputs.endpointRaw,
        uriPath: inputs.uriPath,
        region: inputs.region,
        accessKeyId: inputs.credential.accessKeyId,
        ...(options.key === undefined ? {} : { externalKeyId: options.key }),
        mutualTls: options.mtls !== undefined,
      },
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      checks,
      skipped,
      summary,
      ok: summary.fail === 0,
    };
  };

  checks.push(...uriChecks(inputs, options, fromFile));
  checks.push(credentialCheck(credentialInput));

  const extraPems = (options.ca ?? []).flatMap((ca) => splitPem(ca.toString()));
  const extraCa = new Map<string, string>();
  for (const pem of extraPems) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch {
      throw new PreflightUsageError('--ca: a PEM block is not a readable certificate');
    }
    extraCa.set(fingerprintOf(cert), /CN=([^\n,]+)/.exec(cert.subject)?.[1] ?? cert.subject);
  }
  const net = new Network(
    inputs.target,
    options.timeoutMs ?? 2000,
    [...rootCertificates, ...extraPems],
    options.mtls,
  );

  // TLS: one plain handshake first; without it nothing else can run.
  const hello = await net.probe();
  if (!hello.ok) {
    checks.push({
      id: 'tls.handshake',
      title: 'TCP connection and TLS handshake',
      status: 'fail',
      detail: `${inputs.target.hostname}:${inputs.target.port}: ${describeNetError(hello)}`,
      ...kmsOutcome(networkScenario(hello), 'customKeyStore'),
    });
    skipped.push('every other network check: no TLS connection to the endpoint');
    return report();
  }
  checks.push({
    id: 'tls.handshake',
    title: 'TCP connection and TLS handshake',
    status: 'pass',
    detail: `${hello.protocol} ${hello.cipher} in ${ms(hello.ms)}`,
  });
  checks.push(await versionCheck(net, hello));
  checks.push(await cipherCheck(net));
  checks.push(validityCheck(hello, new Date()));
  checks.push(hostnameCheck(hello, inputs.target.hostname));
  checks.push(
    chainCheck(hello, { trusted: TRUSTED_CAS, extraCa, allowUntrustedCa: options.allowUntrustedCa === true }),
  );

  const api: ApiContext = {
    net,
    inputs,
    principalArn: options.principalArn ?? 'arn:aws:iam::111122223333:role/xks-preflight',
    kmsKeyArn:
      options.kmsKeyArn ??
      `arn:aws:kms:${inputs.region}:111122223333:key/00000000-0000-4000-8000-000000000000`,
  };

  // GetHealthStatus on a fresh connection, as CreateCustomKeyStore sends it.
  const health = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'));
  checks.push(await httpCheck(net, health));
  if (options.mtls !== undefined) checks.push(...(await mtlsChecks(api, health)));
  checks.push(...healthChecks(health));

  if (options.key !== undefined) {
    if (KEY_ID.test(options.key)) {
      checks.push(await metadataCheck(api, options.key));
      const roundTrip = await roundTripChecks(api, options.key);
      checks.push(...roundTrip);
      if (!roundTrip.some((c) => c.id === 'key.decrypt'))
        skipped.push('key.decrypt: Encrypt did not succeed');
    } else {
      skipped.push('key.metadata, key.encrypt, key.decrypt: the external key id is not valid');
    }
  } else {
    skipped.push('key.metadata, key.encrypt, key.decrypt: no --key');
  }

  checks.push(await unknownPathCheck(api));
  checks.push(await badSignatureCheck(api));
  checks.push(await getCheck(api));

  const samples = Math.max(1, Math.floor(options.samples ?? 10));
  checks.push(...(await latencyChecks(api, samples)));
  return report();
}

// ---------------------------------------------------------------------------------------------
// Output.

const GROUPS: [string, string][] = [
  ['uri', 'URI'],
  ['credential', 'Credential'],
  ['tls', 'TLS'],
  ['http', 'HTTP'],
  ['mtls', 'Mutual TLS'],
  ['health', 'GetHealthStatus'],
  ['key', 'Key'],
  ['errors', 'Error behaviour'],
  ['latency', 'Latency'],
];

/** The report for people: grouped, one line per check, the KMS exception under each problem. */
export function formatReport(report: Report, options: { color?: boolean } = {}): string {
  const paint = (code: string, text: string) => (options.color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const badge: Record<Status, string> = {
    pass: paint('32', 'PASS'),
    warn: paint('33', 'WARN'),
    fail: paint('31;1', 'FAIL'),
  };
  const lines: string[] = [];
  const t = report.target;
  lines.push(paint('1', `XKS proxy preflight: ${t.endpoint}${t.uriPath}`));
  lines.push(
    `region ${t.region}, access key id ${t.accessKeyId}${t.externalKeyId === undefined ? '' : `, key ${t.externalKeyId}`}${t.mutualTls ? ', mutual TLS' : ''}`,
  );
  for (const [prefix, heading] of GROUPS) {
    const checks = report.checks.filter((c) => c.id === prefix || c.id.startsWith(`${prefix}.`));
    if (checks.length === 0) continue;
    lines.push('', paint('1', heading));
    for (const check of checks) {
      lines.push(`  ${badge[check.status]}  ${check.title}`);
      lines.push(`        ${paint('2', check.id)}  ${check.detail}`);
      if (check.status !== 'pass' && check.kmsException !== undefined) {
        lines.push(
          `        -> KMS: ${paint(check.status === 'fail' ? '31' : '33', check.kmsException)} (${check.kmsOperation})`,
        );
        if (check.kmsMessage !== undefined) lines.push(`           "${check.kmsMessage}"`);
      }
    }
  }
  if (report.skipped.length > 0) {
    lines.push('', paint('1', 'Not run'));
    for (const reason of report.skipped) lines.push(`  - ${reason}`);
  }
  const s = report.summary;
  const verdict = report.ok
    ? paint('32;1', s.warn > 0 ? 'no failures (see the warnings)' : 'all checks passed')
    : paint('31;1', `${s.fail} check${s.fail === 1 ? '' : 's'} failed`);
  lines.push('', `${s.pass} pass, ${s.warn} warn, ${s.fail} fail in ${ms(report.durationMs)}: ${verdict}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// The command line: `xks-proxy preflight ...` (bin/xks-proxy.ts hands the arguments over).

export const PREFLIGHT_HELP = `Usage: xks-proxy preflight --endpoint https://HOST[:PORT] --credential FILE [options]

Checks an XKS proxy the way AWS KMS will use it, and reports each check as PASS, WARN or FAIL
with the KMS exception it would cause. Exit code 0 when nothing fails (warnings allowed), 1 when
a check fails, 2 for a usage error.

  --endpoint URL          XksProxyUriEndpoint, https://host (a :port for testing only)
  --credential FILE       the KMS console JSON file (XksProxyUriPath and the SigV4 credential,
                          as 'xks-proxy credentials create --console-file' writes it)
  --path PATH             XksProxyUriPath, [/prefix]/kms/xks/v1 (default: the file's)
  --key ID                an external key id: GetKeyMetadata and an Encrypt/Decrypt round trip
  --mtls-cert FILE        client certificate (PEM) for mutual TLS, with --mtls-key
  --mtls-key FILE         its private key (PEM)
  --region REGION         the region KMS signs from (default us-east-1)
  --timeout MS            per call, connection and response (default 2000)
  --samples N             calls per latency measurement (default 10)
  --principal-arn ARN     awsPrincipalArn of the key requests (for proxies with authorization)
  --kms-key-arn ARN       kmsKeyArn of the Encrypt and Decrypt requests
  --json                  the report as JSON, for CI
  --color, --no-color     colour (default: when standard output is a terminal)
  -h, --help              this text

Testing only (e.g. against 'npm start' on 127.0.0.1):
  --ca FILE               also build the chain with these CA certificates (PEM; repeatable);
                          a chain ending there is a WARN: KMS will not trust it
  --allow-untrusted-ca    ...and a PASS (with a note) instead
  --allow-ip              an IP address or a single-label host (localhost: not a fully
                          qualified domain name either) is a WARN instead of a FAIL

The secret access key is never printed.`;

const OPTIONS = {
  endpoint: { type: 'string' },
  credential: { type: 'string' },
  path: { type: 'string' },
  key: { type: 'string' },
  'mtls-cert': { type: 'string' },
  'mtls-key': { type: 'string' },
  ca: { type: 'string', multiple: true },
  'allow-untrusted-ca': { type: 'boolean' },
  'allow-ip': { type: 'boolean' },
  region: { type: 'string' },
  timeout: { type: 'string' },
  samples: { type: 'string' },
  'principal-arn': { type: 'string' },
  'kms-key-arn': { type: 'string' },
  json: { type: 'boolean' },
  color: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

interface Output {
  out: (line: string) => void;
  err: (line: string) => void;
}

function readPem(option: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new PreflightUsageError(`${option}: cannot read ${file}: ${errorCode(error)}`);
  }
}

function positiveInteger(option: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1)
    throw new PreflightUsageError(`${option} must be a positive integer`);
  return Number(value);
}

function parseOptions(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false, allowNegative: true })
      .values;
  } catch (error) {
    throw new PreflightUsageError(`${(error as Error).message}\n\n${PREFLIGHT_HELP}`);
  }
}

/** `xks-proxy preflight ...`: returns the exit code. */
export async function preflightMain(
  args: string[],
  io: Output = { out: (line) => console.log(line), err: (line) => console.error(line) },
): Promise<number> {
  try {
    const values = parseOptions(args);
    if (values.help) {
      io.out(PREFLIGHT_HELP);
      return 0;
    }
    if (values.endpoint === undefined)
      throw new PreflightUsageError(`--endpoint is required\n\n${PREFLIGHT_HELP}`);
    if (values.credential === undefined)
      throw new PreflightUsageError(`--credential is required\n\n${PREFLIGHT_HELP}`);
    if ((values['mtls-cert'] === undefined) !== (values['mtls-key'] === undefined)) {
      throw new PreflightUsageError('--mtls-cert and --mtls-key go together');
    }
    const options: PreflightOptions = {
      endpoint: values.endpoint,
      credentialFile: values.credential,
      ...(values.path === undefined ? {} : { path: values.path }),
      ...(values.key === undefined ? {} : { key: values.key }),
      ...(values['mtls-cert'] === undefined || values['mtls-key'] === undefined
        ? {}
        : {
            mtls: {
              cert: readPem('--mtls-cert', values['mtls-cert']),
              key: readPem('--mtls-key', values['mtls-key']),
            },
          }),
      ca: (values.ca ?? []).map((file) => readPem('--ca', file)),
      allowUntrustedCa: values['allow-untrusted-ca'] === true,
      allowIp: values['allow-ip'] === true,
      ...(values.region === undefined ? {} : { region: values.region }),
      ...(values['principal-arn'] === undefined ? {} : { principalArn: values['principal-arn'] }),
      ...(values['kms-key-arn'] === undefined ? {} : { kmsKeyArn: values['kms-key-arn'] }),
    };
    const timeoutMs = positiveInteger('--timeout', values.timeout);
    const samples = positiveInteger('--samples', values.samples);
    if (timeoutMs !== undefined) options.timeoutMs = timeoutMs;
    if (samples !== undefined) options.samples = samples;
    for (const ca of options.ca ?? []) {
      if (splitPem(ca.toString()).length === 0)
        throw new PreflightUsageError('--ca: no PEM certificate in the file');
    }

    const report = await runPreflight(options);
    if (values.json) io.out(JSON.stringify(report, null, 2));
    else {
      const color = values.color ?? (process.stdout.isTTY === true && !process.env.NO_COLOR);
      io.out(formatReport(report, { color }));
    }
    return report.ok ? 0 : 1;
  } catch (error) {
    if (error instanceof PreflightUsageError) {
      io.err(`xks-proxy preflight: ${error.message}`);
      return 2;
    }
    // Unexpected: the name and message only (no stack, no values).
    io.err(
      `xks-proxy preflight: unexpected error: ${(error as Error)?.name ?? 'Error'}: ${(error as Error)?.message ?? ''}`,
    );
    return 1;
  }
}
