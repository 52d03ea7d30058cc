// The inputs: endpoint, URI path and SigV4 credential, from the options and the KMS console's
// file (spec: "XKS proxy configuration in AWS KMS console"), and the checks KMS's parameter rules
// make of them before any call (spec: API operations; Authentication).
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ACCESS_KEY_ID, KEY_ID, SECRET_ACCESS_KEY } from '../../functions/ids.ts';
import { UsageError } from '../cli.ts';
import { type KmsContext, kmsOutcome } from './kms.ts';
import { errorCode, type Target } from './network.ts';
import { isObject, parseJson } from './replies.ts';
import type { Check } from './report.ts';

export const URI_SUFFIX = '/kms/xks/v1';
const PATH_ALPHABET = /^[A-Za-z0-9/_-]*$/;

export interface PreflightOptions {
  /** XksProxyUriEndpoint: `https://host[:port]`. */
  endpoint: string;
  /** XksProxyUriPath; default: the credential file's. */
  path?: string;
  /** The KMS console JSON file (XksProxyUriPath, XksProxyAuthenticationCredential). */
  credentialFile?: string;
  /** Instead of credentialFile. */
  credential?: { accessKeyId: string; secretAccessKey: string };
  /** An externalKeyId: GetKeyMetadata and an Encrypt/Decrypt round trip. */
  key?: string;
  /** A client certificate and key (PEM) for mutual TLS, presented as KMS presents its own. */
  mtls?: { cert: string | Buffer; key: string | Buffer };
  /** Extra CA certificates (PEM) to build the chain with: testing only, KMS does not trust them. */
  ca?: (string | Buffer)[];
  /** Testing only: a chain ending at a `ca` certificate passes (with a note) instead of warning. */
  allowUntrustedCa?: boolean;
  /** Testing only: an IP address or a single-label host name (localhost) is a warning, not a failure. */
  allowIp?: boolean;
  /** The region KMS signs from (default us-east-1). */
  region?: string;
  /** Per network call, connection and response together (default 2000 ms). */
  timeoutMs?: number;
  /** Calls per latency measurement (default 10). */
  samples?: number;
  /** requestMetadata.awsPrincipalArn of the key requests. */
  principalArn?: string;
  /** requestMetadata.kmsKeyArn of the key requests. */
  kmsKeyArn?: string;
}

export interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface Inputs {
  endpointRaw: string;
  url: URL;
  target: Target;
  uriPath: string;
  credential: Credential;
  region: string;
}

export function resolveInputs(options: PreflightOptions): {
  inputs: Inputs;
  fromFile?: string;
  credentialInput: Partial<Credential>;
} {
  const endpointRaw = options.endpoint.trim();
  let url: URL;
  try {
    url = new URL(endpointRaw);
  } catch {
    throw new UsageError(`--endpoint '${endpointRaw}' is not a URL (https://host[:port])`);
  }
  if (url.protocol !== 'https:') throw new UsageError(`--endpoint must be https://, not ${url.protocol}//`);
  const file = options.credentialFile === undefined ? undefined : readConsoleFile(options.credentialFile);
  const credentialInput: Partial<Credential> = options.credential ?? file?.credential ?? {};
  const uriPath = options.path ?? file?.uriPath;
  if (uriPath === undefined) {
    throw new UsageError('no XksProxyUriPath: give --path or a credential file that has one');
  }
  if (credentialInput.accessKeyId === undefined || credentialInput.secretAccessKey === undefined) {
    if (options.credentialFile === undefined && options.credential === undefined) {
      throw new UsageError('--credential (the KMS console JSON file) is required');
    }
  }
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const target: Target = {
    hostname,
    port: url.port === '' ? 443 : Number(url.port),
    hostHeader: url.host,
    servername: isIP(hostname) === 0 ? hostname : undefined,
  };
  return {
    inputs: {
      endpointRaw,
      url,
      target,
      uriPath,
      credential: {
        accessKeyId: credentialInput.accessKeyId ?? '',
        secretAccessKey: credentialInput.secretAccessKey ?? '',
      },
      region: options.region ?? 'us-east-1',
    },
    ...(options.path !== undefined && file?.uriPath !== undefined ? { fromFile: file.uriPath } : {}),
    credentialInput,
  };
}

function readConsoleFile(file: string): { uriPath?: string; credential?: Partial<Credential> } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${errorCode(error)}`);
  }
  // JSON.parse's message would quote the text, which holds the secret.
  const value = parseJson(text);
  if (!isObject(value)) throw new UsageError(`${file} is not a JSON object`);
  const auth = value.XksProxyAuthenticationCredential;
  return {
    ...(typeof value.XksProxyUriPath === 'string' ? { uriPath: value.XksProxyUriPath } : {}),
    credential: isObject(auth)
      ? {
          ...(typeof auth.AccessKeyId === 'string' ? { accessKeyId: auth.AccessKeyId } : {}),
          ...(typeof auth.RawSecretAccessKey === 'string'
            ? { secretAccessKey: auth.RawSecretAccessKey }
            : {}),
        }
      : {},
  };
}

export function uriChecks(inputs: Inputs, options: PreflightOptions, fromFile: string | undefined): Check[] {
  const checks: Check[] = [];
  const { url, endpointRaw, uriPath } = inputs;
  const params = (context: KmsContext) =>
    kmsOutcome(context === 'createKey' ? 'keyParameters' : 'parameters', context);

  // XksProxyUriEndpoint: https://, host name, no path; KMS connects on 443 and takes no port.
  const endpointProblems: string[] = [];
  if (!/^https:\/\/[A-Za-z0-9.-]+(?::\d+)?$/.test(endpointRaw)) {
    endpointProblems.push(
      'it must be https:// and a host name only (letters, digits, dots, hyphens): no path, slash, user or query',
    );
  }
  if (endpointRaw.replace(/:\d+$/, '').length < 10 || endpointRaw.replace(/:\d+$/, '').length > 128) {
    endpointProblems.push('it must be 10 to 128 characters');
  }
  if (endpointProblems.length > 0) {
    checks.push({
      id: 'uri.endpoint',
      title: 'XksProxyUriEndpoint',
      status: 'fail',
      detail: `'${endpointRaw}': ${endpointProblems.join('; ')}`,
      ...params('customKeyStore'),
    });
  } else if (url.port !== '') {
    checks.push({
      id: 'uri.endpoint',
      title: 'XksProxyUriEndpoint',
      status: 'warn',
      detail: `port ${url.port}: KMS connects on 443 and XksProxyUriEndpoint cannot hold a port; this only works for testing`,
      ...params('customKeyStore'),
    });
  } else {
    checks.push({ id: 'uri.endpoint', title: 'XksProxyUriEndpoint', status: 'pass', detail: endpointRaw });
  }

  // <server> MUST be a fully qualified domain name, not an IP address (spec: API operations).
  const host = inputs.target.hostname;
  const labels = host.split('.');
  let fqdnProblem: string | undefined;
  if (isIP(host) !== 0) fqdnProblem = `${host} is an IP address`;
  else if (labels.length < 2) fqdnProblem = `${host} is a single label, not a fully qualified domain name`;
  else if (host.length > 253) fqdnProblem = 'the host name is longer than 253 characters';
  else if (!labels.every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l)))
    fqdnProblem = `${host} has an empty or invalid label`;
  else if (/^\d+$/.test(labels[labels.length - 1] as string)) fqdnProblem = `${host} ends in a numeric label`;
  if (fqdnProblem === undefined) {
    checks.push({
      id: 'uri.fqdn',
      title: 'Endpoint is a fully qualified domain name',
      status: 'pass',
      detail: host,
    });
  } else {
    checks.push({
      id: 'uri.fqdn',
      title: 'Endpoint is a fully qualified domain name',
      status: options.allowIp ? 'warn' : 'fail',
      detail: `${fqdnProblem}: KMS needs a DNS name that a publicly trusted certificate names${options.allowIp ? ' (allowed by --allow-ip, for testing only)' : ''}`,
      ...kmsOutcome('tls', 'customKeyStore'),
    });
  }

  // XksProxyUriPath: A-Za-z0-9/_- only, at most 128 characters, ending in /kms/xks/v1.
  const badCharacters = [...new Set(uriPath.replace(/[A-Za-z0-9/_-]/g, ''))];
  const pathChecks: [string, string, string | undefined][] = [
    [
      'uri.path-alphabet',
      'XksProxyUriPath characters',
      PATH_ALPHABET.test(uriPath) && uriPath.startsWith('/')
        ? undefined
        : badCharacters.length > 0
          ? `characters outside A-Za-z0-9/_-: ${badCharacters.map((c) => JSON.stringify(c)).join(' ')}`
          : 'it must start with /',
    ],
    [
      'uri.path-length',
      'XksProxyUriPath length',
      uriPath.length <= 128 ? undefined : `${uriPath.length} characters; at most 128 are allowed`,
    ],
    [
      'uri.path-suffix',
      'XksProxyUriPath ends in /kms/xks/v1',
      uriPath.endsWith(URI_SUFFIX) &&
      (uriPath === URI_SUFFIX || /^\/[A-Za-z0-9/_-]+\/kms\/xks\/v1$/.test(uriPath))
        ? undefined
        : `'${uriPath}' is not [/<prefix>]${URI_SUFFIX}`,
    ],
  ];
  for (const [id, title, problem] of pathChecks) {
    checks.push(
      problem === undefined
        ? {
            id,
            title,
            status: 'pass',
            detail: id === 'uri.path-length' ? `${uriPath.length} of 128 characters` : uriPath,
          }
        : { id, title, status: 'fail', detail: problem, ...params('customKeyStore') },
    );
  }
  if (fromFile !== undefined && fromFile !== uriPath) {
    checks.push({
      id: 'uri.path-file',
      title: 'XksProxyUriPath of the console file',
      status: 'warn',
      detail: `the credential file says '${fromFile}', --path says '${uriPath}': checking --path; upload the one the proxy serves`,
    });
  }

  // The whole URI, key routes included, MUST NOT exceed 256 characters.
  const origin = `https://${url.host}`;
  const keyRouteFixed = `${origin}${uriPath}/keys//metadata`.length;
  const room = 256 - keyRouteFixed;
  if (options.key !== undefined) {
    const length = keyRouteFixed + options.key.length;
    checks.push(
      length <= 256
        ? {
            id: 'uri.length',
            title: 'URI length',
            status: 'pass',
            detail: `${length} of 256 characters for ${options.key}'s longest route (.../metadata)`,
          }
        : {
            id: 'uri.length',
            title: 'URI length',
            status: 'fail',
            detail: `${length} characters for ${options.key}'s metadata route; at most 256`,
            ...params('createKey'),
          },
    );
  } else if (room < 1) {
    checks.push({
      id: 'uri.length',
      title: 'URI length',
      status: 'fail',
      detail: `endpoint and path leave no room for an external key id within 256 characters`,
      ...params('customKeyStore'),
    });
  } else if (room < 128) {
    checks.push({
      id: 'uri.length',
      title: 'URI length',
      status: 'warn',
      detail: `external key ids longer than ${room} characters will not fit in 256 (the spec allows 128)`,
      ...params('createKey'),
    });
  } else {
    checks.push({
      id: 'uri.length',
      title: 'URI length',
      status: 'pass',
      detail: `any external key id (up to 128 characters) fits within 256`,
    });
  }
  if (options.key !== undefined && !KEY_ID.test(options.key)) {
    checks.push({
      id: 'uri.key-id',
      title: 'External key id',
      status: 'fail',
      detail: `'${options.key}' is not 1-128 characters of A-Za-z0-9._-`,
      ...params('createKey'),
    });
  }
  return checks;
}

export function credentialCheck(credential: Partial<Credential>): Check {
  const problems: string[] = [];
  const id = credential.accessKeyId;
  const secret = credential.secretAccessKey;
  if (id === undefined) problems.push('no AccessKeyId');
  else if (!ACCESS_KEY_ID.test(id)) problems.push('AccessKeyId is not 20-30 characters of A-Z and 2-7');
  if (secret === undefined) problems.push('no RawSecretAccessKey');
  else if (!SECRET_ACCESS_KEY.test(secret)) {
    problems.push(`RawSecretAccessKey (${secret.length} characters) is not 43-64 characters of A-Za-z0-9+/=`);
  }
  if (problems.length > 0) {
    return {
      id: 'credential',
      title: 'SigV4 credential (XksProxyAuthenticationCredential)',
      status: 'fail',
      detail: problems.join('; '),
      ...kmsOutcome('parameters', 'customKeyStore'),
    };
  }
  return {
    id: 'credential',
    title: 'SigV4 credential (XksProxyAuthenticationCredential)',
    status: 'pass',
    detail: `access key id ${id}, secret of ${secret?.length} characters`,
  };
}
