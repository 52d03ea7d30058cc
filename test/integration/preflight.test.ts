// `xks-proxy preflight` against the real local proxy (every check passes, with the testing flags
// for its self-signed certificate and 127.0.0.1) and against small servers that are each wrong in
// one way: each problem must be reported by the right check with the KMS exception the spec's table
// names for it. The command line runs once as a child process per outcome: exit codes, --json,
// and never the secret.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type Check,
  formatReport,
  type PreflightOptions,
  type Report,
  runPreflight,
} from '../../bin/preflight/index.ts';
import { cdiv } from '../../bin/preflight/key.ts';
import { kmsOutcome } from '../../bin/preflight/kms.ts';
import { percentile } from '../../bin/preflight/latency.ts';
import { decodeBase64 } from '../../bin/preflight/replies.ts';
import {
  type BrokenServer,
  closedPort,
  type Misbehaviour,
  makeServerCertificates,
  removeCertificates,
  type ServerCertificates,
  startBrokenServer,
  startSilentServer,
} from '../helpers/broken-servers.ts';
import { makeCertificates, type Pem, type TestCertificates } from '../helpers/certs.ts';
import { PREFIX, ROOT, type RunningProxy, randomCredential, startProxy } from '../helpers/proxy.ts';
import type { Credential } from '../helpers/sign.ts';

const UNREACHABLE = 'XksProxyUriUnreachableException';
const INVALID_RESPONSE = 'XksProxyInvalidResponseException';

function check(report: Report, id: string): Check {
  const found = report.checks.find((c) => c.id === id);
  assert.ok(found, `no check ${id} in ${report.checks.map((c) => c.id).join(', ')}`);
  return found;
}

function assertCheck(report: Report, id: string, status: Check['status'], kmsException?: string): Check {
  const found = check(report, id);
  assert.equal(found.status, status, `${id}: ${found.detail}`);
  assert.equal(found.kmsException, kmsException, `${id}: ${found.detail}`);
  return found;
}

/** Timed checks: on a loaded test machine they may warn about the budget, and that is all. */
const TIMED = /^(health\.status|key\.(metadata|encrypt|decrypt)|latency\.(fresh|keepalive))$/;

/** Every check not named passes (a timed one may warn that it came close to the 250 ms budget). */
function assertOthersPass(report: Report, except: string[]): void {
  for (const c of report.checks) {
    if (except.includes(c.id)) continue;
    if (c.status === 'warn' && TIMED.test(c.id) && /budget/.test(c.detail)) continue;
    assert.equal(c.status, 'pass', `${c.id}: ${c.detail}`);
  }
}

function writeConsoleFile(dir: string, uriPath: string, credential: Credential): string {
  const file = join(dir, `console-${credential.accessKeyId}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      XksProxyUriPath: uriPath,
      XksProxyAuthenticationCredential: {
        AccessKeyId: credential.accessKeyId,
        RawSecretAccessKey: credential.secretAccessKey,
      },
    }),
    { mode: 0o600 },
  );
  return file;
}

/** The CLI as a child process (asynchronous: the broken servers live in this process). */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin/xks-proxy.ts'), 'preflight', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

describe('preflight helpers', () => {
  test('the CDIV of the spec example (Appendix C)', () => {
    const value = cdiv(Buffer.from('project=nile,department=marketing'), {
      metadata: Buffer.from('key_version=1'),
      iv: Buffer.from('HMrlRw85cAJUd5Ax', 'base64'),
      ciphertext: Buffer.from('ghxkK1txeDNn3q8Y', 'base64'),
      tag: Buffer.from('vBxN2ncH1oEkR8WVXpmyYQ==', 'base64'),
    });
    assert.equal(value, 'qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=');
  });

  test('Base64 must be standard, padded and canonical', () => {
    assert.deepEqual(decodeBase64('SGVsbG8gV29ybGQh'), Buffer.from('Hello World!'));
    assert.equal(decodeBase64('SGVsbG8_V29ybGQh'), undefined);
    assert.equal(decodeBase64('SGVsbG8'), undefined);
    assert.equal(decodeBase64('SGVsbG9='), undefined, 'non-canonical padding bits');
    assert.equal(decodeBase64(42), undefined);
  });

  test('percentiles by nearest rank', () => {
    const values = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10];
    assert.equal(percentile(values, 50), 5);
    assert.equal(percentile(values, 99), 10);
    assert.equal(percentile([7], 99), 7);
  });

  test("the spec's exception table, by KMS operation", () => {
    const name = (row: Parameters<typeof kmsOutcome>[0], context: Parameters<typeof kmsOutcome>[1]) =>
      kmsOutcome(row, context).kmsException;
    assert.equal(name('InvalidUriPathException', 'customKeyStore'), 'XksProxyInvalidConfigurationException');
    assert.equal(name('InvalidUriPathException', 'createKey'), 'CustomKeyStoreInvalidStateException');
    assert.equal(name('KeyNotFoundException', 'createKey'), 'XksKeyNotFoundException');
    assert.equal(name('KeyNotFoundException', 'crypto'), 'KMSInvalidStateException');
    assert.equal(name('UnsupportedOperationException', 'createKey'), 'XksKeyInvalidResponseException');
    assert.equal(name('InternalException', 'customKeyStore'), INVALID_RESPONSE);
    assert.equal(name('ThrottlingException', 'customKeyStore'), UNREACHABLE);
    assert.equal(
      name('AuthenticationFailedException', 'customKeyStore'),
      'XksProxyIncorrectAuthenticationCredentialException',
    );
    // No Create/UpdateCustomKeyStore exception in the row: the row's first one.
    assert.equal(name('InvalidStateException', 'customKeyStore'), 'XksKeyInvalidConfigurationException');
    assert.match(kmsOutcome('timeout', 'crypto').kmsMessage ?? '', /did not respond in time/);
  });
});

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'xks-preflight-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('preflight against the local proxy (mutual TLS on)', () => {
  let clientCerts: TestCertificates;
  let proxy: RunningProxy;
  let consoleFile: string;
  let secret: string;
  let clientCertFile: string;
  let clientKeyFile: string;
  let caFile: string;

  before(async () => {
    clientCerts = makeCertificates();
    proxy = await startProxy({
      configure: (config) => {
        config.clientCertificate = {
          allowedCommonNames: ['cks.kms.*.amazonaws.com'],
          caFile: clientCerts.caFile,
        };
      },
    });
    const [credential] = proxy.credentials as [Credential];
    secret = credential.secretAccessKey;
    consoleFile = writeConsoleFile(dir, `${PREFIX}/kms/xks/v1`, credential);
    clientCertFile = join(dir, 'client.pem');
    clientKeyFile = join(dir, 'client.key');
    caFile = join(dir, 'proxy-ca.pem');
    writeFileSync(clientCertFile, clientCerts.good.cert);
    writeFileSync(clientKeyFile, clientCerts.good.key, { mode: 0o600 });
    writeFileSync(caFile, proxy.ca);
  });
  after(async () => {
    await proxy?.stop();
    if (clientCerts) rmSync(clientCerts.dir, { recursive: true, force: true });
  });

  test('every check passes (the port and the IP address are warnings, for testing)', async () => {
    const report = await runPreflight({
      endpoint: `https://${proxy.host}`,
      credentialFile: consoleFile,
      key: 'foo',
      mtls: clientCerts.good,
      ca: [proxy.ca],
      allowUntrustedCa: true,
      allowIp: true,
      samples: 5,
    });
    assert.equal(report.ok, true, formatReport(report));
    assertCheck(report, 'uri.endpoint', 'warn', 'ValidationException');
    assertCheck(report, 'uri.fqdn', 'warn', UNREACHABLE);
    assertOthersPass(report, ['uri.endpoint', 'uri.fqdn']);
    const expected = [
      'uri.path-alphabet',
      'uri.path-length',
      'uri.path-suffix',
      'uri.length',
      'credential',
      'tls.handshake',
      'tls.version',
      'tls.ciphers',
      'tls.validity',
      'tls.hostname',
      'tls.chain',
      'http.version',
      'mtls.with-cert',
      'mtls.without-cert',
      'health.status',
      'health.schema',
      'health.fleet',
      'key.metadata',
      'key.encrypt',
      'key.decrypt',
      'errors.unknown-path',
      'errors.bad-signature',
      'errors.get',
      'latency.fresh',
      'latency.keepalive',
    ];
    for (const id of expected) check(report, id);
    assert.match(check(report, 'tls.chain').detail, /--allow-untrusted-ca/);
    assert.match(check(report, 'tls.ciphers').detail, /TLS_AES_256_GCM_SHA384/);
    assert.match(check(report, 'health.fleet').detail, /ACTIVE/);
    assert.match(check(report, 'key.encrypt').detail, /CDIV verified/);
    assert.match(check(report, 'latency.keepalive').detail, /5 on a reused connection/);
    assert.deepEqual(report.skipped, []);
    assert.ok(!JSON.stringify(report).includes(secret));
    const text = formatReport(report, { color: true });
    assert.ok(!text.includes(secret));
    assert.ok(text.includes('\u001b[32mPASS'), 'colour when asked');
  });

  test('the CLI: --json, exit code 0, and the secret never printed', async () => {
    const { code, stdout, stderr } = await cli([
      '--endpoint',
      `https://${proxy.host}`,
      '--credential',
      consoleFile,
      '--key',
      'foo',
      '--mtls-cert',
      clientCertFile,
      '--mtls-key',
      clientKeyFile,
      '--ca',
      caFile,
      '--allow-untrusted-ca',
      '--allow-ip',
      '--samples',
      '3',
      '--json',
    ]);
    assert.equal(code, 0, stdout + stderr);
    const report = JSON.parse(stdout) as Report;
    assert.equal(report.ok, true);
    assert.equal(report.summary.fail, 0);
    assert.equal(report.target.accessKeyId, proxy.credentials[0]?.accessKeyId);
    assert.ok(!(stdout + stderr).includes(secret), 'the secret was printed');
  });

  test('the CLI without the testing flags: exit code 1, a readable report, no secret', async () => {
    const { code, stdout, stderr } = await cli([
      '--endpoint',
      `https://${proxy.host}`,
      '--credential',
      consoleFile,
      '--mtls-cert',
      clientCertFile,
      '--mtls-key',
      clientKeyFile,
      '--samples',
      '1',
    ]);
    assert.equal(code, 1, stdout + stderr);
    assert.match(stdout, /FAIL {2}Certificate chain ends at a root CA KMS trusts/);
    assert.match(stdout, /-> KMS: XksProxyUriUnreachableException/);
    assert.match(stdout, /AWS KMS cannot establish a TLS connection/);
    assert.match(stdout, /FAIL {2}Endpoint is a fully qualified domain name/);
    assert.ok(!stdout.includes('\u001b['), 'no colour when not on a terminal');
    assert.ok(!(stdout + stderr).includes(secret), 'the secret was printed');
  });

  test('a wrong secret: GetHealthStatus fails as XksProxyIncorrectAuthenticationCredentialException', async () => {
    const [credential] = proxy.credentials as [Credential];
    const report = await runPreflight({
      endpoint: `https://${proxy.host}`,
      path: `${PREFIX}/kms/xks/v1`,
      credential: {
        accessKeyId: credential.accessKeyId,
        secretAccessKey: randomCredential().secretAccessKey,
      },
      mtls: clientCerts.good,
      ca: [proxy.ca],
      allowUntrustedCa: true,
      allowIp: true,
      samples: 1,
    });
    assertCheck(report, 'health.status', 'fail', 'XksProxyIncorrectAuthenticationCredentialException');
    assert.equal(report.ok, false);
  });

  test('a key KMS cannot use: XksKeyInvalidConfigurationException, XksKeyNotFoundException', async () => {
    const options: PreflightOptions = {
      endpoint: `https://${proxy.host}`,
      credentialFile: consoleFile,
      mtls: clientCerts.good,
      ca: [proxy.ca],
      allowUntrustedCa: true,
      allowIp: true,
      samples: 1,
    };
    const impotent = await runPreflight({ ...options, key: 'impotent_key' });
    assertCheck(impotent, 'key.metadata', 'fail', 'XksKeyInvalidConfigurationException');
    assertCheck(impotent, 'key.encrypt', 'fail', 'KMSInvalidStateException');
    assert.match(check(impotent, 'key.encrypt').detail, /InvalidKeyUsageException/);
    const missing = await runPreflight({ ...options, key: 'not_in_hsm' });
    assertCheck(missing, 'key.metadata', 'fail', 'XksKeyNotFoundException');
  });

  test('no client certificate: the mutual TLS proxy refuses everything', async () => {
    const report = await runPreflight({
      endpoint: `https://${proxy.host}`,
      credentialFile: consoleFile,
      ca: [proxy.ca],
      allowUntrustedCa: true,
      allowIp: true,
      samples: 1,
    });
    assertCheck(report, 'health.status', 'fail', UNREACHABLE);
    assert.equal(report.ok, false);
  });
});

describe('preflight against broken servers', () => {
  let certs: ServerCertificates;
  const credential = randomCredential();
  const prefix = '/broken/prefix';
  const servers: BrokenServer[] = [];
  before(() => {
    certs = makeServerCertificates();
  });
  after(async () => {
    for (const server of servers) await server.stop();
    if (certs) removeCertificates(certs);
  });

  async function serve(certificate: Pem, behaviour: Misbehaviour = 'none'): Promise<BrokenServer> {
    const server = await startBrokenServer({ certificate, behaviour, credential, prefix, ca: certs.ca });
    servers.push(server);
    return server;
  }

  /** Trusting the test CA (with the testing flags), so that only the server's own fault shows. */
  function preflight(server: { endpoint: string }, extra: Partial<PreflightOptions> = {}): Promise<Report> {
    return runPreflight({
      endpoint: server.endpoint,
      path: `${prefix}/kms/xks/v1`,
      credential,
      ca: [certs.ca],
      allowUntrustedCa: true,
      allowIp: true,
      samples: 2,
      ...extra,
    });
  }

  const TESTING = ['uri.endpoint', 'uri.fqdn'];

  test('a correct server: everything passes', async () => {
    const report = await preflight(await serve(certs.good));
    assert.equal(report.ok, true, formatReport(report));
    assertOthersPass(report, TESTING);
  });

  test('a certificate for another host: tls.hostname fails, TLS connection exception', async () => {
    const report = await preflight(await serve(certs.wrongHost));
    const c = assertCheck(report, 'tls.hostname', 'fail', UNREACHABLE);
    assert.match(c.detail, /wrong\.example\.com/);
    assert.match(c.kmsMessage ?? '', /cannot establish a TLS connection/);
    assertOthersPass(report, [...TESTING, 'tls.hostname']);
  });

  test('an expired certificate: tls.validity fails, TLS connection exception', async () => {
    const report = await preflight(await serve(certs.expired));
    const c = assertCheck(report, 'tls.validity', 'fail', UNREACHABLE);
    assert.match(c.detail, /expired on 2020-01-31/);
    assert.match(c.kmsMessage ?? '', /cannot establish a TLS connection/);
    assertOthersPass(report, [...TESTING, 'tls.validity']);
  });

  test('a self-signed certificate: tls.chain fails, TLS connection exception', async () => {
    const server = await serve(certs.selfSigned);
    const report = await preflight(server, { ca: [], allowUntrustedCa: false });
    const c = assertCheck(report, 'tls.chain', 'fail', UNREACHABLE);
    assert.match(c.detail, /self-signed/);
    assert.match(c.kmsMessage ?? '', /cannot establish a TLS connection/);
    assertOthersPass(report, [...TESTING, 'tls.chain']);
  });

  test('a chain ending at --ca: a warning without --allow-untrusted-ca', async () => {
    const report = await preflight(await serve(certs.good), { allowUntrustedCa: false });
    const c = assertCheck(report, 'tls.chain', 'warn', UNREACHABLE);
    assert.match(c.detail, /only because of --ca; KMS will not trust it/);
    assert.equal(report.ok, true);
  });

  test('HTML error pages: XksProxyInvalidResponseException', async () => {
    const report = await preflight(await serve(certs.good, 'html-errors'));
    const health = assertCheck(report, 'health.status', 'fail', INVALID_RESPONSE);
    assert.match(health.detail, /text\/html/);
    assert.match(health.kmsMessage ?? '', /cannot interpret the response/);
    assertCheck(report, 'errors.unknown-path', 'fail', INVALID_RESPONSE);
    assertCheck(report, 'errors.bad-signature', 'fail', INVALID_RESPONSE);
    assertCheck(report, 'errors.get', 'fail', undefined);
    assertCheck(report, 'latency.fresh', 'fail', INVALID_RESPONSE);
  });

  test('slow answers (400 ms): "did not respond in time"', async () => {
    const report = await preflight(await serve(certs.good, 'slow'));
    for (const id of ['health.status', 'latency.fresh', 'latency.keepalive']) {
      const c = assertCheck(report, id, 'fail', UNREACHABLE);
      assert.match(c.kmsMessage ?? '', /did not respond in time/, id);
    }
    // Measured, in milliseconds: no call to a server that answers after 400 ms takes less.
    const p50 = /p50 ([\d.]+) ms/.exec(check(report, 'latency.keepalive').detail)?.[1];
    assert.ok(Number(p50) >= 400, `p50 ${p50} ms`);
    // The behaviour itself is right, only late.
    assertCheck(report, 'errors.unknown-path', 'pass');
    assertCheck(report, 'health.schema', 'pass');
  });

  test('wrong status codes: each reported with what KMS would make of it', async () => {
    const report = await preflight(await serve(certs.good, 'wrong-status'));
    // 200 {"status":"ok"} for an unknown path: a wrong XksProxyUriPath would be "cannot interpret".
    assertCheck(report, 'errors.unknown-path', 'fail', INVALID_RESPONSE);
    // 403 AccessDeniedException instead of 401: KMS reports an access denial, not bad credentials.
    const sig = assertCheck(report, 'errors.bad-signature', 'fail', 'KMSInvalidStateException');
    assert.match(sig.kmsMessage ?? '', /denied access/);
    // 200 for GET: a spec violation KMS itself never meets.
    assertCheck(report, 'errors.get', 'fail', undefined);
    assertOthersPass(report, [...TESTING, 'errors.unknown-path', 'errors.bad-signature', 'errors.get']);
  });

  test('mutual TLS: enforced passes, not enforced fails', async () => {
    const enforced = await preflight(await serve(certs.good, 'mtls'), { mtls: certs.client });
    assertCheck(enforced, 'mtls.with-cert', 'pass');
    assertCheck(enforced, 'mtls.without-cert', 'pass');
    assertOthersPass(enforced, TESTING);
    const lax = await preflight(await serve(certs.good, 'mtls-not-enforced'), { mtls: certs.client });
    assertCheck(lax, 'mtls.with-cert', 'pass');
    assertCheck(lax, 'mtls.without-cert', 'fail', undefined);
  });

  test('nothing listening: "cannot communicate", and nothing else runs', async () => {
    const report = await preflight({ endpoint: `https://127.0.0.1:${await closedPort()}` });
    const c = assertCheck(report, 'tls.handshake', 'fail', UNREACHABLE);
    assert.match(c.kmsMessage ?? '', /cannot communicate/);
    assert.equal(report.checks.at(-1)?.id, 'tls.handshake');
    assert.equal(report.skipped.length, 1);
  });

  test('a server that never answers the handshake: "did not respond in time"', async () => {
    const silent = await startSilentServer();
    try {
      const report = await preflight(silent, { timeoutMs: 300 });
      const c = assertCheck(report, 'tls.handshake', 'fail', UNREACHABLE);
      assert.match(c.kmsMessage ?? '', /did not respond in time/);
    } finally {
      await silent.stop();
    }
  });

  test('URI rules: IP address, path alphabet, length and suffix, total length', async () => {
    const port = await closedPort();
    const strict = await runPreflight({
      endpoint: `https://127.0.0.1:${port}`,
      path: '/bad prefix!/kms/xks/v2',
      credential,
    });
    assertCheck(strict, 'uri.fqdn', 'fail', UNREACHABLE);
    assertCheck(strict, 'uri.path-alphabet', 'fail', 'ValidationException');
    assertCheck(strict, 'uri.path-suffix', 'fail', 'ValidationException');
    assertCheck(strict, 'uri.path-length', 'pass');
    const localhost = await runPreflight({
      endpoint: `https://localhost:${port}`,
      path: '/kms/xks/v1',
      credential,
    });
    assert.match(assertCheck(localhost, 'uri.fqdn', 'fail', UNREACHABLE).detail, /single label/);
    const long = `/${'a'.repeat(120)}/kms/xks/v1`;
    const tooLong = await runPreflight({
      endpoint: `https://xks.example.invalid:${port}`,
      path: long,
      credential,
      key: 'k'.repeat(128),
      timeoutMs: 500,
    });
    assertCheck(tooLong, 'uri.fqdn', 'pass');
    assertCheck(tooLong, 'uri.path-length', 'fail', 'ValidationException');
    assertCheck(tooLong, 'uri.length', 'fail', 'ValidationException');
    const badFile = await runPreflight({
      endpoint: `https://127.0.0.1:${port}`,
      path: '/kms/xks/v1',
      credential: { accessKeyId: 'lowercase', secretAccessKey: 'short' },
      allowIp: true,
    });
    const c = assertCheck(badFile, 'credential', 'fail', 'ValidationException');
    assert.doesNotMatch(c.detail, /short/, 'no part of the secret in the report');
  });

  test('the CLI against a broken server: exit code 1 with --json; 2 for a usage error', async () => {
    const server = await serve(certs.selfSigned);
    const file = writeConsoleFile(dir, `${prefix}/kms/xks/v1`, credential);
    const broken = await cli([
      '--endpoint',
      server.endpoint,
      '--credential',
      file,
      '--samples',
      '1',
      '--json',
    ]);
    assert.equal(broken.code, 1, broken.stderr);
    const report = JSON.parse(broken.stdout) as Report;
    assert.equal(report.checks.find((c) => c.id === 'tls.chain')?.kmsException, UNREACHABLE);
    assert.ok(!(broken.stdout + broken.stderr).includes(credential.secretAccessKey));
    const usage = await cli(['--credential', file]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--endpoint is required/);
    writeFileSync(join(dir, 'not-json.json'), `{"RawSecretAccessKey": "${credential.secretAccessKey}"`);
    const notJson = await cli(['--endpoint', server.endpoint, '--credential', join(dir, 'not-json.json')]);
    assert.equal(notJson.code, 2);
    assert.ok(!(notJson.stdout + notJson.stderr).includes(credential.secretAccessKey));
  });
});
