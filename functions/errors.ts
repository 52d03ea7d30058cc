// The one error type of the proxy and the spec's table from errorName to HTTP status
// (spec: Error codes).
import { HsmError } from '../layers/pkcs11/hsm.ts';

export const ERROR_STATUS = {
  ValidationException: 400,
  InvalidStateException: 400,
  InvalidCiphertextException: 400,
  InvalidKeyUsageException: 400,
  AuthenticationFailedException: 401,
  AccessDeniedException: 403,
  KeyNotFoundException: 404,
  InvalidUriPathException: 404,
  ThrottlingException: 429,
  InternalException: 500,
  UnsupportedOperationException: 501,
  DependencyTimeoutException: 503,
  // Not XKS error names: HTTP conditions the spec's table has no row for. The spec (API operations)
  // only says a GET MUST get 405; the local server answers the other two itself (RFC 9110 section
  // 15.5.9, RFC 6585 section 5). KMS never causes them.
  MethodNotAllowed: 405,
  RequestTimeout: 408,
  RequestHeaderFieldsTooLarge: 431,
} as const;

export type ErrorName = keyof typeof ERROR_STATUS;

/**
 * The reason phrases (RFC 9110) of the statuses the functions answer with: 200 and ERROR_STATUS's.
 * Not node:http's STATUS_CODES: loading node:http (and net, streams, the HTTP client and server)
 * costs each cold start milliseconds; test/unit/front-door.test.ts holds the two equal. For the ALB
 * front door's status descriptions (functions/front-door.ts).
 */
export const REASON_PHRASES: Readonly<Record<number, string>> = {
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};

/**
 * An error the proxy answers with. Its message goes to KMS (and from there to the customer's
 * CloudWatch logs), so it never carries plaintext, AAD, keys, PINs or secrets.
 */
export class XksError extends Error {
  readonly errorName: ErrorName;

  constructor(errorName: ErrorName, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'XksError';
    this.errorName = errorName;
  }

  get statusCode(): number {
    return ERROR_STATUS[this.errorName];
  }

  /** Whether the proxy or what it depends on failed (5xx), rather than the request. */
  get isFault(): boolean {
    return this.statusCode >= 500;
  }
}

/** Any thrown value as an XksError: HSM errors by kind, everything unexpected as InternalException. */
export function toXksError(err: unknown): XksError {
  if (err instanceof XksError) return err;
  if (err instanceof HsmError) {
    switch (err.kind) {
      case 'invalidCiphertext':
        return new XksError('InvalidCiphertextException', err.message, { cause: err });
      case 'keyUsage':
        return new XksError('InvalidKeyUsageException', err.message, { cause: err });
      // Spec (Error codes): the proxy timed out while accessing a dependency layer. An HSM that
      // cannot be reached at all is the spec's "failure of the backing key manager": 500.
      case 'timeout':
        return new XksError('DependencyTimeoutException', err.message, { cause: err });
      default:
        return new XksError('InternalException', err.message, { cause: err });
    }
  }
  return new XksError('InternalException', 'Internal error', { cause: err });
}

/** errorMessage: printable ASCII (0x20-0x7e) and shorter than 512 characters (spec: Error codes). */
export function safeErrorMessage(message: string): string {
  return message.replace(/[^\x20-\x7e]/g, '?').slice(0, 511);
}
