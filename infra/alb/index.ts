// An Application Load Balancer as the front door (frontDoor: alb), billed by capacity units instead
// of per request (docs/benchmarks.md, cost): one Lambda target group per route function, four
// listener rules by route that serve any number of key stores, the listener's own fixed 404
// (InvalidUriPathException) for anything else, and access logs to S3. The functions check the key
// store prefix, the route and the method themselves (functions/front-door.ts).
//
// - vpc-endpoint-service: an internal ALB, the target of the endpoint service's NLB (target type
//   alb; ../endpoint-service.ts).
// - public: an internet-facing ALB on the custom domain, with mutual TLS in verify mode and an ELB
//   trust store when public.mtls is set; the function checks the subject CN that ALB passes on.
import { createHash } from 'node:crypto';
import { ERROR_STATUS } from '../../functions/errors.ts';
import { ALB_PATH_PATTERNS } from '../../functions/routes.ts';
import { type Fragment, getAtt, type Outputs, type Resource, type Resources, ref, sub } from '../cfn.ts';
import {
  deployHelper,
  endpointService,
  endpointServiceOutputs,
  networkLoadBalancer,
  nlbSecurityGroup,
  privateDnsName,
} from '../endpoint-service.ts';
import { type FunctionName, functionLogicalId, invokeTarget, type ParamsBehind } from '../params.ts';

type Params = ParamsBehind<'alb'>;

/**
 * TLS 1.3, and TLS 1.2 with ECDHE and AES-GCM only: it offers TLS_AES_256_GCM_SHA384 and
 * ECDHE-{RSA,ECDSA}-AES256-GCM-SHA384, which the spec lists (API content type).
 */
export const ALB_TLS_POLICY = 'ELBSecurityPolicy-TLS13-1-2-Res-2021-06';

/** The function behind each route's listener rule, in ALB_PATH_PATTERNS' order. */
const FUNCTION_OF = {
  GetHealthStatus: 'getHealthStatus',
  GetKeyMetadata: 'getKeyMetadata',
  Encrypt: 'encrypt',
  Decrypt: 'decrypt',
} as const satisfies Record<(typeof ALB_PATH_PATTERNS)[number][0], FunctionName>;

/** The answer to a path no listener rule matches: the spec's error, as the functions would give it. */
export const NOT_FOUND = {
  StatusCode: String(ERROR_STATUS.InvalidUriPathException),
  ContentType: 'application/json',
  MessageBody: JSON.stringify({
    errorName: 'InvalidUriPathException',
    errorMessage: 'No XKS API at this URI path',
  }),
} as const;

const capitalized = (name: string) => `${name.charAt(0).toUpperCase()}${name.slice(1)}`;
export const targetGroupLogicalId = (fn: FunctionName) => `XksAlbTargetGroup${capitalized(fn)}`;
const permissionLogicalId = (fn: FunctionName) =>
  `${functionLogicalId(fn).replace('LambdaFunction', '')}AlbPermission`;

/**
 * A target group's name (at most 32 characters), known before it exists: the functions' invoke
 * permissions name the target group's ARN, and the target group needs them in place to register
 * its function, so neither can wait for the other's ARN.
 */
export function targetGroupName(stage: string, fn: FunctionName): string {
  const short = fn.replace(/^get/, '').toLowerCase();
  const name = `xks-${stage}-${short}`;
  if (name.length <= 32 && /^[A-Za-z0-9-]+$/.test(stage)) return name;
  return `xks-${createHash('sha256').update(stage).digest('hex').slice(0, 12)}-${short}`;
}

export function alb(p: Params): Fragment {
  const resources: Resources = {
    ...albSecurityGroup(p),
    ...loadBalancer(p),
    ...listener(p),
    ...targets(p),
  };
  if (p.connectivity === 'public') {
    return { Resources: resources, Outputs: publicOutputs(p.public.domainName) };
  }
  const nlbTargets = {
    TargetType: 'alb' as const,
    Targets: [{ Id: ref('XksAlb'), Port: 443 as const }] as [{ Id: ReturnType<typeof ref>; Port: 443 }],
    listener: 'XksAlbListener',
    healthCheck: { path: '/', status: NOT_FOUND.StatusCode },
  };
  return {
    Resources: {
      ...resources,
      ...nlbSecurityGroup(p),
      ...deployHelper(),
      ...networkLoadBalancer(p, nlbTargets),
      ...endpointService(),
      ...privateDnsName(p),
    },
    Outputs: endpointServiceOutputs(p),
  };
}

/** HTTPS from the NLB (vpc-endpoint-service) or from anywhere (public). The ALB invokes Lambda directly. */
function albSecurityGroup(p: Params): Resources {
  const from =
    p.connectivity === 'public'
      ? { CidrIp: '0.0.0.0/0', description: 'HTTPS from anywhere (KMS over the internet)' }
      : { SourceSecurityGroupId: ref('XksNlbSecurityGroup'), description: 'HTTPS from the NLB only' };
  const { description, ...source } = from;
  return {
    XksAlbSecurityGroup: {
      Type: 'AWS::EC2::SecurityGroup',
      Properties: {
        GroupDescription: `XKS proxy ALB: ${description}`,
        VpcId: p.vpc.vpcId,
        SecurityGroupIngress: [{ IpProtocol: 'tcp', FromPort: 443, ToPort: 443, ...source }],
      },
    },
  };
}

function loadBalancer(p: Params): Record<string, Resource<'AWS::ElasticLoadBalancingV2::LoadBalancer'>> {
  const isPublic = p.connectivity === 'public';
  const subnets = p.alb.subnetIds ?? (isPublic ? [] : p.vpcEndpointService.nlbSubnetIds);
  const logs = (kind: 'access_logs' | 'connection_logs') => [
    { Key: `${kind}.s3.enabled`, Value: 'true' },
    { Key: `${kind}.s3.bucket`, Value: p.alb.accessLogBucket },
    ...(p.alb.accessLogPrefix === undefined
      ? []
      : [{ Key: `${kind}.s3.prefix`, Value: p.alb.accessLogPrefix }]),
  ];
  return {
    XksAlb: {
      Type: 'AWS::ElasticLoadBalancingV2::LoadBalancer',
      Properties: {
        Type: 'application',
        Scheme: isPublic ? 'internet-facing' : 'internal',
        Subnets: subnets,
        SecurityGroups: [ref('XksAlbSecurityGroup')],
        LoadBalancerAttributes: [
          // Every request, without bodies (ALB's access logs have none).
          ...logs('access_logs'),
          // With mutual TLS, the handshakes too: refused certificates never reach a function.
          ...(isPublic && p.public.mtls ? logs('connection_logs') : []),
          // Headers whose names are not valid HTTP are dropped, not passed to the functions.
          { Key: 'routing.http.drop_invalid_header_fields.enabled', Value: 'true' },
        ],
      },
    },
  };
}

/** The HTTPS listener: the stage's certificate, the spec's TLS, mutual TLS, the fixed 404. */
function listener(p: Params): Resources {
  const isPublic = p.connectivity === 'public';
  const mtls = isPublic ? p.public.mtls : undefined;
  const certificateArn = isPublic ? p.public.certificateArn : p.vpcEndpointService.certificateArn;
  const resources: Resources = {
    XksAlbListener: {
      Type: 'AWS::ElasticLoadBalancingV2::Listener',
      Properties: {
        LoadBalancerArn: ref('XksAlb'),
        Protocol: 'HTTPS',
        Port: 443,
        Certificates: [{ CertificateArn: certificateArn }],
        SslPolicy: ALB_TLS_POLICY,
        ...(mtls
          ? {
              // Verify: the handshake fails without a certificate that chains to the trust store.
              MutualAuthentication: {
                Mode: 'verify',
                TrustStoreArn: ref('XksAlbTrustStore'),
                IgnoreClientCertificateExpiry: false,
              },
            }
          : {}),
        DefaultActions: [{ Type: 'fixed-response', FixedResponseConfig: NOT_FOUND }],
      },
    },
  };
  if (mtls) {
    const [, bucket = '', key = ''] = /^s3:\/\/([^/]+)\/(.+)$/.exec(mtls.truststoreUri) ?? [];
    resources.XksAlbTrustStore = {
      Type: 'AWS::ElasticLoadBalancingV2::TrustStore',
      Properties: {
        Name: `xks-${p.stage}`.slice(0, 32),
        CaCertificatesBundleS3Bucket: bucket,
        CaCertificatesBundleS3Key: key,
        ...(mtls.truststoreVersion ? { CaCertificatesBundleS3ObjectVersion: mtls.truststoreVersion } : {}),
      },
    };
  }
  return resources;
}

/**
 * Per route: a listener rule matching its path under any prefix (four rules for any number of key
 * stores, far from ALB's 100 rules per listener; one condition of one value each, of the five a rule
 * may have), the route function's target group (every value of every header passed on: the
 * functions need them all), and the function's permission, which lets that target group and nothing
 * else invoke it.
 */
function targets(p: Params): Resources {
  const resources: Resources = {};
  for (const [i, [operation, pattern]] of ALB_PATH_PATTERNS.entries()) {
    const fn = FUNCTION_OF[operation];
    const name = targetGroupName(p.stage, fn);
    resources[permissionLogicalId(fn)] = {
      Type: 'AWS::Lambda::Permission',
      Properties: {
        Action: 'lambda:InvokeFunction',
        FunctionName: invokeTarget(p, fn),
        Principal: 'elasticloadbalancing.amazonaws.com',
        SourceArn: sub(
          `arn:\${AWS::Partition}:elasticloadbalancing:\${AWS::Region}:\${AWS::AccountId}:targetgroup/${name}/*`,
        ),
      },
    };
    resources[targetGroupLogicalId(fn)] = {
      Type: 'AWS::ElasticLoadBalancingV2::TargetGroup',
      DependsOn: [permissionLogicalId(fn)],
      Properties: {
        Name: name,
        TargetType: 'lambda',
        // A health check is an invocation; KMS's GetHealthStatus is the deep one.
        HealthCheckEnabled: false,
        TargetGroupAttributes: [{ Key: 'lambda.multi_value_headers.enabled', Value: 'true' }],
        Targets: [{ Id: invokeTarget(p, fn) }],
      },
    };
    resources[`XksAlbRule${capitalized(fn)}`] = {
      Type: 'AWS::ElasticLoadBalancingV2::ListenerRule',
      Properties: {
        ListenerArn: ref('XksAlbListener'),
        Priority: i + 1,
        Conditions: [{ Field: 'path-pattern', PathPatternConfig: { Values: [pattern] } }],
        Actions: [{ Type: 'forward', TargetGroupArn: ref(targetGroupLogicalId(fn)) }],
      },
    };
  }
  return resources;
}

function publicOutputs(domainName: string): Outputs {
  return {
    XksProxyUriEndpoint: { Value: `https://${domainName}` },
    DnsAliasTarget: {
      Description: 'Point the domain (alias or CNAME) at this load balancer',
      Value: getAtt('XksAlb', 'DNSName'),
    },
    DnsAliasHostedZoneId: { Value: getAtt('XksAlb', 'CanonicalHostedZoneID') },
  };
}
