// CloudFormation as this folder writes it: the intrinsic functions it uses, and for each resource
// type it creates, the properties it sets (a small part of each AWS schema, so that tsc catches a
// misspelt or misplaced property here; cfn-lint checks the packaged templates against the full
// schemas in test/integration/deploy-template.test.ts).

export type Ref = { Ref: string };
export type GetAtt = { 'Fn::GetAtt': [string, string] };
/** `${AWS::Region}` and `${LogicalId}` in a string, or in a template with its own variables. */
export type Sub = { 'Fn::Sub': string | [string, Record<string, Ref | GetAtt>] };
/** A string property: written out, or known at deploy time. */
export type Str = string | Ref | GetAtt | Sub;

export const ref = (logicalId: string): Ref => ({ Ref: logicalId });
export const getAtt = (logicalId: string, attribute: string): GetAtt => ({
  'Fn::GetAtt': [logicalId, attribute],
});
export const sub = (text: string): Sub => ({ 'Fn::Sub': text });

export interface Statement {
  Sid?: string;
  Effect: 'Allow';
  Principal?: '*' | { Service: string };
  Action: string | string[];
  Resource?: Str | Str[];
  Condition?: Record<string, Record<string, Str>>;
}
export interface PolicyDocument {
  Version: '2012-10-17';
  Statement: Statement[];
}
/** A policy that lets one AWS service's principal assume the role. */
export const assumedBy = (service: string): PolicyDocument => ({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Principal: { Service: service }, Action: 'sts:AssumeRole' }],
});

export interface Ingress {
  IpProtocol: 'tcp';
  FromPort: number;
  ToPort: number;
  CidrIp?: string;
  SourceSecurityGroupId?: Str;
}

export interface MethodSetting {
  ResourcePath: string;
  HttpMethod: string;
  DataTraceEnabled: false;
  LoggingLevel: 'OFF';
  MetricsEnabled: boolean;
  ThrottlingRateLimit: number;
  ThrottlingBurstLimit: number;
}

export interface MetricStat {
  Metric: { Namespace: string; MetricName: string; Dimensions: Dimension[] };
  Period: number;
  Stat: string;
}
export interface Dimension {
  Name: string;
  Value: Str;
}
/** An alarm on one metric (MetricName...), or on a metric math expression (Metrics). */
export interface AlarmProperties {
  AlarmName: string;
  AlarmDescription: string;
  AlarmActions?: string[];
  OKActions?: string[];
  Namespace?: string;
  MetricName?: string;
  Dimensions?: Dimension[];
  Statistic?: string;
  ExtendedStatistic?: string;
  Metrics?: Array<
    | { Id: string; ReturnData: false; MetricStat: MetricStat }
    | { Id: string; Label: string; ReturnData: true; Expression: string }
  >;
  Period?: number;
  EvaluationPeriods: number;
  DatapointsToAlarm?: number;
  Threshold: number;
  ComparisonOperator: 'GreaterThanThreshold' | 'GreaterThanOrEqualToThreshold' | 'LessThanThreshold';
  TreatMissingData: 'notBreaching';
}

/** The properties of each resource type this folder creates. */
interface Properties {
  'AWS::IAM::Role': {
    Description?: string;
    AssumeRolePolicyDocument: PolicyDocument;
    Policies?: Array<{ PolicyName: string; PolicyDocument: PolicyDocument }>;
    ManagedPolicyArns?: Str[];
  };
  'AWS::Lambda::Function': {
    Description: string;
    Runtime: string;
    Handler: string;
    Timeout: number;
    Role: Str;
    Code: { ZipFile: string };
  };
  'AWS::Lambda::Permission': { Action: string; FunctionName: Str; Principal: string; SourceArn: Str };
  'AWS::Logs::LogGroup': { LogGroupName: string; RetentionInDays: number };

  'AWS::ApiGateway::RestApi': {
    Name: string;
    Description: string;
    BinaryMediaTypes: string[];
  } & RestApiEndpoint;
  'AWS::ApiGateway::Resource': { RestApiId: Str; ParentId: Str; PathPart: string };
  'AWS::ApiGateway::Method': {
    RestApiId: Str;
    ResourceId: Str;
    HttpMethod: 'POST' | 'GET';
    AuthorizationType: 'NONE';
    Integration:
      | { Type: 'AWS_PROXY'; IntegrationHttpMethod: 'POST'; Uri: Sub }
      | {
          Type: 'MOCK';
          RequestTemplates: Record<string, string>;
          IntegrationResponses: Array<{
            StatusCode: string;
            ResponseParameters: Record<string, string>;
            ResponseTemplates: Record<string, string>;
          }>;
        };
    MethodResponses?: Array<{ StatusCode: string; ResponseParameters: Record<string, boolean> }>;
  };
  'AWS::ApiGateway::GatewayResponse': {
    RestApiId: Str;
    ResponseType: string;
    StatusCode: string;
    ResponseParameters: Record<string, string>;
    ResponseTemplates: Record<string, string>;
  };
  'AWS::ApiGateway::Deployment': { RestApiId: Str; Description: string };
  'AWS::ApiGateway::Stage': {
    RestApiId: Str;
    DeploymentId: Str;
    StageName: string;
    TracingEnabled: false;
    AccessLogSetting: { DestinationArn: Str; Format: string };
    MethodSettings: MethodSetting[];
  };
  'AWS::ApiGateway::Account': { CloudWatchRoleArn: Str };
  'AWS::ApiGateway::DomainName': {
    DomainName: string;
    RegionalCertificateArn: string;
    EndpointConfiguration: { Types: ['REGIONAL'] };
    SecurityPolicy: 'TLS_1_2';
    MutualTlsAuthentication?: { TruststoreUri: string; TruststoreVersion?: string };
  };
  'AWS::ApiGateway::BasePathMapping': { DomainName: Str; RestApiId: Str; Stage: string };
  'AWS::ApiGateway::DomainNameV2': {
    DomainName: string;
    CertificateArn: string;
    EndpointConfiguration: { Types: ['PRIVATE'] };
    SecurityPolicy: 'TLS_1_2';
    Policy: PolicyDocument;
  };
  'AWS::ApiGateway::DomainNameAccessAssociation': {
    DomainNameArn: Str;
    AccessAssociationSource: Str;
    AccessAssociationSourceType: 'VPCE';
  };
  'AWS::ApiGateway::BasePathMappingV2': { DomainNameArn: Str; RestApiId: Str; Stage: string };

  'AWS::EC2::SecurityGroup': { GroupDescription: string; VpcId: string; SecurityGroupIngress: Ingress[] };
  'AWS::EC2::VPCEndpoint': {
    VpcEndpointType: 'Interface';
    ServiceName: Str;
    VpcId: string;
    SubnetIds: string[];
    SecurityGroupIds: Str[];
    PrivateDnsEnabled: boolean;
  };
  'AWS::EC2::VPCEndpointService': { NetworkLoadBalancerArns: Str[]; AcceptanceRequired: boolean };
  'AWS::EC2::VPCEndpointServicePermissions': { ServiceId: Str; AllowedPrincipals: Str[] };
  'AWS::ElasticLoadBalancingV2::LoadBalancer': {
    Type: 'network' | 'application';
    Scheme: 'internal' | 'internet-facing';
    Subnets: string[];
    SecurityGroups: Str[];
    LoadBalancerAttributes: Array<{ Key: string; Value: string }>;
  };
  'AWS::ElasticLoadBalancingV2::TargetGroup':
    | {
        Protocol: 'TCP';
        Port: number;
        TargetType: 'ip' | 'alb';
        VpcId: string;
        HealthCheckProtocol: 'TCP' | 'HTTPS';
        HealthCheckPath?: string;
        Matcher?: { HttpCode: string };
        Targets: Array<{ Id: Str; Port: number }>;
      }
    | {
        Name: string;
        TargetType: 'lambda';
        HealthCheckEnabled: false;
        TargetGroupAttributes: Array<{ Key: string; Value: string }>;
        Targets: Array<{ Id: Str }>;
      };
  'AWS::ElasticLoadBalancingV2::Listener':
    | {
        LoadBalancerArn: Str;
        Protocol: 'TCP';
        Port: number;
        DefaultActions: Array<{ Type: 'forward'; TargetGroupArn: Str }>;
      }
    | {
        LoadBalancerArn: Str;
        Protocol: 'HTTPS';
        Port: number;
        Certificates: Array<{ CertificateArn: string }>;
        SslPolicy: string;
        MutualAuthentication?: { Mode: 'verify'; TrustStoreArn: Str; IgnoreClientCertificateExpiry: false };
        DefaultActions: Array<{ Type: 'fixed-response'; FixedResponseConfig: FixedResponse }>;
      };
  'AWS::ElasticLoadBalancingV2::ListenerRule': {
    ListenerArn: Str;
    Priority: number;
    Conditions: Array<{ Field: 'path-pattern'; PathPatternConfig: { Values: string[] } }>;
    Actions: Array<{ Type: 'forward'; TargetGroupArn: Str }>;
  };
  'AWS::ElasticLoadBalancingV2::TrustStore': {
    Name: string;
    CaCertificatesBundleS3Bucket: string;
    CaCertificatesBundleS3Key: string;
    CaCertificatesBundleS3ObjectVersion?: string;
  };

  'AWS::CloudWatch::Dashboard': { DashboardName: string; DashboardBody: Sub };
  'AWS::CloudWatch::Alarm': AlarmProperties;

  /** The deploy helper's custom resources (infra/endpoint-service.ts). */
  'Custom::EndpointIps': { ServiceToken: Str; NetworkInterfaceIds: Str };
  'Custom::EndpointServicePrivateDns': { ServiceToken: Str; ServiceId: Str; PrivateDnsName: string };
}

/** An ALB listener's answer of its own. */
export interface FixedResponse {
  StatusCode: string;
  ContentType: 'application/json';
  MessageBody: string;
}

/** How KMS reaches a REST API: the RestApi properties that depend on the connectivity mode. */
export interface RestApiEndpoint {
  EndpointConfiguration: { Types: ['REGIONAL'] } | { Types: ['PRIVATE']; VpcEndpointIds: Str[] };
  DisableExecuteApiEndpoint?: true;
  /** A private API needs a resource policy. */
  Policy?: PolicyDocument;
}

export type ResourceType = keyof Properties;
/** A resource of one of the types above (a union over them when no type is given). */
export type Resource<T extends ResourceType = ResourceType> = {
  [K in T]: {
    Type: K;
    DeletionPolicy?: 'Retain';
    UpdateReplacePolicy?: 'Retain';
    DependsOn?: string[];
    Properties: Properties[K];
  };
}[T];
/** Resources by logical id. */
export type Resources = Record<string, Resource>;

export interface Output {
  Description?: string;
  Value: Str;
}
export type Outputs = Record<string, Output>;

/** A part of the stack: its resources and outputs. */
export interface Fragment {
  Resources: Resources;
  Outputs: Outputs;
}
