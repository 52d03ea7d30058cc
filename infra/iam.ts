// One least-privilege role per function: its own log group, the secrets it reads (by ARN), and
// the network interfaces Lambda needs in the VPC. `*` only where AWS allows no resource at all.
import { assumedBy, type Resource, type Statement, sub } from './cfn.ts';
import { FUNCTIONS, type Params, readPermissions, roleLogicalId } from './params.ts';

export function roles(p: Params, service: string): Record<string, Resource<'AWS::IAM::Role'>> {
  const shared = [...proxyReads(p), ...vpcNetworking(p), ...secretsKey(p)];
  return Object.fromEntries(
    FUNCTIONS.map((fn) => [
      roleLogicalId(fn),
      {
        Type: 'AWS::IAM::Role',
        Properties: {
          Description: `XKS proxy ${fn} (${p.stage})`,
          AssumeRolePolicyDocument: assumedBy('lambda.amazonaws.com'),
          Policies: [
            {
              PolicyName: `xks-${fn}`,
              PolicyDocument: {
                Version: '2012-10-17',
                Statement: [ownLogGroup(`${service}-${p.stage}-${fn}`), ...shared],
              },
            },
          ],
        },
      },
    ]),
  );
}

function ownLogGroup(functionName: string): Statement {
  return {
    Sid: 'OwnLogGroup',
    Effect: 'Allow',
    Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
    Resource: sub(
      `arn:\${AWS::Partition}:logs:\${AWS::Region}:\${AWS::AccountId}:log-group:/aws/lambda/${functionName}:*`,
    ),
  };
}

/** Every secret (and parameter) the proxy configuration names, whichever setting names it. */
function proxyReads(p: Params): Statement[] {
  return readPermissions(p.proxyConfig).map(({ action, resources }) => ({
    Sid: `ProxyReads${action.replace(/:.*/, '').replace(/^./, (c) => c.toUpperCase())}`,
    Effect: 'Allow',
    Action: action,
    Resource: resources,
  }));
}

/** Lambda's VPC networking: the functions' network interfaces in their subnets and security groups. */
function vpcNetworking(p: Params): Statement[] {
  const arn = (resource: string) =>
    sub(`arn:\${AWS::Partition}:ec2:\${AWS::Region}:\${AWS::AccountId}:${resource}`);
  return [
    {
      // Describe* has no resource-level permissions.
      Sid: 'VpcNetworkInterfacesDescribe',
      Effect: 'Allow',
      Action: ['ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets', 'ec2:DescribeSecurityGroups'],
      Resource: '*',
    },
    {
      Sid: 'VpcNetworkInterfaces',
      Effect: 'Allow',
      Action: [
        'ec2:CreateNetworkInterface',
        'ec2:DeleteNetworkInterface',
        'ec2:AssignPrivateIpAddresses',
        'ec2:UnassignPrivateIpAddresses',
      ],
      Resource: [
        arn('network-interface/*'),
        ...p.vpc.subnetIds.map((id) => arn(`subnet/${id}`)),
        ...p.vpc.securityGroupIds.map((id) => arn(`security-group/${id}`)),
      ],
    },
  ];
}

/** The secrets' own KMS key (secretsKmsKeyArn), through Secrets Manager only. */
function secretsKey(p: Params): Statement[] {
  if (!p.secretsKmsKeyArn) return [];
  return [
    {
      Sid: 'SecretsKey',
      Effect: 'Allow',
      Action: 'kms:Decrypt',
      Resource: p.secretsKmsKeyArn,
      Condition: { StringEquals: { 'kms:ViaService': sub('secretsmanager.${AWS::Region}.amazonaws.com') } },
    },
  ];
}
