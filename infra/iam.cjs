// One least-privilege role per function: its own log group, the secrets it reads (by ARN), and
// the network interfaces Lambda needs in the VPC. `*` only where AWS allows no resource at all.
'use strict';

const { FUNCTIONS, readPermissions, roleLogicalId } = require('./params.cjs');

function roles(p, service) {
  // Every secret (and parameter) the proxy configuration names, whichever setting names it.
  const reads = readPermissions(p.proxyConfig).map(({ action, resources }) => ({
    Sid: `ProxyReads${action.split(':')[0].replace(/^./, (c) => c.toUpperCase())}`,
    Effect: 'Allow',
    Action: action,
    Resource: resources,
  }));
  const resources = {};
  for (const fn of FUNCTIONS) {
    const functionName = `${service}-${p.stage}-${fn}`;
    const statements = [
      {
        Sid: 'OwnLogGroup',
        Effect: 'Allow',
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: {
          'Fn::Sub': `arn:\${AWS::Partition}:logs:\${AWS::Region}:\${AWS::AccountId}:log-group:/aws/lambda/${functionName}:*`,
        },
      },
      ...reads,
      {
        // Lambda's VPC networking. Describe* has no resource-level permissions.
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
          { 'Fn::Sub': 'arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:network-interface/*' },
          ...p.vpc.subnetIds.map((id) => ({
            'Fn::Sub': `arn:\${AWS::Partition}:ec2:\${AWS::Region}:\${AWS::AccountId}:subnet/${id}`,
          })),
          ...p.vpc.securityGroupIds.map((id) => ({
            'Fn::Sub': `arn:\${AWS::Partition}:ec2:\${AWS::Region}:\${AWS::AccountId}:security-group/${id}`,
          })),
        ],
      },
    ];
    if (p.secretsKmsKeyArn) {
      statements.push({
        Sid: 'SecretsKey',
        Effect: 'Allow',
        Action: 'kms:Decrypt',
        Resource: p.secretsKmsKeyArn,
        Condition: {
          StringEquals: { 'kms:ViaService': { 'Fn::Sub': 'secretsmanager.${AWS::Region}.amazonaws.com' } },
        },
      });
    }
    resources[roleLogicalId(fn)] = {
      Type: 'AWS::IAM::Role',
      Properties: {
        Description: `XKS proxy ${fn} (${p.stage})`,
        AssumeRolePolicyDocument: {
          Version: '2012-10-17',
          Statement: [
            { Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' },
          ],
        },
        Policies: [
          { PolicyName: `xks-${fn}`, PolicyDocument: { Version: '2012-10-17', Statement: statements } },
        ],
      },
    };
  }
  return resources;
}

module.exports = { roles };
