// SigV4 verification of XKS requests (spec: Authentication; Appendix A). No maintained npm library
// verifies SigV4, so this one is written on node:crypto and cross-checked in the tests against
// independent signers (@smithy/signature-v4, aws4, curl) and AWS's own SigV4 test suite. The signer
// below (what `xks-proxy preflight` sends) shares the verifier's canonical request, string to sign
// and signing key, so the project has one SigV4 implementation; the same tests cross-check it.
import { createHmac, hash, timingSafeEqual } from 'node:crypto';
import { XksError } from './errors.ts';

export interface SignedRequest {
  method: string;
  /** The path exactly as the client sent it (API Gateway: requestContext.path). */
  path: string;
  /** Decoded query parameters; XKS requests have none. */
  query?: ReadonlyArray<readonly [string, string]>;
  /** Header name (any case) to its values, in the order received. */
  headers: Readonly<Record<string, readonly string[] | undefined>>;
  /** The raw body bytes, as received. */
  body: Buffer;
}

export interface VerifyOptions {
  /** `kms-xks-proxy` for XKS. */
  service: string;
  /** The secret access key of an access key id, or undefined for an unknown id. */
  secretOf(accessKeyId: string): string | undefined;
  /** When given, the credential scope's region must be one of these. */
  allowedRegions?: ReadonlySet<string> | undefined;
  /** Current time in ms (Date.now()). */
  now: number;
  /** Allowed clock difference either way; the spec says 5 minutes. */
  maxSkewMs?: number;
}

export interface Verified {
  accessKeyId: string;
  region: string;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';
const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 +Credential=([^,\s]+) *, *SignedHeaders=([^,\s]+) *, *Signature=([0-9a-f]{64})$/;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const SIGNED_HEADER = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;
const REGION = /^[a-z0-9-]+$/;
/** Whitespace that canonicalization changes: a run of two or more, or any but a single space. */
const WHITESPACE = /\s\s|[^\S ]/;
const WHITESPACE_RUNS = /\s+/g;
const FIVE_MINUTES = 5 * 60 * 1000;

function fail(reason: string): never {
  throw new XksError('AuthenticationFailedException', `SigV4 authentication failed: ${reason}`);
}

/**
 * Verifies the request's SigV4 signature and freshness. Throws XksError
 * AuthenticationFailedException (401) on every failure, saying which check failed but never
 * anything secret (no signature, no canonical request).
 */
export function verifySigV4(request: SignedRequest, options: VerifyOptions): Verified {
  const headers = new HeaderLookup(request.headers);
  const authorization = single(headers, 'authorization');
  if (authorization === undefined) fail('missing or repeated Authorization header');
  const match = AUTHORIZATION.exec(authorization.trim());
  if (match === null) fail(`Authorization is not ${ALGORITHM} with Credential, SignedHeaders, Signature`);
  const [, credential = '', signedHeaderList = '', signature = ''] = match;

  // Credential=<access key id>/<yyyymmdd>/<region>/<service>/aws4_request
  const scope = credential.split('/');
  if (scope.length !== 5) fail('malformed credential scope');
  const [accessKeyId = '', date = '', region = '', service, terminator] = scope;
  if (service !== options.service) fail(`credential scope service is not ${options.service}`);
  if (terminator !== 'aws4_request') fail('credential scope does not end in aws4_request');
  if (region === '' || !REGION.test(region)) fail('malformed region in credential scope');
  if (options.allowedRegions !== undefined && !options.allowedRegions.has(region)) {
    fail('region not allowed for this key store');
  }

  const signedHeaders = signedHeaderList.split(';');
  if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date')) {
    fail('SignedHeaders must include host and x-amz-date');
  }
  for (const name of signedHeaders) if (!SIGNED_HEADER.test(name)) fail('malformed SignedHeaders');

  const amzDate = single(headers, 'x-amz-date')?.trim();
  const time = amzDate === undefined ? undefined : AMZ_DATE.exec(amzDate);
  if (amzDate === undefined || !time) fail('missing, repeated or malformed X-Amz-Date');
  if (amzDate.slice(0, 8) !== date) fail('credential scope date differs from X-Amz-Date');
  const y = Number(time[1]);
  const mo = Number(time[2]);
  const d = Number(time[3]);
  const h = Number(time[4]);
  const mi = Number(time[5]);
  const s = Number(time[6]);
  const signedAt = Date.UTC(y, mo - 1, d, h, mi, s);
  // Date.UTC rolls month 13, day 32 (or February 30), hour 24 ... over into a valid time: such a
  // date is no UTC timestamp at all (spec: Appendix A, YYYYMMDD'T'HHMMSS'Z').
  if (mo < 1 || mo > 12 || h > 23 || mi > 59 || s > 59 || new Date(signedAt).getUTCDate() !== d) {
    fail('missing, repeated or malformed X-Amz-Date');
  }
  if (Number.isNaN(signedAt) || Math.abs(options.now - signedAt) > (options.maxSkewMs ?? FIVE_MINUTES)) {
    fail('X-Amz-Date is more than 5 minutes from the proxy clock');
  }

  const secret = options.secretOf(accessKeyId);
  if (secret === undefined) fail('unknown access key id');

  let canonical: string;
  try {
    canonical = buildCanonicalRequest(request, headers, signedHeaders, signedHeaderList);
  } catch (err) {
    if (err instanceof XksError) throw err;
    fail('path or query cannot be canonicalized'); // e.g. a lone UTF-16 surrogate (URIError)
  }
  const expected = signatureOf(canonical, amzDate, accessKeyId, secret, { date, region, service });
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) fail('signature does not match');
  return { accessKeyId, region };
}

export interface SigningCredential {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface RequestToSign {
  method: string;
  /** The path exactly as it will be sent. */
  path: string;
  /** The Host header: host, with `:port` when not the default. */
  host: string;
  /** The body bytes exactly as they will be sent. */
  body: Buffer | string;
}

export interface SignOptions {
  service: string;
  region: string;
  /** Signing time in ms (Date.now()). */
  now: number;
}

/** What AWS KMS signs in an XKS request (Appendix A). */
const KMS_SIGNED_HEADERS = ['host', 'x-amz-date'] as const;

/**
 * Signs a request as AWS KMS signs XKS requests (Appendix A): SignedHeaders=host;x-amz-date. Returns
 * the headers to send with it: Host, X-Amz-Date and Authorization.
 */
export function signSigV4(
  request: RequestToSign,
  credential: SigningCredential,
  options: SignOptions,
): { host: string; 'x-amz-date': string; authorization: string } {
  // YYYYMMDD'T'HHMMSS'Z' (Appendix A).
  const amzDate = new Date(options.now).toISOString().replace(/[-:]|\.\d{3}/g, '');
  const scope = { date: amzDate.slice(0, 8), region: options.region, service: options.service };
  const canonical = canonicalRequest(
    {
      method: request.method,
      path: request.path,
      headers: { host: [request.host], 'x-amz-date': [amzDate] },
      body: typeof request.body === 'string' ? Buffer.from(request.body) : request.body,
    },
    KMS_SIGNED_HEADERS,
  );
  const signature = signatureOf(
    canonical,
    amzDate,
    credential.accessKeyId,
    credential.secretAccessKey,
    scope,
  );
  return {
    host: request.host,
    'x-amz-date': amzDate,
    authorization:
      `${ALGORITHM} Credential=${credential.accessKeyId}/${scope.date}/${scope.region}/${scope.service}/aws4_request, ` +
      `SignedHeaders=${KMS_SIGNED_HEADERS.join(';')}, Signature=${signature.toString('hex')}`,
  };
}

/** Appendix A, tasks 2 and 3: the string to sign, and its HMAC with the signing key. */
function signatureOf(
  canonical: string,
  amzDate: string,
  accessKeyId: string,
  secret: string,
  scope: { date: string; region: string; service: string },
): Buffer {
  const { date, region, service } = scope;
  const stringToSign = `${ALGORITHM}\n${amzDate}\n${date}/${region}/${service}/aws4_request\n${sha256hex(canonical)}`;
  return createHmac('sha256', signingKey(accessKeyId, secret, date, region, service))
    .update(stringToSign)
    .digest();
}

/** The canonical request (AWS SigV4, non-S3 rules), built from what the client sent. */
export function canonicalRequest(request: SignedRequest, signedHeaders: readonly string[]): string {
  return buildCanonicalRequest(
    request,
    new HeaderLookup(request.headers),
    signedHeaders,
    signedHeaders.join(';'),
  );
}

function buildCanonicalRequest(
  request: SignedRequest,
  headers: HeaderLookup,
  signedHeaders: readonly string[],
  signedHeaderList: string,
): string {
  let out = `${request.method.toUpperCase()}\n${canonicalUri(request.path)}\n${canonicalQuery(request.query ?? [])}\n`;
  for (const name of signedHeaders) {
    const values = headers.get(name);
    if (values === undefined) fail(`signed header ${name} is missing`);
    out += `${name}:${values.length === 1 ? canonicalValue(values[0] as string) : values.map(canonicalValue).join(',')}\n`;
  }
  return `${out}\n${signedHeaderList}\n${sha256hex(request.body)}`;
}

/** Trimmed, inner whitespace runs collapsed to one space. */
function canonicalValue(value: string): string {
  const trimmed = value.trim();
  return WHITESPACE.test(trimmed) ? trimmed.replace(WHITESPACE_RUNS, ' ') : trimmed;
}

// A key store sees few distinct paths (one per route and key): each is canonicalized once. Bounded,
// since paths come from requests (cleared when full, like the signing keys below).
const canonicalUris = new Map<string, string>();
const MAX_CANONICAL_URIS = 1024;

/** Removes dot segments and empty segments, then URI-encodes each segment (again). */
export function canonicalUri(path: string): string {
  const cached = canonicalUris.get(path);
  if (cached !== undefined) return cached;
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(uriEncode(segment));
  }
  const trailing = segments.length > 0 && path.endsWith('/') ? '/' : '';
  const canonical = `/${segments.join('/')}${trailing}`;
  if (canonicalUris.size >= MAX_CANONICAL_URIS) canonicalUris.clear();
  canonicalUris.set(path, canonical);
  return canonical;
}

function canonicalQuery(query: ReadonlyArray<readonly [string, string]>): string {
  if (query.length === 0) return ''; // XKS requests have no query string
  return query
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort(([ak, av], [bk, bv]) => (ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

/** RFC 3986 encoding: everything but A-Z a-z 0-9 - _ . ~ */
function uriEncode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * Header values by name, whatever its case (`Authorization` and `authorization` are one header;
 * repeated names are one header with all their values). A request has a dozen headers and the
 * verifier asks for three or four of them: each lookup scans the names, lower-casing only those
 * of the right length, which costs less than building a map of all of them.
 */
class HeaderLookup {
  readonly #headers: SignedRequest['headers'];
  readonly #names: string[];

  constructor(headers: SignedRequest['headers']) {
    this.#headers = headers;
    this.#names = Object.keys(headers);
  }

  get(lowerName: string): readonly string[] | undefined {
    let values: readonly string[] | undefined;
    for (const name of this.#names) {
      if (name.length !== lowerName.length || name.toLowerCase() !== lowerName) continue;
      const these = this.#headers[name] ?? [];
      values = values === undefined ? these : [...values, ...these];
    }
    return values;
  }
}

function single(headers: HeaderLookup, lowerName: string): string | undefined {
  const values = headers.get(lowerName);
  return values?.length === 1 ? values[0] : undefined;
}

function sha256hex(data: string | Buffer): string {
  return hash('sha256', data, 'hex');
}

// Signing keys depend only on (secret, date, region, service): cache them, bounded, so that a
// stream of requests costs one HMAC chain per day and region instead of four HMACs each.
const signingKeys = new Map<string, { secret: string; key: Buffer }>();
const MAX_SIGNING_KEYS = 256;
let lastSigningKey:
  | { accessKeyId: string; date: string; region: string; service: string; secret: string; key: Buffer }
  | undefined;

function signingKey(
  accessKeyId: string,
  secret: string,
  date: string,
  region: string,
  service: string,
): Buffer {
  // Most requests use the same key as the one before: compared field by field, no lookup.
  const last = lastSigningKey;
  if (
    last !== undefined &&
    last.accessKeyId === accessKeyId &&
    last.date === date &&
    last.region === region &&
    last.service === service &&
    last.secret === secret
  ) {
    return last.key;
  }
  const id = `${accessKeyId}/${date}/${region}/${service}`;
  const cached = signingKeys.get(id);
  if (cached !== undefined && cached.secret === secret) {
    lastSigningKey = { accessKeyId, date, region, service, secret, key: cached.key };
    return cached.key;
  }
  const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), 'aws4_request');
  if (signingKeys.size >= MAX_SIGNING_KEYS) signingKeys.clear();
  signingKeys.set(id, { secret, key });
  lastSigningKey = { accessKeyId, date, region, service, secret, key };
  return key;
}
