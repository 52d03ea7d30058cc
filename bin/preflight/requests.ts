// XKS requests as AWS KMS sends them: signed with SigV4 over host;x-amz-date (Appendix A), by the
// project's own signer (functions/sigv4.ts), on a connection of their own unless told otherwise.
import { randomUUID } from 'node:crypto';
import type { Agent } from 'node:https';
import { signSigV4 } from '../../functions/sigv4.ts';
import type { Credential, Inputs } from './inputs.ts';
import type { HttpReply, NetError, Network } from './network.ts';

export const SERVICE = 'kms-xks-proxy';

/** What every XKS check needs: the network, the target and credential, the ARNs of key requests. */
export interface ApiContext {
  net: Network;
  inputs: Inputs;
  principalArn: string;
  kmsKeyArn: string;
}

/** A GetHealthStatus request body, as KMS sends it for `kmsOperation`. */
export function healthBody(kmsOperation: string): string {
  return JSON.stringify({ requestMetadata: { kmsRequestId: randomUUID(), kmsOperation } });
}

/** POSTs `body` to `route` (or `path`), signed as KMS signs it. */
export function signedCall(
  api: ApiContext,
  route: string,
  body: string,
  options: { agent?: Agent | false; credential?: Credential; path?: string; noClientCert?: boolean } = {},
): Promise<HttpReply | NetError> {
  const path = options.path ?? `${api.inputs.uriPath}/${route}`;
  const signed = signSigV4(
    { method: 'POST', path, host: api.inputs.target.hostHeader, body },
    options.credential ?? api.inputs.credential,
    { service: SERVICE, region: api.inputs.region, now: Date.now() },
  );
  return api.net.call({
    method: 'POST',
    path,
    body,
    headers: { ...signed, 'content-type': 'application/json' },
    agent: options.agent ?? false,
    ...(options.noClientCert ? { noClientCert: true } : {}),
  });
}
