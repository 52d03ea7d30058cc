// SigV4 verification of XKS requests (spec: Authentication; Appendix A). No maintained npm library
// verifies SigV4, so this one is written on node:crypto and cross-checked in the tests against
// independent signers (@smithy/signature-v4, aws4, curl) and AWS's own SigV4 test suite.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
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
  const authorization = single(request.headers, 'authorization');
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
  if (region === '' || !/^[a-z0-9-]+$/.test(region)) fail('malformed region in credential scope');
  if (options.allowedRegions !== undefined && !options.allowedRegions.has(region)) {
    fail('region not allowed for this key store');
  }

  const signedHeaders = signedHeaderList.split(';');
  if (!signedHeaders.includes('host') || !signedHeaders.includes('x-amz-date')) {
    fail('SignedHeaders must include host and x-amz-date');
  }
  for (const name of signedHeaders) if (!SIGNED_HEADER.test(name)) fail('malformed SignedHeaders');

  const amzDate = single(request.headers, 'x-amz-date')?.trim();
  const time = amzDate === undefined ? undefined : AMZ_DATE.exec(amzDate);
  if (amzDate === undefined || !time) fail('missing, repeated or malformed X-Amz-Date');
  if (amzDate.slice(0, 8) !== date) fail('credential scope date differs from X-Amz-Date');
  const [, y, mo, d, h, mi, s] = time.map(Number) as number[];
  const signedAt = Date.UTC(y as number, (mo as number) - 1, d, h, mi, s);
  if (Number.isNaN(signedAt) || Math.abs(options.now - signedAt) > (options.maxSkewMs ?? FIVE_MINUTES)) {
    fail('X-Amz-Date is more than 5 minutes from the proxy clock');
  }

  const secret = options.secretOf(accessKeyId);
  if (secret === undefined) fail('unknown access key id');

  let canonical: string;
  try {
    canonical = canonicalRequest(request, signedHeaders);
  } catch (err) {
    if (err instanceof XksError) throw err;
    fail('path or query cannot be canonicalized'); // e.g. a lone UTF-16 surrogate (URIError)
  }
  const stringToSign = `${ALGORITHM}\n${amzDate}\n${date}/${region}/${service}/aws4_request\n${sha256hex(canonical)}`;
  const expected = createHmac('sha256', signingKey(accessKeyId, secret, date, region, service))
    .update(stringToSign)
    .digest();
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) fail('signature does not match');
  return { accessKeyId, region };
}

/** The canonical request (AWS SigV4, non-S3 rules), built from what the client sent. */
export function canonicalRequest(request: SignedRequest, signedHeaders: readonly string[]): string {
  const lines = [
    request.method.toUpperCase(),
    canonicalUri(request.path),
    canonicalQuery(request.query ?? []),
  ];
  for (const name of signedHeaders) {
    const values = headerValues(request.headers, name);
    if (values === undefined) fail(`signed header ${name} is missing`);
    lines.push(`${name}:${values.map((v) => v.trim().replace(/\s+/g, ' ')).join(',')}`);
  }
  lines.push('', signedHeaders.join(';'), sha256hex(request.body));
  return lines.join('\n');
}

/** Removes dot segments and empty segments, then URI-encodes each segment (again). */
export function canonicalUri(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(uriEncode(segment));
  }
  const trailing = segments.length > 0 && path.endsWith('/') ? '/' : '';
  return `/${segments.join('/')}${trailing}`;
}

function canonicalQuery(query: ReadonlyArray<readonly [string, string]>): string {
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

/** Every value of a header, whatever the case of its name (`Authorization` and `authorization` are one header). */
function headerValues(headers: SignedRequest['headers'], lowerName: string): readonly string[] | undefined {
  let values: string[] | undefined;
  for (const name of Object.keys(headers)) {
    if (name.toLowerCase() !== lowerName) continue;
    values = [...(values ?? []), ...(headers[name] ?? [])];
  }
  return values;
}

function single(headers: SignedRequest['headers'], lowerName: string): string | undefined {
  const values = headerValues(headers, lowerName);
  return values?.length === 1 ? values[0] : undefined;
}

function sha256hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

// Signing keys depend only on (secret, date, region, service): cache them, bounded, so that a
// stream of requests costs one HMAC chain per day and region instead of four HMACs each.
const signingKeys = new Map<string, { secret: string; key: Buffer }>();
const MAX_SIGNING_KEYS = 256;

function signingKey(
  accessKeyId: string,
  secret: string,
  date: string,
  region: string,
  service: string,
): Buffer {
  const id = `${accessKeyId}/${date}/${region}/${service}`;
  const cached = signingKeys.get(id);
  if (cached !== undefined && cached.secret === secret) return cached.key;
  const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), 'aws4_request');
  if (signingKeys.size >= MAX_SIGNING_KEYS) signingKeys.clear();
  signingKeys.set(id, { secret, key });
  return key;
}
