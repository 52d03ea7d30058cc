// API Gateway REST (payload 1.0) and ALB events, signed, for calling the Lambda handlers in-process.
import { randomUUID } from 'node:crypto';
import type { ALBEvent, APIGatewayProxyEvent, Context } from 'aws-lambda';
import { parseRoute, resourceOf } from '../../functions/routes.ts';
import { type Credential, smithySign } from './sign.ts';

export interface EventOptions {
  /** The API's resource path (event.path), e.g. /test/prefix/kms/xks/v1/health. */
  path: string;
  body: unknown;
  credential: Credential;
  method?: string;
  host?: string;
  /** API Gateway stage of an execute-api URL: in requestContext.path (what the client signed) only. */
  stage?: string;
  /** Base path of a custom domain mapping: in event.path and requestContext.path. */
  basePath?: string;
  /** Deliver the body Base64-encoded (binaryMediaTypes) or as a UTF-8 string. */
  base64?: boolean;
  /** Sign this path instead of the one the client would have used. */
  signedPath?: string;
  /** Only `headers` (no multiValueHeaders), as some test tools send. */
  singleValueHeaders?: boolean;
}

export async function signedEvent(options: EventOptions): Promise<APIGatewayProxyEvent> {
  const host = options.host ?? 'xks.example.com';
  const body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  const route = parseRoute(options.path);
  const resource = route === undefined ? options.path : resourceOf(route);
  const keyId = route?.keyId;
  const path = options.basePath ? `/${options.basePath}${options.path}` : options.path;
  const clientPath = options.stage ? `/${options.stage}${path}` : path;
  const signed = await smithySign({
    host,
    path: options.signedPath ?? clientPath,
    body,
    credential: options.credential,
  });
  const headers: Record<string, string> = { ...signed, 'Content-Type': 'application/json' };
  const base64 = options.base64 ?? false;
  return {
    resource,
    path,
    httpMethod: options.method ?? 'POST',
    headers,
    multiValueHeaders: options.singleValueHeaders
      ? (undefined as unknown as Record<string, string[]>)
      : Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]])),
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    // API Gateway decodes path parameters.
    pathParameters: keyId === undefined ? null : { keyId: decodeURIComponent(keyId) },
    stageVariables: null,
    body: base64 ? Buffer.from(body).toString('base64') : body,
    isBase64Encoded: base64,
    requestContext: {
      accountId: '123456789012',
      apiId: 'abcdef1234',
      authorizer: null,
      domainName: host,
      httpMethod: options.method ?? 'POST',
      path: clientPath,
      protocol: 'HTTP/1.1',
      requestId: randomUUID(),
      requestTimeEpoch: Date.now(),
      resourceId: 'r1',
      resourcePath: resource,
      stage: options.stage ?? '$default',
      identity: {
        accessKey: null,
        accountId: null,
        apiKey: null,
        apiKeyId: null,
        caller: null,
        clientCert: null,
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp: '10.0.0.1',
        user: null,
        userAgent: 'test',
        userArn: null,
      },
    },
  };
}

export interface AlbEventOptions {
  /** The path as the client sent it, which ALB passes on as it is. */
  path: string;
  body: unknown;
  credential: Credential;
  method?: string;
  host?: string;
  base64?: boolean;
  /** Sign this path instead of the one sent. */
  signedPath?: string;
  /** Only `headers`: a target group without multi-value headers. */
  singleValueHeaders?: boolean;
  /** More headers, after the signed ones (e.g. ALB's mTLS headers), each with all its values. */
  extraHeaders?: Record<string, string[]>;
}

/** An ALB event (a Lambda target group), signed; header names in lower case, as ALB gives them. */
export async function signedAlbEvent(options: AlbEventOptions): Promise<ALBEvent> {
  const host = options.host ?? 'xks.example.com';
  const body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  const signed = await smithySign({
    host,
    path: options.signedPath ?? options.path,
    body,
    credential: options.credential,
  });
  const headers: Record<string, string[]> = { 'content-type': ['application/json'] };
  for (const [name, value] of Object.entries(signed)) headers[name.toLowerCase()] = [value];
  headers['x-forwarded-for'] = ['10.0.0.1'];
  Object.assign(headers, options.extraHeaders);
  const base64 = options.base64 ?? false;
  return {
    requestContext: {
      elb: { targetGroupArn: 'arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/xks/1' },
    },
    httpMethod: options.method ?? 'POST',
    path: options.path,
    ...(options.singleValueHeaders
      ? {
          queryStringParameters: {},
          headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, v.at(-1)])),
        }
      : { multiValueQueryStringParameters: {}, multiValueHeaders: headers }),
    body: base64 ? Buffer.from(body).toString('base64') : body,
    isBase64Encoded: base64,
  };
}

export function lambdaContext(functionName = 'xks-test'): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:123456789012:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'test',
    getRemainingTimeInMillis: () => 3000,
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}
