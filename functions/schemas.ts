// Request bodies of the four routes as JSON Schemas, exactly as the spec lists their fields
// (spec: GetKeyMetadata, Encrypt, Decrypt, GetHealthStatus). Unknown fields, and kmsOperation
// values the spec does not list, are accepted: KMS may add both (spec: Appendix B).
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { XksError } from './errors.ts';
import type { Operation } from './routes.ts';

/**
 * The Base64 fields that carry data (plaintext, ciphertext, AAD, ciphertextMetadata) are only
 * checked for type and emptiness here: their alphabet, padding and canonical form are checked where
 * they are decoded (decodeBase64 in xks.ts: the decoded bytes must encode back to the same string),
 * with the same 400 ValidationException. A pattern here would scan up to 87 KB per field once more
 * (docs/performance.md). The IV and the tag are short, of exact lengths: patterns check them here.
 */
const base64 = { type: 'string' } as const;
/**
 * Not empty: a pattern anchored at the start that looks at one character only (ajv's minLength
 * counts the code points of the whole string). Too short to be Base64 at all ("AA") is found where
 * the field is decoded, and said so.
 */
const nonEmptyBase64 = { ...base64, pattern: '^[^]' } as const;

// ARNs MUST work up to 2048 characters; metadata strings are capped well above that so that a
// request cannot push arbitrarily long strings into the logs.
const text = { type: 'string', maxLength: 8192 } as const;

const requestMetadata = (required: string[]) => ({
  type: 'object',
  required,
  properties: {
    awsPrincipalArn: text,
    awsSourceVpc: text,
    awsSourceVpce: text,
    kmsKeyArn: text,
    kmsOperation: text,
    kmsRequestId: text,
    kmsViaService: text,
  },
});

const SCHEMAS: Record<Operation, object> = {
  GetHealthStatus: {
    type: 'object',
    required: ['requestMetadata'],
    properties: { requestMetadata: requestMetadata(['kmsRequestId', 'kmsOperation']) },
  },
  GetKeyMetadata: {
    type: 'object',
    required: ['requestMetadata'],
    properties: { requestMetadata: requestMetadata(['awsPrincipalArn', 'kmsOperation', 'kmsRequestId']) },
  },
  Encrypt: {
    type: 'object',
    required: ['requestMetadata', 'plaintext', 'encryptionAlgorithm'],
    properties: {
      requestMetadata: requestMetadata(['awsPrincipalArn', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId']),
      plaintext: nonEmptyBase64,
      encryptionAlgorithm: { const: 'AES_GCM' },
      additionalAuthenticatedData: base64,
      ciphertextDataIntegrityValueAlgorithm: { const: 'SHA_256' },
    },
  },
  Decrypt: {
    type: 'object',
    required: [
      'requestMetadata',
      'ciphertext',
      'encryptionAlgorithm',
      'initializationVector',
      'authenticationTag',
    ],
    properties: {
      requestMetadata: requestMetadata(['awsPrincipalArn', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId']),
      ciphertext: nonEmptyBase64,
      ciphertextMetadata: base64,
      encryptionAlgorithm: { const: 'AES_GCM' },
      additionalAuthenticatedData: base64,
      // 12 bytes (16 Base64 characters) or 16 bytes (24 characters).
      initializationVector: { type: 'string', pattern: '^(?:[A-Za-z0-9+/]{16}|[A-Za-z0-9+/]{22}==)$' },
      // 16 bytes.
      authenticationTag: { type: 'string', pattern: '^[A-Za-z0-9+/]{22}==$' },
    },
  },
};

export interface RequestMetadata {
  awsPrincipalArn?: string;
  awsSourceVpc?: string;
  awsSourceVpce?: string;
  kmsKeyArn?: string;
  kmsOperation?: string;
  kmsRequestId?: string;
  kmsViaService?: string;
}

export interface HealthRequest {
  requestMetadata: RequestMetadata;
}

export interface KeyMetadataRequest {
  requestMetadata: RequestMetadata & { awsPrincipalArn: string; kmsOperation: string; kmsRequestId: string };
}

export interface EncryptRequest {
  requestMetadata: RequestMetadata & { kmsKeyArn: string; kmsOperation: string; kmsRequestId: string };
  plaintext: string;
  encryptionAlgorithm: 'AES_GCM';
  additionalAuthenticatedData?: string;
  ciphertextDataIntegrityValueAlgorithm?: 'SHA_256';
}

export interface DecryptRequest {
  requestMetadata: RequestMetadata & { kmsKeyArn: string; kmsOperation: string; kmsRequestId: string };
  ciphertext: string;
  ciphertextMetadata?: string;
  encryptionAlgorithm: 'AES_GCM';
  additionalAuthenticatedData?: string;
  initializationVector: string;
  authenticationTag: string;
}

const ajv = new Ajv({ allErrors: false, strict: true, strictTypes: false });
const validators = new Map<Operation, ValidateFunction>();

/** The compiled validator of one operation (compiled once, at first use, i.e. at init). */
export function validatorFor(operation: Operation): (body: unknown) => void {
  let validate = validators.get(operation);
  if (validate === undefined) {
    validate = ajv.compile(SCHEMAS[operation]);
    validators.set(operation, validate);
  }
  const compiled = validate;
  return (body) => {
    if (!compiled(body)) throw new XksError('ValidationException', describe(compiled.errors?.[0]));
  };
}

const PATTERN_RULES: Record<string, string> = {
  plaintext: 'is empty',
  ciphertext: 'is empty',
  initializationVector: 'must be 12 or 16 bytes in standard Base64',
  authenticationTag: 'must be 16 bytes in standard Base64',
};

/** A message naming the field and the rule, never the value. */
function describe(error: ErrorObject | undefined): string {
  if (error === undefined) return 'Invalid request';
  const where = error.instancePath === '' ? 'request' : error.instancePath.slice(1).replaceAll('/', '.');
  switch (error.keyword) {
    case 'required':
      return `${where} is missing ${(error.params as { missingProperty: string }).missingProperty}`;
    case 'pattern':
      return `${where} ${PATTERN_RULES[where] ?? 'is not standard Base64'}`;
    case 'minLength':
      return `${where} is empty`;
    case 'maxLength':
      return `${where} is longer than ${(error.params as { limit: number }).limit} characters`;
    case 'const':
      return `${where} must be ${JSON.stringify((error.params as { allowedValue: unknown }).allowedValue)}`;
    default:
      return `${where} ${error.message ?? 'is invalid'}`;
  }
}
