// The XKS API on one runtime, for hosts other than Lambda (the local server, the tests): the four
// Lambda handlers, the routing each front door does in front of them when deployed (API Gateway or
// an ALB), and the log line of a request that no handler gets.
import type { XksError } from './errors.ts';
import { type LambdaHandler, logRefusal, xksHandler } from './middleware.ts';
import { decrypt } from './operations/decrypt.ts';
import { encrypt } from './operations/encrypt.ts';
import { getHealthStatus } from './operations/getHealthStatus.ts';
import { getKeyMetadata } from './operations/getKeyMetadata.ts';
import { ALB_PATH_PATTERNS, matchesPathPattern, type Operation, parseRoute, resourceOf } from './routes.ts';
import type { Runtime } from './runtime.ts';

export type { FrontDoor } from './front-door.ts';
export type { LambdaHandler };

/** How the deployed API presents a request to a handler: its API Gateway resource and path parameter. */
export interface ApiRoute {
  operation: Operation;
  /** event.resource: the route with `{keyId}` in place of the key id. */
  resource: string;
  /** The `{externalKeyId}` path segment as sent (URL-encoded); undefined for GetHealthStatus. */
  keyId: string | undefined;
}

/** The route of a URI path as the deployed API routes it; undefined: none (404 InvalidUriPathException). */
export function apiRoute(path: string): ApiRoute | undefined {
  const route = parseRoute(path);
  return route && { operation: route.operation, resource: resourceOf(route), keyId: route.keyId };
}

/**
 * The route function an ALB's listener rules forward a path to (ALB_PATH_PATTERNS, by priority);
 * undefined: the listener's default action, a fixed 404 InvalidUriPathException. The function
 * checks the rest (functions/front-door.ts).
 */
export function albRoute(path: string): Operation | undefined {
  return ALB_PATH_PATTERNS.find(([, pattern]) => matchesPathPattern(pattern, path))?.[0];
}

export interface XksApi {
  readonly handlers: Readonly<Record<Operation, LambdaHandler>>;
  /** Logs a request answered before any handler, with its audit record, as every request has. */
  refused(error: XksError, request: Parameters<typeof logRefusal>[2]): void;
}

export function createXksApi(runtime: Runtime): XksApi {
  return {
    handlers: {
      GetHealthStatus: xksHandler(runtime, 'GetHealthStatus', getHealthStatus(runtime.config)),
      GetKeyMetadata: xksHandler(runtime, 'GetKeyMetadata', getKeyMetadata),
      Encrypt: xksHandler(runtime, 'Encrypt', encrypt),
      Decrypt: xksHandler(runtime, 'Decrypt', decrypt),
    },
    refused: (error, request) => logRefusal(runtime, error, request),
  };
}
