// Error behaviour: what KMS sees when its configuration is wrong (spec: "Error codes"; API
// operations: 404 for an unknown path, 405 for GET; Authentication: 401 for a bad signature).
import { randomBytes } from 'node:crypto';
import { healthSchemaProblems } from './health.ts';
import type { Credential } from './inputs.ts';
import { type KmsContext, kmsOutcome } from './kms.ts';
import { type HttpReply, type NetError, networkScenario } from './network.ts';
import { errorBodyOf, observed, replyScenario, successJson } from './replies.ts';
import type { Check } from './report.ts';
import { type ApiContext, healthBody, signedCall } from './requests.ts';

/** What KMS makes of an answer that should have been an error: the check's kmsException. */
function observedOutcome(reply: HttpReply | NetError, context: KmsContext): Partial<Check> {
  if (!reply.ok) return kmsOutcome(networkScenario(reply), context);
  if (reply.status >= 200 && reply.status < 300) {
    const parsed = successJson(reply);
    if ('body' in parsed && healthSchemaProblems(parsed.body).length === 0) return {};
    return kmsOutcome('malformed', context);
  }
  return kmsOutcome(replyScenario(reply).scenario, context);
}

export async function unknownPathCheck(api: ApiContext): Promise<Check> {
  const id = 'errors.unknown-path';
  const title = 'An unknown path: 404 InvalidUriPathException, as JSON';
  const path = `/xks-preflight-${randomBytes(4).toString('hex')}${api.inputs.uriPath}/health`;
  const reply = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'), { path });
  const error = reply.ok ? errorBodyOf(reply) : undefined;
  if (reply.ok && reply.status === 404 && error?.errorName === 'InvalidUriPathException') {
    return {
      id,
      title,
      status: error.problem === undefined ? 'pass' : 'warn',
      detail: `${path}: ${observed(reply)}`,
      ...(error.problem === undefined ? {} : kmsOutcome('malformed', 'customKeyStore')),
    };
  }
  const outcome = observedOutcome(reply, 'customKeyStore');
  const consequence =
    outcome.kmsException === undefined
      ? 'KMS would take it for a working proxy at a wrong XksProxyUriPath'
      : `a wrong XksProxyUriPath would show as ${outcome.kmsException} instead of XksProxyInvalidConfigurationException`;
  return { id, title, status: 'fail', detail: `${path}: ${observed(reply)}; ${consequence}`, ...outcome };
}

export async function badSignatureCheck(api: ApiContext): Promise<Check> {
  const id = 'errors.bad-signature';
  const title = 'A bad signature: 401 AuthenticationFailedException';
  const wrong: Credential = {
    accessKeyId: api.inputs.credential.accessKeyId,
    secretAccessKey: randomBytes(32).toString('base64'),
  };
  const reply = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'), { credential: wrong });
  const error = reply.ok ? errorBodyOf(reply) : undefined;
  if (reply.ok && reply.status === 401 && error?.errorName === 'AuthenticationFailedException') {
    return {
      id,
      title,
      status: error.problem === undefined ? 'pass' : 'warn',
      detail: `signed with a wrong secret: ${observed(reply)}`,
      ...(error.problem === undefined ? {} : kmsOutcome('malformed', 'customKeyStore')),
    };
  }
  if (reply.ok && reply.status >= 200 && reply.status < 300) {
    return {
      id,
      title,
      status: 'fail',
      detail: `signed with a wrong secret: ${observed(reply)}: the proxy does not check SigV4 signatures`,
    };
  }
  const outcome = observedOutcome(reply, 'customKeyStore');
  return {
    id,
    title,
    status: 'fail',
    detail: `signed with a wrong secret: ${observed(reply)}; wrong credentials would show as ${outcome.kmsException ?? 'no error'} instead of XksProxyIncorrectAuthenticationCredentialException`,
    ...outcome,
  };
}

export async function getCheck(api: ApiContext): Promise<Check> {
  const id = 'errors.get';
  const title = 'GET on an API route: 405';
  const reply = await api.net.call({ method: 'GET', path: `${api.inputs.uriPath}/health`, agent: false });
  if (reply.ok && reply.status === 405) {
    const allow = reply.headers.allow;
    return {
      id,
      title,
      status: 'pass',
      detail: `HTTP 405${allow === undefined ? ' (no Allow header)' : `, Allow: ${allow}`}`,
    };
  }
  return {
    id,
    title,
    status: 'fail',
    detail: `${observed(reply)}: the spec requires 405 (KMS itself never sends GET; load balancers and scanners do)`,
  };
}
