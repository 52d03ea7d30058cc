// Connectivity vpc-endpoint-service with API Gateway (spec: High level architecture): a private API
// reached through an execute-api interface endpoint, and a private custom domain equal to the
// endpoint service's private DNS name; the endpoint service's NLB (../endpoint-service.ts) forwards
// to that interface endpoint's IPs.
import {
  type Fragment,
  getAtt,
  type PolicyDocument,
  type Resources,
  type RestApiEndpoint,
  ref,
  sub,
} from '../cfn.ts';
import {
  deployHelper,
  endpointService,
  endpointServiceOutputs,
  type NlbTargets,
  networkLoadBalancer,
  nlbSecurityGroup,
  privateDnsName,
} from '../endpoint-service.ts';
import type { ParamsOf } from '../params.ts';

type Params = ParamsOf<'vpc-endpoint-service'>;

const endpointRef = ref('XksExecuteApiEndpoint');

/** The API and its domain name admit requests through the execute-api endpoint only. */
const invokeFromEndpoint: PolicyDocument = {
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

export function privateEndpoint(p: Params): Fragment & { restApi: RestApiEndpoint } {
  const targets = executeApiTargets(p);
  return {
    restApi: {
      EndpointConfiguration: { Types: ['PRIVATE'], VpcEndpointIds: [endpointRef] },
      // A private API needs a resource policy; Principal * keeps SigV4 checking in the handler.
      Policy: invokeFromEndpoint,
    },
    Resources: {
      ...nlbSecurityGroup(p),
      ...executeApiEndpoint(p),
      ...privateDomainName(p),
      ...deployHelper(),
      ...targets.Resources,
      ...networkLoadBalancer(p, targets.nlb),
      ...endpointService(),
      ...privateDnsName(p),
    },
    Outputs: endpointServiceOutputs(p),
  };
}

/** The interface endpoint KMS's requests reach the private API by, and its security group. */
function executeApiEndpoint(p: Params): Resources {
  return {
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
            SourceSecurityGroupId: ref('XksNlbSecurityGroup'),
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
        SubnetIds: p.vpcEndpointService.nlbSubnetIds,
        SecurityGroupIds: [ref('XksExecuteApiEndpointSecurityGroup')],
        // Left off so other execute-api traffic in the VPC is untouched; KMS arrives by the NLB.
        PrivateDnsEnabled: false,
        // No endpoint policy: a custom one makes API Gateway judge KMS's SigV4 header itself.
      },
    },
  };
}

/**
 * The private custom domain name (the endpoint service's private DNS name, whose certificate KMS
 * checks), reachable from the execute-api endpoint, mapped to the stage.
 */
function privateDomainName(p: Params): Resources {
  return {
    XksDomainName: {
      Type: 'AWS::ApiGateway::DomainNameV2',
      Properties: {
        DomainName: p.vpcEndpointService.privateDnsName,
        CertificateArn: p.vpcEndpointService.certificateArn,
        EndpointConfiguration: { Types: ['PRIVATE'] },
        SecurityPolicy: 'TLS_1_2',
        Policy: invokeFromEndpoint,
      },
    },
    XksDomainAccess: {
      Type: 'AWS::ApiGateway::DomainNameAccessAssociation',
      Properties: {
        DomainNameArn: getAtt('XksDomainName', 'DomainNameArn'),
        AccessAssociationSource: endpointRef,
        AccessAssociationSourceType: 'VPCE',
      },
    },
    XksBasePathMapping: {
      Type: 'AWS::ApiGateway::BasePathMappingV2',
      DependsOn: ['XksStage'],
      Properties: {
        DomainNameArn: getAtt('XksDomainName', 'DomainNameArn'),
        RestApiId: ref('XksRestApi'),
        Stage: p.stage,
      },
    },
  };
}

/**
 * The NLB's targets: the private IPs of the execute-api endpoint's network interfaces, one per
 * subnet, which CloudFormation does not give; the deploy helper looks them up (Custom::EndpointIps).
 */
function executeApiTargets(p: Params): { Resources: Resources; nlb: NlbTargets } {
  return {
    Resources: {
      XksEndpointIps: {
        Type: 'Custom::EndpointIps',
        Properties: {
          ServiceToken: getAtt('XksEndpointHelper', 'Arn'),
          NetworkInterfaceIds: getAtt('XksExecuteApiEndpoint', 'NetworkInterfaceIds'),
        },
      },
    },
    nlb: {
      TargetType: 'ip',
      Targets: p.vpcEndpointService.nlbSubnetIds.map((_, i) => ({
        Id: getAtt('XksEndpointIps', `Ip${i}`),
        Port: 443,
      })),
    },
  };
}
