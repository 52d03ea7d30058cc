// The run: every check, in the order KMS meets what it checks, into one report.
import { rootCertificates } from 'node:tls';
import { KEY_ID } from '../../functions/ids.ts';
import { badSignatureCheck, getCheck, unknownPathCheck } from './error-behaviour.ts';
import { healthChecks } from './health.ts';
import { credentialCheck, type PreflightOptions, resolveInputs, uriChecks } from './inputs.ts';
import { metadataCheck, roundTripChecks } from './key.ts';
import { kmsOutcome } from './kms.ts';
import { latencyChecks } from './latency.ts';
import { describeNetError, Network, networkScenario } from './network.ts';
import { type Check, ms, type Report, summarize } from './report.ts';
import { type ApiContext, healthBody, signedCall } from './requests.ts';
import {
  chainCheck,
  cipherCheck,
  extraCertificates,
  hostnameCheck,
  httpCheck,
  mtlsChecks,
  TRUSTED_CAS,
  validityCheck,
  versionCheck,
} from './tls.ts';

/** Runs every check against the endpoint; never throws for what it finds (only for bad options). */
export async function runPreflight(options: PreflightOptions): Promise<Report> {
  const started = Date.now();
  const { inputs, fromFile, credentialInput } = resolveInputs(options);
  const checks: Check[] = [];
  const skipped: string[] = [];
  const report = (): Report => {
    const summary = summarize(checks);
    return {
      target: {
        endpoint: inputs.endpointRaw,
        uriPath: inputs.uriPath,
        region: inputs.region,
        accessKeyId: inputs.credential.accessKeyId,
        ...(options.key === undefined ? {} : { externalKeyId: options.key }),
        mutualTls: options.mtls !== undefined,
      },
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      checks,
      skipped,
      summary,
      ok: summary.fail === 0,
    };
  };

  checks.push(...uriChecks(inputs, options, fromFile));
  checks.push(credentialCheck(credentialInput));

  const extra = extraCertificates(options.ca ?? []);
  const net = new Network(
    inputs.target,
    options.timeoutMs ?? 2000,
    [...rootCertificates, ...extra.pems],
    options.mtls,
  );

  // TLS: one plain handshake first; without it nothing else can run.
  const hello = await net.probe();
  if (!hello.ok) {
    checks.push({
      id: 'tls.handshake',
      title: 'TCP connection and TLS handshake',
      status: 'fail',
      detail: `${inputs.target.hostname}:${inputs.target.port}: ${describeNetError(hello)}`,
      ...kmsOutcome(networkScenario(hello), 'customKeyStore'),
    });
    skipped.push('every other network check: no TLS connection to the endpoint');
    return report();
  }
  checks.push({
    id: 'tls.handshake',
    title: 'TCP connection and TLS handshake',
    status: 'pass',
    detail: `${hello.protocol} ${hello.cipher} in ${ms(hello.ms)}`,
  });
  checks.push(await versionCheck(net, hello));
  checks.push(await cipherCheck(net));
  checks.push(validityCheck(hello, new Date()));
  checks.push(hostnameCheck(hello, inputs.target.hostname));
  checks.push(
    chainCheck(hello, {
      trusted: TRUSTED_CAS,
      extraCa: extra.names,
      allowUntrustedCa: options.allowUntrustedCa === true,
    }),
  );

  const api: ApiContext = {
    net,
    inputs,
    principalArn: options.principalArn ?? 'arn:aws:iam::111122223333:role/xks-preflight',
    kmsKeyArn:
      options.kmsKeyArn ??
      `arn:aws:kms:${inputs.region}:111122223333:key/00000000-0000-4000-8000-000000000000`,
  };

  // GetHealthStatus on a fresh connection, as CreateCustomKeyStore sends it.
  const health = await signedCall(api, 'health', healthBody('CreateCustomKeyStore'));
  checks.push(await httpCheck(net, health));
  if (options.mtls !== undefined) checks.push(...(await mtlsChecks(api, health)));
  checks.push(...healthChecks(health));

  if (options.key !== undefined) {
    if (KEY_ID.test(options.key)) {
      checks.push(await metadataCheck(api, options.key));
      const roundTrip = await roundTripChecks(api, options.key);
      checks.push(...roundTrip);
      if (!roundTrip.some((c) => c.id === 'key.decrypt'))
        skipped.push('key.decrypt: Encrypt did not succeed');
    } else {
      skipped.push('key.metadata, key.encrypt, key.decrypt: the external key id is not valid');
    }
  } else {
    skipped.push('key.metadata, key.encrypt, key.decrypt: no --key');
  }

  checks.push(await unknownPathCheck(api));
  checks.push(await badSignatureCheck(api));
  checks.push(await getCheck(api));

  const samples = Math.max(1, Math.floor(options.samples ?? 10));
  checks.push(...(await latencyChecks(api, samples)));
  return report();
}
