// The four XKS routes under `[/<path-prefix>]/kms/xks/v1` (spec: API operations).

export type Operation = 'GetHealthStatus' | 'GetKeyMetadata' | 'Encrypt' | 'Decrypt';

export const OPERATIONS: readonly Operation[] = ['GetHealthStatus', 'GetKeyMetadata', 'Encrypt', 'Decrypt'];

export interface Route {
  operation: Operation;
  /** Everything before `/kms/xks/v1`: '' or '/a/b'. */
  pathPrefix: string;
  /** The `{externalKeyId}` path segment, as sent; undefined for GetHealthStatus. */
  keyId: string | undefined;
}

const ROUTE = /^(.*)\/kms\/xks\/v1\/(?:(health)|keys\/([^/]+)\/(metadata|encrypt|decrypt))$/;
const OPERATION_OF_SUFFIX: Record<string, Operation> = {
  metadata: 'GetKeyMetadata',
  encrypt: 'Encrypt',
  decrypt: 'Decrypt',
};

/** The route a path names, or undefined when it names none (404 InvalidUriPathException). */
export function parseRoute(path: string): Route | undefined {
  const match = ROUTE.exec(path);
  if (match === null) return undefined;
  const [, pathPrefix = '', health, keyId, suffix] = match;
  if (health !== undefined) return { operation: 'GetHealthStatus', pathPrefix, keyId: undefined };
  const operation = OPERATION_OF_SUFFIX[suffix as string] as Operation;
  return { operation, pathPrefix, keyId };
}

/** The API Gateway resource of a route: `{keyId}` in place of the key id (event.resource). */
export function resourceOf(route: Route): string {
  const base = `${route.pathPrefix}/kms/xks/v1`;
  if (route.operation === 'GetHealthStatus') return `${base}/health`;
  const suffix = { GetKeyMetadata: 'metadata', Encrypt: 'encrypt', Decrypt: 'decrypt' }[route.operation];
  return `${base}/keys/{keyId}/${suffix}`;
}

/**
 * The path pattern of each route in the ALB's listener rules (infra/alb/), in their order: any
 * prefix, so that four rules serve any number of key stores; the function then checks the prefix
 * and the route itself. In a path pattern `*` matches any characters, `/` included.
 */
export const ALB_PATH_PATTERNS: ReadonlyArray<readonly [Operation, string]> = [
  ['GetHealthStatus', '*/kms/xks/v1/health'],
  ['GetKeyMetadata', '*/kms/xks/v1/keys/*/metadata'],
  ['Encrypt', '*/kms/xks/v1/keys/*/encrypt'],
  ['Decrypt', '*/kms/xks/v1/keys/*/decrypt'],
];

/** Whether an ALB path pattern matches a path: `*` any characters, `?` exactly one, case-sensitive. */
export function matchesPathPattern(pattern: string, path: string): boolean {
  const regex = pattern
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${regex}$`, 's').test(path);
}
