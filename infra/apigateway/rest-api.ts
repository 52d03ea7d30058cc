// The REST API in front of the four handlers: one resource tree per key store prefix, POST to the
// route's Lambda (through its provisioned-concurrency alias when there is one), GET answering 405,
// gateway responses as XKS JSON errors, a stage with throttling and JSON access logs without bodies.
import { createHash } from 'node:crypto';
import {
  assumedBy,
  type GetAtt,
  getAtt,
  type MethodSetting,
  type Ref,
  type Resource,
  type Resources,
  type RestApiEndpoint,
  ref,
  type Str,
  sub,
} from '../cfn.ts';
import { FUNCTIONS, type FunctionName, functionLogicalId, invokeTarget, type Params } from '../params.ts';

export const ROUTES: Array<{ fn: FunctionName; path: string }> = [
  { fn: 'getHealthStatus', path: 'health' },
  { fn: 'getKeyMetadata', path: 'keys/{keyId}/metadata' },
  { fn: 'encrypt', path: 'keys/{keyId}/encrypt' },
  { fn: 'decrypt', path: 'keys/{keyId}/decrypt' },
];

const hash = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 10);
const apiId = ref('XksRestApi');

/** What API Gateway itself answers, rewritten to the spec's error bodies (spec: Error codes). */
export const GATEWAY_RESPONSES: Array<
  [type: string, status: string, errorName: string, errorMessage: string]
> = [
  ['MISSING_AUTHENTICATION_TOKEN', '404', 'InvalidUriPathException', 'No XKS API at this URI path'],
  ['RESOURCE_NOT_FOUND', '404', 'InvalidUriPathException', 'No XKS API at this URI path'],
  ['THROTTLED', '429', 'ThrottlingException', 'The request rate is too high'],
  ['QUOTA_EXCEEDED', '429', 'ThrottlingException', 'The request quota is exceeded'],
  ['ACCESS_DENIED', '403', 'AccessDeniedException', 'Access denied'],
  ['REQUEST_TOO_LARGE', '501', 'UnsupportedOperationException', 'The request is too large'],
  ['INTEGRATION_TIMEOUT', '503', 'DependencyTimeoutException', 'The proxy timed out'],
  ['INTEGRATION_FAILURE', '500', 'InternalException', 'Internal error'],
  // Every other 4xx and 5xx API Gateway answers: the status of the errorName (functions/errors.ts),
  // never a ValidationException with a status other than 400.
  ['DEFAULT_4XX', '400', 'ValidationException', 'The request is invalid'],
  ['DEFAULT_5XX', '500', 'InternalException', 'Internal error'],
];

/** Access log fields: who, what, how long; never a body (bodies carry plaintext). */
export const ACCESS_LOG_FORMAT = JSON.stringify({
  requestId: '$context.requestId',
  ip: '$context.identity.sourceIp',
  requestTime: '$context.requestTime',
  httpMethod: '$context.httpMethod',
  path: '$context.path',
  resourcePath: '$context.resourcePath',
  status: '$context.status',
  protocol: '$context.protocol',
  responseLength: '$context.responseLength',
  responseLatency: '$context.responseLatency',
  integrationLatency: '$context.integrationLatency',
  errorMessage: '$context.error.message',
  domainName: '$context.domainName',
  clientCertSubject: '$context.identity.clientCert.subjectDN',
  vpceId: '$context.identity.vpceId',
});

/**
 * A key store's quota (keystores[].throttle) as method throttling on each of its POST routes:
 * API Gateway has no limit shared by several methods short of usage plans with API keys.
 */
function keystoreQuotas(p: Params): MethodSetting[] {
  return p.keystores.flatMap(({ pathPrefix, throttle }) =>
    throttle === undefined
      ? []
      : ROUTES.map((route) => ({
          // Method settings name a resource path with its slashes written as ~1, after a leading /.
          ResourcePath: `/${`${pathPrefix}/kms/xks/v1/${route.path}`.replaceAll('/', '~1')}`,
          HttpMethod: 'POST',
          DataTraceEnabled: false,
          LoggingLevel: 'OFF',
          MetricsEnabled: true,
          ThrottlingRateLimit: throttle.rateLimit,
          ThrottlingBurstLimit: throttle.burstLimit,
        })),
  );
}

/**
 * The role API Gateway writes CloudWatch Logs with, set for the whole region (AWS::ApiGateway::Account,
 * one per region, shared by every API there): without it a stage with access logs fails to create.
 * Both retained when the stack goes, so the region's other APIs keep their logs.
 */
function cloudWatchRole(): Resources {
  const retain = { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' } as const;
  return {
    XksApiGatewayCloudWatchRole: {
      Type: 'AWS::IAM::Role',
      ...retain,
      Properties: {
        Description: 'API Gateway: CloudWatch Logs for every REST API of this region',
        AssumeRolePolicyDocument: assumedBy('apigateway.amazonaws.com'),
        ManagedPolicyArns: [
          sub('arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs'),
        ],
      },
    },
    XksApiGatewayAccount: {
      Type: 'AWS::ApiGateway::Account',
      ...retain,
      Properties: { CloudWatchRoleArn: getAtt('XksApiGatewayCloudWatchRole', 'Arn') },
    },
  };
}

/** What a Deployment snapshots: the API, its resources and methods, and its gateway responses. */
const SNAPSHOT_TYPES = new Set<string>([
  'AWS::ApiGateway::RestApi',
  'AWS::ApiGateway::Resource',
  'AWS::ApiGateway::Method',
  'AWS::ApiGateway::GatewayResponse',
]);

/**
 * The Deployment of the API in `resources`. A stage serves the snapshot its Deployment took, so a
 * change to anything in it (a method, a gateway response, the resource policy, the binary media
 * types) needs a new Deployment: its logical id carries the hash of the whole snapshot.
 */
export function deploymentOf(resources: Resources): [id: string, Resource<'AWS::ApiGateway::Deployment'>] {
  const snapshot = Object.entries(resources)
    .filter(([, resource]) => SNAPSHOT_TYPES.has(resource.Type))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const text = JSON.stringify(snapshot);
  return [
    `XksDeployment${hash(text)}`,
    {
      Type: 'AWS::ApiGateway::Deployment',
      // Created after all of it (the API itself is referenced already).
      DependsOn: snapshot
        .filter(([, resource]) => resource.Type !== 'AWS::ApiGateway::RestApi')
        .map(([id]) => id),
      Properties: { RestApiId: apiId, Description: 'XKS proxy' },
    },
  ];
}

/**
 * The REST API of a stage: its routes, the functions' permissions, the gateway responses, the
 * Deployment of all that, and the stage serving it. `endpoint`: how KMS reaches it (public.ts,
 * private.ts).
 */
export function restApi(p: Params, endpoint: RestApiEndpoint): Resources {
  const api: Resources = {
    ...routes(p),
    ...invokePermissions(p),
    ...gatewayResponses(),
    XksRestApi: {
      Type: 'AWS::ApiGateway::RestApi',
      Properties: {
        Name: `xks-proxy-${p.stage}`,
        Description: 'AWS KMS external key store proxy (XKS API v1)',
        // Bodies reach the Lambda as the exact bytes received: the SigV4 hash is over those.
        BinaryMediaTypes: ['*/*'],
        ...endpoint,
      },
    },
  };
  const [deploymentId, deployment] = deploymentOf(api);
  return {
    ...api,
    [deploymentId]: deployment,
    XksApiAccessLogs: {
      Type: 'AWS::Logs::LogGroup',
      Properties: {
        LogGroupName: `/aws/apigateway/xks-proxy-${p.stage}`,
        RetentionInDays: p.logRetentionInDays,
      },
    },
    ...(p.createApiGatewayCloudWatchRole ? cloudWatchRole() : {}),
    XksStage: stage(p, deploymentId),
  };
}

/** Each key store's routes: the resource tree of their paths, POST to the function, GET answering 405. */
function routes(p: Params): Resources {
  const resources: Resources = {};
  const nodes = new Map<string, string>(); // resource path -> logical id
  /** The resource of a path, created with the ones above it when new. */
  const resourceFor = (segments: string[]): Str => {
    const part = segments.at(-1);
    if (part === undefined) return getAtt('XksRestApi', 'RootResourceId');
    const path = segments.join('/');
    let id = nodes.get(path);
    if (id === undefined) {
      id = `XksResource${hash(path)}`;
      nodes.set(path, id);
      resources[id] = {
        Type: 'AWS::ApiGateway::Resource',
        Properties: { RestApiId: apiId, ParentId: resourceFor(segments.slice(0, -1)), PathPart: part },
      };
    }
    return ref(id);
  };

  for (const ks of p.keystores) {
    for (const route of ROUTES) {
      const path = `${ks.pathPrefix}/kms/xks/v1/${route.path}`;
      const resource = resourceFor(path.split('/').filter(Boolean));
      resources[`XksMethodPost${hash(path)}`] = post(resource, invokeTarget(p, route.fn));
      resources[`XksMethodGet${hash(path)}`] = methodNotAllowed(resource);
    }
  }
  return resources;
}

/** POST to the route's function, event and answer as they are (Lambda proxy integration). */
function post(resource: Str, fn: Ref | GetAtt): Resource<'AWS::ApiGateway::Method'> {
  return {
    Type: 'AWS::ApiGateway::Method',
    Properties: {
      RestApiId: apiId,
      ResourceId: resource,
      HttpMethod: 'POST',
      AuthorizationType: 'NONE', // the handler verifies SigV4: KMS signs for kms-xks-proxy, not IAM
      Integration: {
        Type: 'AWS_PROXY',
        IntegrationHttpMethod: 'POST',
        Uri: {
          'Fn::Sub': [
            'arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Target}/invocations',
            { Target: fn },
          ],
        },
      },
    },
  };
}

/** GET MUST answer 405 (spec: API operations); a mock integration, no Lambda invocation. */
function methodNotAllowed(resource: Str): Resource<'AWS::ApiGateway::Method'> {
  return {
    Type: 'AWS::ApiGateway::Method',
    Properties: {
      RestApiId: apiId,
      ResourceId: resource,
      HttpMethod: 'GET',
      AuthorizationType: 'NONE',
      Integration: {
        Type: 'MOCK',
        RequestTemplates: { 'application/json': '{"statusCode": 405}' },
        IntegrationResponses: [
          {
            StatusCode: '405',
            ResponseParameters: { 'method.response.header.Allow': "'POST'" },
            ResponseTemplates: {
              'application/json': '{"errorName":"MethodNotAllowed","errorMessage":"XKS APIs take POST only"}',
            },
          },
        ],
      },
      MethodResponses: [{ StatusCode: '405', ResponseParameters: { 'method.response.header.Allow': true } }],
    },
  };
}

/** API Gateway may invoke each function (its alias), for POST on any path of this API. */
function invokePermissions(p: Params): Resources {
  return Object.fromEntries(
    FUNCTIONS.map((fn): [string, Resource<'AWS::Lambda::Permission'>] => [
      `${functionLogicalId(fn).replace('LambdaFunction', '')}ApiPermission`,
      {
        Type: 'AWS::Lambda::Permission',
        Properties: {
          Action: 'lambda:InvokeFunction',
          FunctionName: invokeTarget(p, fn),
          Principal: 'apigateway.amazonaws.com',
          SourceArn: sub(
            'arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${XksRestApi}/*/POST/*',
          ),
        },
      },
    ]),
  );
}

function gatewayResponses(): Resources {
  return Object.fromEntries(
    GATEWAY_RESPONSES.map(([type, status, errorName, errorMessage]): [string, Resource] => [
      `XksGatewayResponse${type.replace(/_/g, '')}`,
      {
        Type: 'AWS::ApiGateway::GatewayResponse',
        Properties: {
          RestApiId: apiId,
          ResponseType: type,
          StatusCode: status,
          ResponseParameters: { 'gatewayresponse.header.Content-Type': "'application/json'" },
          ResponseTemplates: { 'application/json': JSON.stringify({ errorName, errorMessage }) },
        },
      },
    ]),
  );
}

/** The stage serving `deploymentId`: throttling, access logs, no data tracing. */
function stage(p: Params, deploymentId: string): Resource<'AWS::ApiGateway::Stage'> {
  return {
    Type: 'AWS::ApiGateway::Stage',
    // Access logs need the region's API Gateway CloudWatch role in place before the stage.
    ...(p.createApiGatewayCloudWatchRole ? { DependsOn: ['XksApiGatewayAccount'] } : {}),
    Properties: {
      RestApiId: apiId,
      DeploymentId: ref(deploymentId),
      StageName: p.stage,
      TracingEnabled: false,
      AccessLogSetting: { DestinationArn: getAtt('XksApiAccessLogs', 'Arn'), Format: ACCESS_LOG_FORMAT },
      MethodSettings: [
        ...keystoreQuotas(p),
        {
          ResourcePath: '/*',
          HttpMethod: '*',
          // Never: execution data tracing logs request and response bodies, i.e. plaintext.
          DataTraceEnabled: false,
          LoggingLevel: 'OFF',
          MetricsEnabled: true,
          ThrottlingRateLimit: p.throttling.rateLimit,
          ThrottlingBurstLimit: p.throttling.burstLimit,
        },
      ],
    },
  };
}
