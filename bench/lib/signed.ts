// Pre-signed requests for the load generator: signed once with @smithy/signature-v4 (the AWS SDKs'
// signer), then replayed as they are. A signature is accepted for 5 minutes either side of its
// X-Amz-Date, so long runs sign with a date in the middle of the run.
import { smithySign } from '../../test/helpers/sign.ts';
import type { LoadRequest } from './load.ts';
import type { BenchSetup } from './requests.ts';
import { xksPath } from './requests.ts';

export async function signedRequest(
  setup: BenchSetup,
  host: string,
  route: string,
  body: unknown,
  label: string,
  date?: Date,
): Promise<LoadRequest> {
  const path = xksPath(route);
  const text = JSON.stringify(body);
  const headers = await smithySign({ host, path, body: text, credential: setup.credential, date });
  return {
    method: 'POST',
    path,
    headers: { ...headers, 'content-type': 'application/json' },
    body: text,
    route: label,
  };
}
