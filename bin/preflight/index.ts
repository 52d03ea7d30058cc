// `xks-proxy preflight`: checks an XKS proxy endpoint the way AWS KMS will use it, before
// CreateCustomKeyStore does, and names the KMS exception each problem would cause (spec: "Error
// codes", the KMS exception table).
//
//   npx xks-proxy preflight --endpoint https://xks.example.com --path /prefix/kms/xks/v1 \
//     --credential console.json [--key <externalKeyId>] [--mtls-cert c.pem --mtls-key k.pem] [--json]
//
// What it checks, in order: the URI rules (spec: API operations), the credential file (spec: "XKS
// proxy configuration in AWS KMS console"), TLS (spec: API content type; Authentication: the chain
// must end at one of the root CAs in TrustedCertificateAuthorities, see trusted-cas.json), mutual
// TLS, GetHealthStatus signed as KMS signs (Appendix A: SignedHeaders=host;x-amz-date), with --key
// GetKeyMetadata and an Encrypt/Decrypt round trip with a CDIV (Appendix C), the error behaviour
// (404 InvalidUriPathException, 401 AuthenticationFailedException, 405 for GET) and latency against
// KMS's 250 ms budget.
//
// The secret access key is never printed: not in the report, the JSON, or an error message.
//
// This file is the command (bin/cli.ts parses its options and reports its errors). The checks,
// one file per group: inputs.ts (URI rules, credential), tls.ts (TLS, HTTP/1.1, mutual TLS),
// health.ts, key.ts, error-behaviour.ts, latency.ts; run.ts runs them in order and report.ts prints
// the result. Beneath them: requests.ts (XKS requests signed as KMS signs them), network.ts,
// replies.ts (judging replies against the spec) and kms.ts (KMS's budget and its exceptions).
import { readFileSync } from 'node:fs';
import { command, type Output, runCli, STDIO, UsageError } from '../cli.ts';
import type { PreflightOptions } from './inputs.ts';
import { errorCode } from './network.ts';
import { formatReport } from './report.ts';
import { runPreflight } from './run.ts';
import { splitPem } from './tls.ts';

export type { PreflightOptions } from './inputs.ts';
export { type Check, formatReport, type Report, type Status } from './report.ts';
export { runPreflight } from './run.ts';

export const PREFLIGHT_HELP = `Usage: xks-proxy preflight --endpoint https://HOST[:PORT] --credential FILE [options]

Checks an XKS proxy the way AWS KMS will use it, and reports each check as PASS, WARN or FAIL
with the KMS exception it would cause. Exit code 0 when nothing fails (warnings allowed), 1 when
a check fails, 2 for a usage error.

  --endpoint URL          XksProxyUriEndpoint, https://host (a :port for testing only)
  --credential FILE       the KMS console JSON file (XksProxyUriPath and the SigV4 credential,
                          as 'xks-proxy credentials create --console-file' writes it)
  --path PATH             XksProxyUriPath, [/prefix]/kms/xks/v1 (default: the file's)
  --key ID                an external key id: GetKeyMetadata and an Encrypt/Decrypt round trip
  --mtls-cert FILE        client certificate (PEM) for mutual TLS, with --mtls-key
  --mtls-key FILE         its private key (PEM)
  --region REGION         the region KMS signs from (default us-east-1)
  --timeout MS            per call, connection and response (default 2000)
  --samples N             calls per latency measurement (default 10)
  --principal-arn ARN     awsPrincipalArn of the key requests (for proxies with authorization)
  --kms-key-arn ARN       kmsKeyArn of the Encrypt and Decrypt requests
  --json                  the report as JSON, for CI
  --color, --no-color     colour (default: when standard output is a terminal)
  -h, --help              this text

Testing only (e.g. against 'npm start' on 127.0.0.1):
  --ca FILE               also build the chain with these CA certificates (PEM; repeatable);
                          a chain ending there is a WARN: KMS will not trust it
  --allow-untrusted-ca    ...and a PASS (with a note) instead
  --allow-ip              an IP address or a single-label host (localhost: not a fully
                          qualified domain name either) is a WARN instead of a FAIL

The secret access key is never printed.`;

function readPem(option: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new UsageError(`${option}: cannot read ${file}: ${errorCode(error)}`);
  }
}

function positiveInteger(option: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`${option} must be a positive integer`);
  return Number(value);
}

/** `xks-proxy preflight`. */
export const PREFLIGHT = command({
  help: PREFLIGHT_HELP,
  options: {
    endpoint: { type: 'string' },
    credential: { type: 'string' },
    path: { type: 'string' },
    key: { type: 'string' },
    'mtls-cert': { type: 'string' },
    'mtls-key': { type: 'string' },
    ca: { type: 'string', multiple: true },
    'allow-untrusted-ca': { type: 'boolean' },
    'allow-ip': { type: 'boolean' },
    region: { type: 'string' },
    timeout: { type: 'string' },
    samples: { type: 'string' },
    'principal-arn': { type: 'string' },
    'kms-key-arn': { type: 'string' },
    json: { type: 'boolean' },
    color: { type: 'boolean' },
  },
  allowNegative: true,
  async run(values, _, io) {
    if (values.endpoint === undefined) throw new UsageError('--endpoint is required');
    if (values.credential === undefined) throw new UsageError('--credential is required');
    if ((values['mtls-cert'] === undefined) !== (values['mtls-key'] === undefined)) {
      throw new UsageError('--mtls-cert and --mtls-key go together');
    }
    const options: PreflightOptions = {
      endpoint: values.endpoint,
      credentialFile: values.credential,
      ...(values.path === undefined ? {} : { path: values.path }),
      ...(values.key === undefined ? {} : { key: values.key }),
      ...(values['mtls-cert'] === undefined || values['mtls-key'] === undefined
        ? {}
        : {
            mtls: {
              cert: readPem('--mtls-cert', values['mtls-cert']),
              key: readPem('--mtls-key', values['mtls-key']),
            },
          }),
      ca: (values.ca ?? []).map((file) => readPem('--ca', file)),
      allowUntrustedCa: values['allow-untrusted-ca'] === true,
      allowIp: values['allow-ip'] === true,
      ...(values.region === undefined ? {} : { region: values.region }),
      ...(values['principal-arn'] === undefined ? {} : { principalArn: values['principal-arn'] }),
      ...(values['kms-key-arn'] === undefined ? {} : { kmsKeyArn: values['kms-key-arn'] }),
    };
    const timeoutMs = positiveInteger('--timeout', values.timeout);
    const samples = positiveInteger('--samples', values.samples);
    if (timeoutMs !== undefined) options.timeoutMs = timeoutMs;
    if (samples !== undefined) options.samples = samples;
    for (const ca of options.ca ?? []) {
      if (splitPem(ca.toString()).length === 0) throw new UsageError('--ca: no PEM certificate in the file');
    }

    const report = await runPreflight(options);
    if (values.json) io.out(JSON.stringify(report, null, 2));
    else {
      const color = values.color ?? (process.stdout.isTTY === true && !process.env.NO_COLOR);
      io.out(formatReport(report, { color }));
    }
    return report.ok ? 0 : 1;
  },
});

/** `xks-proxy preflight ...`: returns the exit code. */
export function preflightMain(args: readonly string[], io: Output = STDIO): Promise<number> {
  return runCli(PREFLIGHT, args, io, ['preflight']);
}
