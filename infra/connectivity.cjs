// How KMS reaches the API, one of two modes (spec: High level architecture):
//  - public: a Regional API on a custom domain with an ACM certificate, the execute-api endpoint
//    off, and optional mutual TLS (the handler then checks the client certificate's subject CN);
//  - vpc-endpoint-service: a private API reached through an execute-api interface endpoint, a
//    private custom domain equal to the endpoint service's private DNS name, and a Network Load
//    Balancer (targets: that endpoint's IPs) behind a VPC endpoint service that only KMS may use.
// Plus, in both, an interface endpoint for Secrets Manager when the subnets have no NAT.
'use strict';

const apiId = { Ref: 'XksRestApi' };
const sub = (text) => ({ 'Fn::Sub': text });

function publicEndpoint(p) {
  const mtls = p.public.mtls;
  return {
    restApi: { EndpointConfiguration: { Types: ['REGIONAL'] }, DisableExecuteApiEndpoint: true },
    resources: {
      XksDomainName: {
        Type: 'AWS::ApiGateway::DomainName',
        Properties: {
          DomainName: p.public.domainName,
          RegionalCertificateArn: p.public.certificateArn,
          EndpointConfiguration: { Types: ['REGIONAL'] },
          SecurityPolicy: 'TLS_1_2',
          ...(mtls
            ? {
                MutualTlsAuthentication: {
                  TruststoreUri: mtls.truststoreUri,
                  ...(mtls.truststoreVersion ? { TruststoreVersion: mtls.truststoreVersion } : {}),
                },
              }
            : {}),
        },
      },
      XksBasePathMapping: {
        Type: 'AWS::ApiGateway::BasePathMapping',
        DependsOn: ['XksStage'],
        Properties: { DomainName: { Ref: 'XksDomainName' }, RestApiId: apiId, Stage: p.stage },
      },
    },
    outputs: {
      XksProxyUriEndpoint: { Value: `https://${p.public.domainName}` },
      DnsAliasTarget: {
        Description: 'Point the domain (alias or CNAME) at this API Gateway regional name',
        Value: { 'Fn::GetAtt': ['XksDomainName', 'RegionalDomainName'] },
      },
      DnsAliasHostedZoneId: { Value: { 'Fn::GetAtt': ['XksDomainName', 'RegionalHostedZoneId'] } },
    },
  };
}

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

function vpcEndpointService(p) {
  const s = p.vpcEndpointService;
  const endpointRef = { Ref: 'XksExecuteApiEndpoint' };
  const invokeFromEndpoint = {
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Principal: '*',
        Action: 'execute-api:Invoke',
        Resource: 'execute-api:/*',
        Condition: { StringEquals: { 'aws:SourceVpce': endpointRef } },
      },
    ],
  };
  const targets = s.nlbSubnetIds.map((_, i) => ({
    Id: { 'Fn::GetAtt': ['XksEndpointIps', `Ip${i}`] },
    Port: 443,
  }));
  return {
    restApi: {
      EndpointConfiguration: { Types: ['PRIVATE'], VpcEndpointIds: [endpointRef] },
      // A private API needs a resource policy; Principal * keeps SigV4 checking in the handler.
      Policy: invokeFromEndpoint,
    },
    resources: {
      XksNlbSecurityGroup: {
        Type: 'AWS::EC2::SecurityGroup',
        Properties: {
          GroupDescription: 'XKS proxy NLB: HTTPS from the VPC endpoint service (AWS KMS)',
          VpcId: p.vpc.vpcId,
          SecurityGroupIngress: [{ IpProtocol: 'tcp', FromPort: 443, ToPort: 443, CidrIp: '0.0.0.0/0' }],
        },
      },
      XksExecuteApiEndpointSecurityGroup: {
        Type: 'AWS::EC2::SecurityGroup',
        Properties: {
          GroupDescription: 'XKS proxy execute-api endpoint: HTTPS from the NLB only',
          VpcId: p.vpc.vpcId,
          SecurityGroupIngress: [
            {
              IpProtocol: 'tcp',
              FromPort: 443,
              ToPort: 443,
              SourceSecurityGroupId: { Ref: 'XksNlbSecurityGroup' },
            },
          ],
        },
      },
      XksExecuteApiEndpoint: {
        Type: 'AWS::EC2::VPCEndpoint',
        Properties: {
          VpcEndpointType: 'Interface',
          ServiceName: sub('com.amazonaws.${AWS::Region}.execute-api'),
          VpcId: p.vpc.vpcId,
          SubnetIds: s.nlbSubnetIds,
          SecurityGroupIds: [{ Ref: 'XksExecuteApiEndpointSecurityGroup' }],
          // Left off so other execute-api traffic in the VPC is untouched; KMS arrives by the NLB.
          PrivateDnsEnabled: false,
          // No endpoint policy: a custom one makes API Gateway judge KMS's SigV4 header itself.
        },
      },
      XksDomainName: {
        Type: 'AWS::ApiGateway::DomainNameV2',
        Properties: {
          DomainName: s.privateDnsName,
          CertificateArn: s.certificateArn,
          EndpointConfiguration: { Types: ['PRIVATE'] },
          SecurityPolicy: 'TLS_1_2',
          Policy: invokeFromEndpoint,
        },
      },
      XksDomainAccess: {
        Type: 'AWS::ApiGateway::DomainNameAccessAssociation',
        Properties: {
          DomainNameArn: { 'Fn::GetAtt': ['XksDomainName', 'DomainNameArn'] },
          AccessAssociationSource: endpointRef,
          AccessAssociationSourceType: 'VPCE',
        },
      },
      XksBasePathMapping: {
        Type: 'AWS::ApiGateway::BasePathMappingV2',
        DependsOn: ['XksStage'],
        Properties: {
          DomainNameArn: { 'Fn::GetAtt': ['XksDomainName', 'DomainNameArn'] },
          RestApiId: apiId,
          Stage: p.stage,
        },
      },
      XksEndpointHelperRole: {
        Type: 'AWS::IAM::Role',
        Properties: {
          AssumeRolePolicyDocument: {
            Version: '2012-10-17',
            Statement: [
              { Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' },
            ],
          },
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
          Role: { 'Fn::GetAtt': ['XksEndpointHelperRole', 'Arn'] },
          Code: { ZipFile: HELPER_CODE },
        },
      },
      XksEndpointIps: {
        Type: 'Custom::EndpointIps',
        Properties: {
          ServiceToken: { 'Fn::GetAtt': ['XksEndpointHelper', 'Arn'] },
          NetworkInterfaceIds: { 'Fn::GetAtt': ['XksExecuteApiEndpoint', 'NetworkInterfaceIds'] },
        },
      },
      XksNlb: {
        Type: 'AWS::ElasticLoadBalancingV2::LoadBalancer',
        Properties: {
          Type: 'network',
          Scheme: 'internal',
          Subnets: s.nlbSubnetIds,
          SecurityGroups: [{ Ref: 'XksNlbSecurityGroup' }],
          LoadBalancerAttributes: [{ Key: 'load_balancing.cross_zone.enabled', Value: 'true' }],
        },
      },
      XksTargetGroup: {
        Type: 'AWS::ElasticLoadBalancingV2::TargetGroup',
        Properties: {
          Protocol: 'TCP',
          Port: 443,
          TargetType: 'ip',
          VpcId: p.vpc.vpcId,
          HealthCheckProtocol: 'TCP',
          Targets: targets,
        },
      },
      XksListener: {
        Type: 'AWS::ElasticLoadBalancingV2::Listener',
        Properties: {
          LoadBalancerArn: { Ref: 'XksNlb' },
          Protocol: 'TCP',
          Port: 443,
          DefaultActions: [{ Type: 'forward', TargetGroupArn: { Ref: 'XksTargetGroup' } }],
        },
      },
      XksEndpointService: {
        Type: 'AWS::EC2::VPCEndpointService',
        Properties: { NetworkLoadBalancerArns: [{ Ref: 'XksNlb' }], AcceptanceRequired: false },
      },
      XksEndpointServicePermissions: {
        Type: 'AWS::EC2::VPCEndpointServicePermissions',
        Properties: {
          ServiceId: { Ref: 'XksEndpointService' },
          // Only AWS KMS of this region may connect (spec: High level architecture).
          AllowedPrincipals: [sub('cks.kms.${AWS::Region}.amazonaws.com')],
        },
      },
      XksEndpointServiceDns: {
        Type: 'Custom::EndpointServicePrivateDns',
        Properties: {
          ServiceToken: { 'Fn::GetAtt': ['XksEndpointHelper', 'Arn'] },
          ServiceId: { Ref: 'XksEndpointService' },
          PrivateDnsName: s.privateDnsName,
        },
      },
    },
    outputs: {
      XksProxyUriEndpoint: { Value: `https://${s.privateDnsName}` },
      VpcEndpointServiceName: {
        Description: 'For KMS CreateCustomKeyStore (XksProxyVpcEndpointServiceName)',
        Value: sub('com.amazonaws.vpce.${AWS::Region}.${XksEndpointService}'),
      },
      PrivateDnsVerificationName: {
        Description: 'Create this TXT record in your DNS zone to verify the private DNS name',
        Value: { 'Fn::GetAtt': ['XksEndpointServiceDns', 'VerificationName'] },
      },
      PrivateDnsVerificationValue: {
        Value: { 'Fn::GetAtt': ['XksEndpointServiceDns', 'VerificationValue'] },
      },
    },
  };
}

function secretsManagerEndpoint(p) {
  if (!p.vpc.secretsManagerEndpoint) return {};
  return {
    XksSecretsManagerEndpointSecurityGroup: {
      Type: 'AWS::EC2::SecurityGroup',
      Properties: {
        GroupDescription: 'Secrets Manager endpoint: HTTPS from the XKS proxy functions',
        VpcId: p.vpc.vpcId,
        SecurityGroupIngress: p.vpc.securityGroupIds.map((id) => ({
          IpProtocol: 'tcp',
          FromPort: 443,
          ToPort: 443,
          SourceSecurityGroupId: id,
        })),
      },
    },
    XksSecretsManagerEndpoint: {
      Type: 'AWS::EC2::VPCEndpoint',
      Properties: {
        VpcEndpointType: 'Interface',
        ServiceName: sub('com.amazonaws.${AWS::Region}.secretsmanager'),
        VpcId: p.vpc.vpcId,
        SubnetIds: p.vpc.subnetIds,
        SecurityGroupIds: [{ Ref: 'XksSecretsManagerEndpointSecurityGroup' }],
        PrivateDnsEnabled: true,
      },
    },
  };
}

function connectivity(p) {
  const mode = p.connectivity === 'public' ? publicEndpoint(p) : vpcEndpointService(p);
  return { ...mode, resources: { ...mode.resources, ...secretsManagerEndpoint(p) } };
}

module.exports = { connectivity };
