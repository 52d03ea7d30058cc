// Connectivity public (spec: High level architecture): a Regional API on a custom domain with an
// ACM certificate, the execute-api endpoint off, and optional mutual TLS (the handler then checks
// the client certificate's subject CN).
import { type Fragment, getAtt, type RestApiEndpoint, ref } from '../cfn.ts';
import type { ParamsOf } from '../params.ts';

export function publicEndpoint(p: ParamsOf<'public'>): Fragment & { restApi: RestApiEndpoint } {
  const mtls = p.public.mtls;
  return {
    restApi: { EndpointConfiguration: { Types: ['REGIONAL'] }, DisableExecuteApiEndpoint: true },
    Resources: {
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
        Properties: { DomainName: ref('XksDomainName'), RestApiId: ref('XksRestApi'), Stage: p.stage },
      },
    },
    Outputs: {
      XksProxyUriEndpoint: { Value: `https://${p.public.domainName}` },
      DnsAliasTarget: {
        Description: 'Point the domain (alias or CNAME) at this API Gateway regional name',
        Value: getAtt('XksDomainName', 'RegionalDomainName'),
      },
      DnsAliasHostedZoneId: { Value: getAtt('XksDomainName', 'RegionalHostedZoneId') },
    },
  };
}
