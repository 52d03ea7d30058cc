// Independent SigV4 signers for the tests: @smithy/signature-v4 (what the AWS SDKs use) and aws4.
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import aws4 from 'aws4';

export interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

// Fixed test credentials in the spec's format (Appendix A): the spec's configuration file example
// and a made-up one, and a secret that belongs to neither.
export const CRED_A: Credential = {
  accessKeyId: 'AKIAI2SFODNN7EXAMPLE',
  secretAccessKey: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE',
};
export const CRED_B: Credential = {
  accessKeyId: 'BBBBBBBBBBBBBBBBBBBBBBBB22',
  secretAccessKey: 'Qm9iJ3Mgc2Vjb25kIHRlc3Qgc2VjcmV0IGZvciByb3RhdGlvbg==',
};
export const OTHER_SECRET = 'U29tZU90aGVyU2VjcmV0VGhhdElzTm90VGhlUmlnaHRPbmU=';

export interface ToSign {
  method?: string;
  /** Host header value, with port. */
  host: string;
  path: string;
  body: string | Buffer;
  credential: Credential;
  region?: string;
  service?: string;
  date?: Date;
  /** Extra headers (signed, unless `unsigned` lists them). */
  headers?: Record<string, string>;
  /** Header names the signer must leave out of SignedHeaders. */
  unsigned?: string[];
}

/** Headers (host, x-amz-date, authorization, ...) as @smithy/signature-v4 signs them. */
export async function smithySign(req: ToSign): Promise<Record<string, string>> {
  const [hostname, port] = req.host.split(':');
  const signer = new SignatureV4({
    service: req.service ?? 'kms-xks-proxy',
    region: req.region ?? 'us-east-1',
    credentials: req.credential,
    sha256: Sha256,
  });
  // A query string goes to the signer as its decoded parameters, which it encodes (RFC 3986).
  const queryAt = req.path.indexOf('?');
  const query: Record<string, string | string[]> = Object.create(null);
  for (const [name, value] of new URLSearchParams(queryAt === -1 ? '' : req.path.slice(queryAt + 1))) {
    const had = query[name];
    query[name] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
  }
  const signed = await signer.sign(
    {
      method: req.method ?? 'POST',
      protocol: 'https:',
      hostname: hostname as string,
      port: port === undefined ? undefined : Number(port),
      path: queryAt === -1 ? req.path : req.path.slice(0, queryAt),
      query,
      headers: { host: req.host, 'content-type': 'application/json', ...req.headers },
      body: req.body,
    },
    {
      signingDate: req.date ?? new Date(),
      unsignableHeaders: new Set(['content-type', ...(req.unsigned ?? [])]),
    },
  );
  return signed.headers as Record<string, string>;
}

/** Headers as the aws4 package signs them (it also signs content-type and content-length). */
export function aws4Sign(req: ToSign): Record<string, string> {
  const options = {
    host: req.host,
    method: req.method ?? 'POST',
    path: req.path,
    service: req.service ?? 'kms-xks-proxy',
    region: req.region ?? 'us-east-1',
    body: req.body,
    headers: { 'content-type': 'application/json', ...req.headers } as Record<string, string | number>,
  };
  if (req.date !== undefined) options.headers['X-Amz-Date'] = toAmzDate(req.date);
  const signed = aws4.sign(options, req.credential);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(signed.headers ?? {}))
    headers[name.toLowerCase()] = String(value);
  return headers;
}

export function toAmzDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}
