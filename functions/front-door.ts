// The two front doors a deployed proxy can sit behind, and the one module that knows them apart: an
// API Gateway REST API (Lambda proxy integration, payload format 1.0) and an Application Load
// Balancer (a Lambda target group). Each event becomes the HttpRequest the middleware chain reads,
// and each response goes back in the shape its event came in (docs/deploy.md, "API Gateway or ALB").
import type { ALBEvent, ALBResult, APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { REASON_PHRASES } from './errors.ts';
import { parseRoute, resourceOf } from './routes.ts';

export type FrontDoor = 'apigateway' | 'alb';
export type FrontDoorEvent = APIGatewayProxyEvent | ALBEvent;
/** What the chain answers: always with a body. */
export type FrontDoorResult = APIGatewayProxyResult | (ALBResult & { body: string });

/** A request as the middleware chain sees it, whichever front door it came through. */
export interface HttpRequest {
  method: string;
  /** The path exactly as the client sent it, percent-encoding included: what SigV4 signed. */
  path: string;
  /**
   * The route of the path, as API Gateway writes a resource (`<prefix>/kms/xks/v1/keys/{keyId}/encrypt`);
   * '' when the path names no XKS route.
   */
  resource: string;
  /** The `{keyId}` path segment, percent-decoded; '' without one. */
  keyId: string;
  /** Each header, by its name as the front door gives it, with all its values in order. */
  headers: Record<string, string[]>;
  hasQuery: boolean;
  /** The body's bytes, exactly as received. */
  body: Buffer;
  /**
   * The mutual TLS client certificate's subject (RFC 2253), once per value the front door gave: none
   * without a certificate. More than one is a forgery attempt (see clientCertSubjects).
   */
  clientCertSubjects: string[];
}

/** A response as the middleware chain makes it. */
export interface HttpResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * ALB's mutual TLS (verify mode) puts the verified client certificate's subject in this header
 * (RFC 2253). A client can send a header of that name too: see clientCertSubjects.
 */
export const ALB_CLIENT_CERT_SUBJECT = 'x-amzn-mtls-clientcert-subject';

export function isAlbEvent(event: FrontDoorEvent): event is ALBEvent {
  return (event.requestContext as Partial<ALBEvent['requestContext']> | undefined)?.elb !== undefined;
}

/** The request an event carries. Never throws: what is missing is empty, and the chain refuses it. */
export function httpRequestOf(event: FrontDoorEvent): HttpRequest {
  const body = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
  const hasQuery = [event.multiValueQueryStringParameters, event.queryStringParameters].some(
    (query) => query !== null && query !== undefined && Object.keys(query).length > 0,
  );
  const headers = event.multiValueHeaders ?? singleValued(event.headers);
  if (isAlbEvent(event)) {
    // ALB routes by its listener rules only (infra/alb/): the route, the key store prefix and the
    // key id are the function's to read, from the path as sent (ALB does not decode it).
    const route = parseRoute(event.path ?? '');
    return {
      method: event.httpMethod ?? '',
      path: event.path ?? '',
      resource: route === undefined ? '' : resourceOf(route),
      keyId: route?.keyId === undefined ? '' : decoded(route.keyId),
      headers: headers as Record<string, string[]>,
      hasQuery,
      body,
      clientCertSubjects: clientCertSubjects(headers),
    };
  }
  const subject = event.requestContext?.identity?.clientCert?.subjectDN;
  return {
    method: event.httpMethod ?? '',
    // requestContext.path is what the client sent (with the stage of an execute-api URL, the base
    // path of a custom domain); event.path drops the stage.
    path: event.requestContext?.path ?? event.path ?? '',
    // API Gateway has routed: the resource and the (decoded) path parameter.
    resource: event.resource ?? '',
    keyId: event.pathParameters?.keyId ?? '',
    headers: headers as Record<string, string[]>,
    hasQuery,
    body,
    clientCertSubjects: subject === undefined || subject === null ? [] : [subject],
  };
}

/**
 * Every value of ALB's client certificate subject header, whatever the case of its name. ALB in
 * verify mode adds the header to every request, from the certificate it verified; what it does
 * with a header of the same name that the client sent is not documented. The target groups pass
 * every value of a header (multi-value headers, infra/alb/), so a forged one shows as a second
 * value, and the chain admits exactly one (functions/middleware.ts, authenticate).
 */
function clientCertSubjects(headers: ALBEvent['multiValueHeaders']): string[] {
  const values: string[] = [];
  for (const [name, given] of Object.entries(headers ?? {})) {
    if (name.toLowerCase() === ALB_CLIENT_CERT_SUBJECT && given !== undefined) values.push(...given);
  }
  return values;
}

/**
 * The response in its event's shape. ALB needs a status description, and the headers as
 * multiValueHeaders when the target group passes multi-value headers (then the event has them).
 */
export function frontDoorResult(event: FrontDoorEvent, response: HttpResponse): FrontDoorResult {
  if (!isAlbEvent(event)) return response;
  const result: ALBResult & { body: string } = {
    statusCode: response.statusCode,
    statusDescription: `${response.statusCode} ${REASON_PHRASES[response.statusCode] ?? ''}`.trim(),
    isBase64Encoded: false,
    body: response.body,
  };
  if (event.multiValueHeaders === undefined) result.headers = response.headers;
  else {
    result.multiValueHeaders = Object.fromEntries(
      Object.entries(response.headers).map(([name, value]) => [name, [value]]),
    );
  }
  return result;
}

function singleValued(
  headers: Record<string, string | undefined> | null | undefined,
): Record<string, string[]> {
  // No prototype: a header named `__proto__` is kept as a header.
  const out: Record<string, string[]> = Object.create(null);
  for (const [name, value] of Object.entries(headers ?? {})) if (value !== undefined) out[name] = [value];
  return out;
}

/** A path segment, percent-decoded as API Gateway decodes path parameters; a malformed escape stays. */
function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
