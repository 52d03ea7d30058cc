// API Gateway as the front door: a REST API (rest-api.ts), reached as the stage's connectivity
// says: on a public custom domain (public.ts), or privately through the VPC endpoint service
// (private.ts).
import type { Fragment } from '../cfn.ts';
import type { ParamsBehind } from '../params.ts';
import { privateEndpoint } from './private.ts';
import { publicEndpoint } from './public.ts';
import { restApi } from './rest-api.ts';

export function apiGateway(p: ParamsBehind<'apigateway'>): Fragment {
  const endpoint = p.connectivity === 'public' ? publicEndpoint(p) : privateEndpoint(p);
  return {
    Resources: { ...restApi(p, endpoint.restApi), ...endpoint.Resources },
    Outputs: endpoint.Outputs,
  };
}
