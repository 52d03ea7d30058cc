// Judging the proxy's HTTP replies against the spec: its JSON bodies, its error body
// ({"errorName", "errorMessage"?}, spec: "Error codes"), its Base64, and what KMS makes of each.
import { isScenario, type KmsContext, kmsOutcome, type ScenarioName } from './kms.ts';
import { describeNetError, type HttpReply, type NetError, networkScenario } from './network.ts';
import type { Check } from './report.ts';

/** Standard Base64 (RFC 4648 section 4), padded and canonical: the only form the spec allows. */
export function decodeBase64(value: unknown): Buffer | undefined {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
    return undefined;
  }
  const bytes = Buffer.from(value, 'base64');
  return bytes.toString('base64') === value ? bytes : undefined;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function contentType(reply: HttpReply): string {
  return String(reply.headers['content-type'] ?? '');
}

export function isJsonContentType(reply: HttpReply): boolean {
  return /^application\/json\s*(;|$)/i.test(contentType(reply));
}

/** A short, printable excerpt of a body, for a detail line. */
export function excerpt(text: string): string {
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
export function errorBodyOf(reply: HttpReply): ErrorBody | undefined {
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

/**
 * What KMS makes of a non-2xx reply: the errorName's row of the table, or "cannot interpret" for
 * anything that is not the spec's JSON error body (HTML pages, empty bodies, unknown names).
 */
export function replyScenario(reply: HttpReply): { scenario: ScenarioName; what: string } {
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

/** The fields of a success body, or a reason it is not one. */
export function successJson(reply: HttpReply): { body: Record<string, unknown> } | { problem: string } {
  const body = parseJson(reply.body);
  if (!isObject(body)) {
    return {
      problem: `HTTP 200 but the body is not a JSON object (${contentType(reply) || 'no Content-Type'}: '${excerpt(reply.body)}')`,
    };
  }
  return { body };
}

/** A failed call of `operation`: what went wrong, and the KMS exception it would cause. */
export function failedReply(
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

/** What the proxy answered, in a few words. */
export function observed(reply: HttpReply | NetError): string {
  if (!reply.ok) return describeNetError(reply);
  const error = errorBodyOf(reply);
  return error === undefined
    ? `HTTP ${reply.status} (${contentType(reply) || 'no Content-Type'}: '${excerpt(reply.body)}')`
    : `HTTP ${reply.status} ${error.errorName}${error.problem ? ` (${error.problem})` : ''}`;
}
