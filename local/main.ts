// `npm start`: the XKS proxy on this machine, on SoftHSMv2, through the same Lambda handlers that
// deploy to AWS.
//
//   node local/main.ts [--host 127.0.0.1] [--port 8443] [--no-tls] [--state-dir .local]
//                      [--config my-config.json] [--front-door apigateway|alb]
//
// --front-door: the events the handlers get and how paths are routed to them, as behind API Gateway
// (the default) or an Application Load Balancer (local/server.ts).
//
// Without --config it runs the demo: a SoftHSM token and a key store that match the defaults of
// AWS's public XKS test client (PUBLIC credentials: for local use only). With --config it serves
// that configuration (SOFTHSM2_CONF or your vendor's settings must already be in the environment).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEMO_CREDENTIAL, type ProxyConfig, readConfig } from '../functions/config.ts';
import { createXksApi } from '../functions/handlers.ts';
import { createRuntime } from '../functions/runtime.ts';
import { DEMO_KEYS, ensureSoftHsmToken, HEALTH_CHECK_KEY } from '../scripts/softhsm.ts';
import { createProxyServer } from './server.ts';
import { selfSignedCertificate } from './tls.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8443' },
    tls: { type: 'boolean', default: true },
    'state-dir': { type: 'string', default: join(root, '.local') },
    config: { type: 'string' },
    'front-door': { type: 'string', default: 'apigateway' },
  },
  allowNegative: true,
});

const DEMO_PREFIX = '/example/uri/path/prefix';
const frontDoor = args['front-door'];
if (frontDoor !== 'apigateway' && frontDoor !== 'alb') {
  process.stderr.write(`--front-door is apigateway or alb, not '${frontDoor}'\n`);
  process.exit(2);
}
const stateDir = resolve(args['state-dir']);
mkdirSync(stateDir, { recursive: true, mode: 0o700 });

const configFile = args.config === undefined ? demoSetup() : resolve(args.config);
// XKS_HSM_PIN, when set, is the PIN (the configuration then need not hold it).
const config = readConfig(configFile, process.env);
const mtls = config.clientCertificate;
if (mtls && !mtls.caFile)
  throw new Error('clientCertificate.caFile is needed for mutual TLS in the local server');
// Logs in to the HSM, and waits for its first round trip.
const runtime = await createRuntime(config);
const api = createXksApi(runtime);
const tls = args.tls ? selfSignedCertificate(stateDir) : undefined;
const allows = runtime.allowsCommonName;
const clientCertificate = mtls && allows ? { ca: readFileSync(mtls.caFile as string), allows } : undefined;
const server = createProxyServer({
  handlers: api.handlers,
  frontDoor,
  tls,
  clientCertificate,
  onRefused: ({ error, ...request }) => api.refused(error, request),
  ...config.localServer,
});
server.on('error', (err: NodeJS.ErrnoException) => {
  process.stderr.write(
    `Cannot listen on ${args.host}:${args.port}: ${err.code ?? err.message} (try --port)\n`,
  );
  process.exit(1);
});
server.listen(Number(args.port), args.host, () => {
  const { port } = server.address() as AddressInfo;
  banner(`${tls ? 'https' : 'http'}://${args.host}:${port}`);
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    runtime.close();
  });
}

/** The demo token and configuration under the state folder, created once and then reused. */
function demoSetup(): string {
  const file = join(stateDir, 'config.json');
  let config: ProxyConfig;
  if (existsSync(file)) {
    config = JSON.parse(readFileSync(file, 'utf8'));
  } else {
    config = {
      hsm: {
        modulePath: '',
        tokenLabel: 'xks-demo',
        pin: randomBytes(12).toString('base64url'),
        healthCheckKeyLabel: HEALTH_CHECK_KEY,
        keyCacheSeconds: 60,
        profile: 'softhsm',
        callTimeoutMs: 100,
        startTimeoutMs: 5000,
      },
      healthCheck: { cacheSeconds: 10, degradedAboveMs: 100 },
      secrets: { cacheSeconds: 300 },
      proxy: {
        vendor: 'serverless-xks-proxy',
        model: 'serverless-xks-proxy 0.1.0 (local demo)',
        fleetSize: 1,
      },
      keystores: [
        {
          name: 'demo',
          pathPrefix: DEMO_PREFIX,
          credentials: [DEMO_CREDENTIAL],
          keys: DEMO_KEYS.map((k) => k.label).filter((label) => label !== HEALTH_CHECK_KEY),
        },
      ],
    };
  }
  // The audit records' HMAC key (functions/audit.ts), made once: `xks-proxy audit verify --key-file`.
  const auditKeyFile = join(stateDir, 'audit.key');
  if (!existsSync(auditKeyFile)) {
    writeFileSync(auditKeyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  }
  config.audit ??= { keyFile: auditKeyFile };
  // The revocation switch (functions/revocation.ts): `xks-proxy revocation revoke --store file:<it>`.
  const revocationFile = join(stateDir, 'revocation.json');
  if (!existsSync(revocationFile)) {
    writeFileSync(revocationFile, `${JSON.stringify({ revoked: [] })}\n`, { mode: 0o600, flag: 'wx' });
  }
  config.revocation ??= { file: revocationFile, cacheSeconds: 1 };
  const token = ensureSoftHsmToken({
    dir: join(stateDir, 'softhsm'),
    label: config.hsm.tokenLabel,
    pin: config.hsm.pin as string,
    soPin: randomBytes(12).toString('base64url'),
    keys: DEMO_KEYS,
  });
  config.hsm.modulePath = token.modulePath;
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  return file;
}

function banner(base: string): void {
  const demo = args.config === undefined;
  const cacert = args.tls ? ` --cacert ${join(stateDir, 'tls', 'cert.pem')}` : '';
  const user = demo
    ? `${DEMO_CREDENTIAL.accessKeyId}:${DEMO_CREDENTIAL.secretAccessKey}`
    : '<access key id>:<secret>';
  const prefix = demo ? DEMO_PREFIX : '<path prefix>';
  const lines = [
    `XKS proxy listening on ${base}${prefix}/kms/xks/v1 (front door: ${frontDoor})`,
    '',
    'Try it:',
    `  curl --aws-sigv4 aws:amz:us-east-1:kms-xks-proxy --user ${user}${cacert} \\`,
    `    -H 'Content-Type: application/json' \\`,
    `    -d '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}' \\`,
    `    ${base}${prefix}/kms/xks/v1/health`,
  ];
  if (demo) {
    lines.push(
      '',
      '!! DEMO MODE: these SigV4 credentials are PUBLIC (AWS test-client defaults). Local use only:',
      '!! the proxy refuses them when it runs in AWS Lambda. Keys: foo, encrypt_only_key,',
      `!! decrypt_only_key, impotent_key. Token and config: ${stateDir}`,
      '',
      `Audit key: ${join(stateDir, 'audit.key')} (npm run xks-proxy -- audit verify --key-file <it> <log>)`,
      `Revoke AWS's access: npm run xks-proxy -- revocation revoke --store file:${join(stateDir, 'revocation.json')} --all`,
    );
  }
  process.stderr.write(`${lines.join('\n')}\n`);
}
