// The VPC endpoint service KMS connects to (spec: High level architecture): a Network Load
// Balancer in the stage's subnets, behind a VPC endpoint service that only KMS of this region may
// use, with the proxy's private DNS name. The front door decides what the NLB forwards to
// (API Gateway: the IPs of its execute-api endpoint, apigateway/private.ts; an ALB: the ALB itself,
// alb/index.ts).
import { assumedBy, getAtt, type Outputs, type Resource, type Resources, ref, type Str, sub } from './cfn.ts';
import type { ParamsOf } from './params.ts';

type Params = ParamsOf<'vpc-endpoint-service'>;

/** Custom resources: the endpoint's ENI IPs (NLB targets) and the service's private DNS name. */
const HELPER_CODE = `
const { EC2Client, DescribeNetworkInterfacesCommand, ModifyVpcEndpointServiceConfigurationCommand,
  DescribeVpcEndpointServiceConfigurationsCommand } = require('@aws-sdk/client-ec2');
const https = require('node:https');
const ec2 = new EC2Client({});
function reply(event, status, data, reason) {
  const body = JSON.stringify({ Status: status, Reason: reason || 'see CloudWatch Logs',
    PhysicalResourceId: event.PhysicalResourceId || event.LogicalResourceId,
    StackId: event.StackId, RequestId: event.RequestId, LogicalResourceId: event.LogicalResourceId, Data: data });
  return new Promise((resolve) => {
    const req = https.request(event.ResponseURL, { method: 'PUT', headers: { 'content-length': Buffer.byteLength(body) } }, resolve);
    req.on('error', resolve); req.end(body);
  });
}
exports.handler = async (event) => {
  try {
    const p = event.ResourceProperties;
    if (event.RequestType === 'Delete') return reply(event, 'SUCCESS', {});
    if (event.ResourceType === 'Custom::EndpointIps') {
      const out = await ec2.send(new DescribeNetworkInterfacesCommand({ NetworkInterfaceIds: p.NetworkInterfaceIds }));
      const ips = out.NetworkInterfaces.map((n) => n.PrivateIpAddress).sort();
      return reply(event, 'SUCCESS', Object.fromEntries(ips.map((ip, i) => ['Ip' + i, ip])));
    }
    await ec2.send(new ModifyVpcEndpointServiceConfigurationCommand({ ServiceId: p.ServiceId, PrivateDnsName: p.PrivateDnsName }));
    const d = await ec2.send(new DescribeVpcEndpointServiceConfigurationsCommand({ ServiceIds: [p.ServiceId] }));
    const c = d.ServiceConfigurations[0].PrivateDnsNameConfiguration || {};
    return reply(event, 'SUCCESS', { VerificationName: c.Name || '', VerificationValue: c.Value || '' });
  } catch (err) {
    console.error(err);
    return reply(event, 'FAILED', {}, String(err.message).slice(0, 200));
  }
};
`;

/** The NLB's security group: HTTPS from anywhere, i.e. from the endpoint service (KMS). */
export function nlbSecurityGroup(p: Params): Resources {
  return {
    XksNlbSecurityGroup: {
      Type: 'AWS::EC2::SecurityGroup',
      Properties: {
        GroupDescription: 'XKS proxy NLB: HTTPS from the VPC endpoint service (AWS KMS)',
        VpcId: p.vpc.vpcId,
        SecurityGroupIngress: [{ IpProtocol: 'tcp', FromPort: 443, ToPort: 443, CidrIp: '0.0.0.0/0' }],
      },
    },
  };
}

/** The Lambda function behind the custom resources (HELPER_CODE), and its role. */
export function deployHelper(): Resources {
  return {
    XksEndpointHelperRole: {
      Type: 'AWS::IAM::Role',
      Properties: {
        AssumeRolePolicyDocument: assumedBy('lambda.amazonaws.com'),
        Policies: [
          {
            PolicyName: 'xks-endpoint-helper',
            PolicyDocument: {
              Version: '2012-10-17',
              Statement: [
                {
                  // Describe* has no resource-level permissions.
                  Effect: 'Allow',
                  Action: ['ec2:DescribeNetworkInterfaces', 'ec2:DescribeVpcEndpointServiceConfigurations'],
                  Resource: '*',
                },
                {
                  Effect: 'Allow',
                  Action: 'ec2:ModifyVpcEndpointServiceConfiguration',
                  Resource: sub(
                    'arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:vpc-endpoint-service/${XksEndpointService}',
                  ),
                },
                {
                  Effect: 'Allow',
                  Action: ['logs:CreateLogGroup', 'logs:CreateLogStream', 'logs:PutLogEvents'],
                  Resource: sub(
                    'arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/*',
                  ),
                },
              ],
            },
          },
        ],
      },
    },
    XksEndpointHelper: {
      Type: 'AWS::Lambda::Function',
      Properties: {
        Description: 'XKS proxy deploy helper: endpoint IPs and private DNS name (custom resources)',
        Runtime: 'nodejs22.x',
        Handler: 'index.handler',
        Timeout: 60,
        Role: getAtt('XksEndpointHelperRole', 'Arn'),
        Code: { ZipFile: HELPER_CODE },
      },
    },
  };
}

/** What the NLB forwards KMS's connections to (TCP 443), chosen by the front door. */
export type NlbTargets =
  | { TargetType: 'ip'; Targets: Array<{ Id: Str; Port: number }> }
  | {
      /** An ALB, whose HTTPS listener on 443 must exist before it is registered. */
      TargetType: 'alb';
      Targets: [{ Id: Str; Port: 443 }];
      listener: string;
      /** A path the ALB answers itself, and its status: the NLB's health check over HTTPS. */
      healthCheck: { path: string; status: string };
    };

/** The NLB in the endpoint service's subnets, its one TCP 443 listener and target group. */
export function networkLoadBalancer(p: Params, targets: NlbTargets): Resources {
  return {
    XksNlb: {
      Type: 'AWS::ElasticLoadBalancingV2::LoadBalancer',
      Properties: {
        Type: 'network',
        Scheme: 'internal',
        Subnets: p.vpcEndpointService.nlbSubnetIds,
        SecurityGroups: [ref('XksNlbSecurityGroup')],
        LoadBalancerAttributes: [{ Key: 'load_balancing.cross_zone.enabled', Value: 'true' }],
      },
    },
    XksTargetGroup:
      targets.TargetType === 'ip'
        ? {
            Type: 'AWS::ElasticLoadBalancingV2::TargetGroup',
            Properties: {
              Protocol: 'TCP',
              Port: 443,
              TargetType: 'ip',
              VpcId: p.vpc.vpcId,
              HealthCheckProtocol: 'TCP',
              Targets: targets.Targets,
            },
          }
        : {
            Type: 'AWS::ElasticLoadBalancingV2::TargetGroup',
            DependsOn: [targets.listener],
            Properties: {
              Protocol: 'TCP',
              Port: 443,
              TargetType: 'alb',
              VpcId: p.vpc.vpcId,
              // An ALB target is checked over HTTP(S), on a path its listener answers itself:
              // the ALB is up, and no function is invoked.
              HealthCheckProtocol: 'HTTPS',
              HealthCheckPath: targets.healthCheck.path,
              Matcher: { HttpCode: targets.healthCheck.status },
              Targets: targets.Targets,
            },
          },
    XksListener: {
      Type: 'AWS::ElasticLoadBalancingV2::Listener',
      Properties: {
        LoadBalancerArn: ref('XksNlb'),
        Protocol: 'TCP',
        Port: 443,
        DefaultActions: [{ Type: 'forward', TargetGroupArn: ref('XksTargetGroup') }],
      },
    },
  };
}

/** The endpoint service over the NLB, and who may connect to it: AWS KMS of this region only. */
export function endpointService(): Resources {
  return {
    XksEndpointService: {
      Type: 'AWS::EC2::VPCEndpointService',
      Properties: { NetworkLoadBalancerArns: [ref('XksNlb')], AcceptanceRequired: false },
    },
    XksEndpointServicePermissions: {
      Type: 'AWS::EC2::VPCEndpointServicePermissions',
      Properties: {
        ServiceId: ref('XksEndpointService'),
        // Only AWS KMS of this region may connect (spec: High level architecture).
        AllowedPrincipals: [sub('cks.kms.${AWS::Region}.amazonaws.com')],
      },
    },
  };
}

/**
 * The service's private DNS name (the proxy's domain name, which KMS connects to), set by the deploy
 * helper: CloudFormation's VPCEndpointService cannot. Its verification record is an output.
 */
export function privateDnsName(p: Params): Record<string, Resource<'Custom::EndpointServicePrivateDns'>> {
  return {
    XksEndpointServiceDns: {
      Type: 'Custom::EndpointServicePrivateDns',
      Properties: {
        ServiceToken: getAtt('XksEndpointHelper', 'Arn'),
        ServiceId: ref('XksEndpointService'),
        PrivateDnsName: p.vpcEndpointService.privateDnsName,
      },
    },
  };
}

/** What KMS's CreateCustomKeyStore and the DNS zone need from the endpoint service. */
export function endpointServiceOutputs(p: Params): Outputs {
  return {
    XksProxyUriEndpoint: { Value: `https://${p.vpcEndpointService.privateDnsName}` },
    VpcEndpointServiceName: {
      Description: 'For KMS CreateCustomKeyStore (XksProxyVpcEndpointServiceName)',
      Value: sub('com.amazonaws.vpce.${AWS::Region}.${XksEndpointService}'),
    },
    PrivateDnsVerificationName: {
      Description: 'Create this TXT record in your DNS zone to verify the private DNS name',
      Value: getAtt('XksEndpointServiceDns', 'VerificationName'),
    },
    PrivateDnsVerificationValue: {
      Value: getAtt('XksEndpointServiceDns', 'VerificationValue'),
    },
  };
}
