// What the functions need in their own VPC: an interface endpoint for Secrets Manager, when their
// subnets have no NAT (vpc.secretsManagerEndpoint).
import { type Resources, ref, sub } from './cfn.ts';
import type { Params } from './params.ts';

export function secretsManagerEndpoint(p: Params): Resources {
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
        SecurityGroupIds: [ref('XksSecretsManagerEndpointSecurityGroup')],
        PrivateDnsEnabled: true,
      },
    },
  };
}
