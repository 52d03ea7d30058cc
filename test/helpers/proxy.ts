// Starts the real local proxy (local/main.ts) in a child process, on a fresh HSM token of its own,
// with random credentials and PIN; captures everything it prints, for the log scans. The HSM is
// SoftHSM, or NSS softoken when XKS_TEST_HSM=nss (scripts/test.sh runs the HSM suites on both).
// The proxy plays API Gateway, or an ALB when XKS_TEST_FRONT_DOOR=alb (scripts/test.sh runs the
// route and SigV4 suites behind both).
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ProxyConfig } from '../../functions/config.ts';
import type { VendorProfileName } from '../../layers/pkcs11/profiles.ts';
import { ensureNssToken } from '../../scripts/nss.ts';
import {
  DEMO_KEYS,
  ensureSoftHsmToken,
  HEALTH_CHECK_KEY,
  type KeySpec,
  tokenSerial,
} from '../../scripts/softhsm.ts';
import { type Credential, smithySign, type ToSign } from './sign.ts';

export const ROOT = resolve(import.meta.dirname, '../..');
export const PREFIX = '/test/prefix';

/** Extra keys every test token has besides the demo keys. */
export const TEST_KEYS: KeySpec[] = [
  { label: 'aes128', encrypt: true, decrypt: true, bytes: 16 },
  { label: 'hmac', encrypt: false, decrypt: false, type: 'GENERIC_SECRET' },
  { label: 'disabled_key', encrypt: true, decrypt: true },
];

/** The PKCS#11 implementations the HSM suites run on. */
export type TestHsm = 'softhsm' | 'nss';

/** This run's: XKS_TEST_HSM, SoftHSM when unset. */
export const TEST_HSM: TestHsm = testHsmOf(process.env.XKS_TEST_HSM);

/** The front doors the local proxy can play (local/server.ts). */
export type TestFrontDoor = 'apigateway' | 'alb';

/** This run's: XKS_TEST_FRONT_DOOR, API Gateway when unset. */
export const TEST_FRONT_DOOR: TestFrontDoor = frontDoorOf(process.env.XKS_TEST_FRONT_DOOR);

function frontDoorOf(value: string | undefined): TestFrontDoor {
  if (value === undefined || value === '' || value === 'apigateway') return 'apigateway';
  if (value === 'alb') return 'alb';
  throw new Error(`XKS_TEST_FRONT_DOOR is apigateway or alb, not '${value}'`);
}

function testHsmOf(value: string | undefined): TestHsm {
  if (value === undefined || value === '' || value === 'softhsm') return 'softhsm';
  if (value === 'nss') return 'nss';
  throw new Error(`XKS_TEST_HSM is softhsm or nss, not '${value}'`);
}

/**
 * What each implementation says about itself (GetHealthStatus), its vendor profile, and whether it
 * marks the keys it generates CKA_LOCAL (NSS does not).
 */
export const HSM_FACTS: Record<
  TestHsm,
  { vendor: string; model: RegExp; profile: VendorProfileName; local: boolean }
> = {
  softhsm: {
    vendor: 'SoftHSM project',
    model: /^SoftHSM v2 \(hardware 2\.\d+, firmware 2\.\d+, .* 2\.\d+\)$/,
    profile: 'softhsm',
    local: true,
  },
  nss: {
    vendor: 'Mozilla Foundation',
    model: /^NSS 3 \(hardware \d+\.\d+, firmware \d+\.\d+, NSS Internal Crypto Services 3\.\d+\)$/,
    profile: 'nss',
    local: false,
  },
};

export interface TestToken {
  modulePath: string;
  /** C_Initialize's library parameters (NSS). */
  libraryParameters?: string;
  /**
   * The environment a process using the token needs: SOFTHSM2_CONF for SoftHSM, and for the
   * fault-injecting module (test/fault-pkcs11) the library it wraps.
   */
  env: Record<string, string>;
}

/** A token with these keys (made when missing) of `hsm` in `dir`. */
export function ensureTestToken(
  options: { dir: string; label: string; pin: string; soPin: string; keys: KeySpec[] },
  hsm: TestHsm = TEST_HSM,
): TestToken {
  const wrapped = (modulePath: string) => ({
    FAULT_PKCS11_TARGET: modulePath,
    FAULT_PASSTHROUGH_TARGET: modulePath,
  });
  if (hsm === 'nss') {
    const { modulePath, libraryParameters } = ensureNssToken(options);
    return { modulePath, libraryParameters, env: wrapped(modulePath) };
  }
  const { modulePath, conf } = ensureSoftHsmToken(options);
  return { modulePath, env: { SOFTHSM2_CONF: conf, ...wrapped(modulePath) } };
}

/**
 * The HSM's id in ekmFleetDetails and in the log's `hsm` field: SoftHSM's token serial; NSS's
 * serial is all zeros, so the HSM's configured name, which is its token label.
 */
export function expectedHsmId(setup: { hsm: TestHsm; env: Record<string, string> }, label: string): string {
  if (setup.hsm === 'nss') return label;
  Object.assign(process.env, setup.env);
  return tokenSerial(label);
}

export function randomCredential(): Credential {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const id = [...randomBytes(26)].map((b) => alphabet[b % 32]).join('');
  return { accessKeyId: id, secretAccessKey: randomBytes(32).toString('base64') };
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field in the tests
  json: any;
}

export interface RawRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** A client certificate for mutual TLS, or 'none': a connection of its own either way. */
  clientCert?: { cert: Buffer; key: Buffer } | 'none';
}

export interface XksCall {
  credential?: Credential;
  region?: string;
  date?: Date;
  /** Change the signed request before it is sent (tampering). */
  tamper?: (req: { path: string; headers: Record<string, string>; body: string }) => void;
  signer?: (req: ToSign) => Promise<Record<string, string>> | Record<string, string>;
  prefix?: string;
  /** Appended to the path before signing: a query string (`?a=b`), signed as the signer signs it. */
  pathSuffix?: string;
  clientCert?: { cert: Buffer; key: Buffer } | 'none';
}

export interface RunningProxy {
  host: string;
  ca: Buffer;
  pin: string;
  credentials: Credential[];
  /** Secrets a log must never contain. */
  secrets: string[];
  config: ProxyConfig;
  /** The proxy's state folder: token, config, TLS certificate, audit key. */
  dir: string;
  /** Its HSM implementation, and the environment a process using its token needs (TestToken). */
  hsm: TestHsm;
  env: Record<string, string>;
  /** The front door it plays. */
  frontDoor: TestFrontDoor;
  /** The audit key's file (hex), for `xks-proxy audit verify --key-file`. */
  auditKeyFile: string;
  send(req: RawRequest): Promise<Response>;
  /** A signed XKS call: `route` is 'health' or 'keys/<id>/<metadata|encrypt|decrypt>'. */
  xks(route: string, body: unknown, options?: XksCall): Promise<Response>;
  /** Everything the proxy printed so far (stdout and stderr). */
  output(): string;
  /** The output once nothing new has arrived for a moment (the pipe lags behind the responses). */
  settledOutput(): Promise<string>;
  /** Waits (up to 5 s) until the output matches. */
  waitForOutput(pattern: RegExp): Promise<string>;
  stop(): Promise<void>;
}

export interface ProxyOptions {
  /** Changes to the generated configuration before the proxy starts; `dir` is the proxy's own folder. */
  configure?: (config: ProxyConfig, dir: string) => void;
  /** Runs after the configuration is written, before the proxy starts. */
  beforeStart?: (setup: TestSetup) => void;
  /** The keys of the token; the demo and test keys when absent. */
  keys?: KeySpec[];
  /** More environment for the proxy's process (e.g. the fault-injecting module's control files). */
  env?: Record<string, string>;
  /** The front door it plays; TEST_FRONT_DOOR when absent. */
  frontDoor?: TestFrontDoor;
}

export interface TestSetup {
  dir: string;
  /** The HSM implementation of its token. */
  hsm: TestHsm;
  config: ProxyConfig;
  configFile: string;
  /** The environment a process using the token needs (TestToken). */
  env: Record<string, string>;
  /** The SOFTHSM2_CONF the proxy process needs, on SoftHSM. */
  softhsmConf?: string;
  auditKeyFile: string;
  pin: string;
  credentials: Credential[];
  /** Secrets a log must never contain. */
  secrets: string[];
}

/** A fresh token (demo and test keys) of TEST_HSM, random credentials and PIN, and a config file. */
export function createTestSetup(options: ProxyOptions = {}): TestSetup {
  const dir = mkdtempSync(join(tmpdir(), 'xks-test-'));
  const pin = randomBytes(12).toString('base64url');
  const soPin = randomBytes(12).toString('base64url');
  const keys = options.keys ?? [...DEMO_KEYS, ...TEST_KEYS];
  const token = ensureTestToken({ dir, label: 'xks-test', pin, soPin, keys });
  const credentials = [randomCredential(), randomCredential(), randomCredential()];
  const [first, second, third] = credentials as [Credential, Credential, Credential];
  const auditKey = randomBytes(32).toString('hex');
  const auditKeyFile = join(dir, 'audit.key');
  writeFileSync(auditKeyFile, `${auditKey}\n`, { mode: 0o600 });
  const config: ProxyConfig = {
    hsm: {
      modulePath: token.modulePath,
      ...(token.libraryParameters === undefined ? {} : { libraryParameters: token.libraryParameters }),
      tokenLabel: 'xks-test',
      pin,
      healthCheckKeyLabel: HEALTH_CHECK_KEY,
      keyCacheSeconds: 60,
      profile: HSM_FACTS[TEST_HSM].profile,
      // Generous: tests run many processes on two cores; the fault tests set their own deadline.
      callTimeoutMs: 2000,
      startTimeoutMs: 5000,
    },
    healthCheck: { cacheSeconds: 10, degradedAboveMs: 1000 },
    proxy: { vendor: 'test vendor', model: 'test model 1.0', fleetSize: 1 },
    secrets: { cacheSeconds: 300 },
    audit: { keyFile: auditKeyFile },
    keystores: [
      {
        name: 'test',
        pathPrefix: PREFIX,
        credentials: [first, second],
        keys: [
          'foo',
          'encrypt_only_key',
          'decrypt_only_key',
          'impotent_key',
          'aes128',
          'hmac',
          'not_in_hsm',
          'disabled_key',
        ],
        disabledKeys: ['disabled_key'],
      },
      { name: 'eu', pathPrefix: '', credentials: [third], keys: ['foo'], allowedRegions: ['eu-west-1'] },
    ],
  };
  options.configure?.(config, dir);
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify(config), { mode: 0o600 });
  return {
    dir,
    hsm: TEST_HSM,
    config,
    configFile,
    env: token.env,
    ...(token.env.SOFTHSM2_CONF === undefined ? {} : { softhsmConf: token.env.SOFTHSM2_CONF }),
    auditKeyFile,
    pin,
    credentials,
    secrets: [pin, soPin, auditKey, ...credentials.map((c) => c.secretAccessKey)],
  };
}

export async function startProxy(options: ProxyOptions = {}): Promise<RunningProxy> {
  const setup = createTestSetup(options);
  const { dir, config, configFile, env, auditKeyFile, pin, credentials, secrets } = setup;
  options.beforeStart?.(setup);
  const [first] = credentials as [Credential];
  const frontDoor = options.frontDoor ?? TEST_FRONT_DOOR;
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'local/main.ts'),
      ...['--config', configFile, '--state-dir', dir, '--port', '0', '--front-door', frontDoor],
    ],
    {
      env: { ...process.env, ...env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const host = await listening(child, () => output);
  // A proxy that dies under a test makes every later request ECONNREFUSED: say how it ended.
  let stopping = false;
  child.once('exit', (code, signal) => {
    // Stopped, it exits with 0 (it handles SIGTERM); a crash noticed only as the test stops it
    // (its client saw the connection drop first) is reported all the same.
    if (!stopping || code !== 0) {
      process.stderr.write(
        `proxy exited unexpectedly (code ${code}, signal ${signal}); its last output:\n${output.slice(-4000)}\n`,
      );
    }
  });
  const ca = readFileSync(join(dir, 'tls', 'cert.pem'));
  const agent = new Agent({ ca, keepAlive: true, maxSockets: 8 });

  const send = (req: RawRequest): Promise<Response> =>
    new Promise((resolvePromise, reject) => {
      const [hostname, port] = host.split(':');
      // Always framed: Node sends a GET body without Content-Length otherwise.
      const headers = { 'content-length': String(Buffer.byteLength(req.body ?? '')), ...req.headers };
      const outgoing = request(
        // TLS identity is checked against 'localhost' even when a test forges the Host header.
        {
          hostname,
          port,
          servername: 'localhost',
          method: req.method ?? 'POST',
          path: req.path,
          headers,
          ...(req.clientCert === undefined
            ? { agent }
            : { ...(req.clientCert === 'none' ? {} : req.clientCert), ca, agent: false }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, text, json });
          });
        },
      );
      // A request the proxy never answers: its last output, printed with a failure, says why (it
      // holds no secrets: the tests check). Beside the message, which tests match.
      outgoing.on('error', (err: Error & { proxyOutput?: string }) => {
        err.proxyOutput = output.slice(-3000);
        reject(err);
      });
      outgoing.end(req.body);
    });

  const xks = async (route: string, body: unknown, call: XksCall = {}): Promise<Response> => {
    const path = `${call.prefix ?? PREFIX}/kms/xks/v1/${route}${call.pathSuffix ?? ''}`;
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const sign = call.signer ?? smithySign;
    const headers = await sign({
      host,
      path,
      body: text,
      credential: call.credential ?? first,
      region: call.region,
      date: call.date,
    });
    const req = { path, headers: { ...headers, 'content-type': 'application/json' }, body: text };
    call.tamper?.(req);
    return send({ path: req.path, headers: req.headers, body: req.body, clientCert: call.clientCert });
  };

  return {
    host,
    ca,
    pin,
    credentials,
    secrets,
    config,
    dir,
    hsm: TEST_HSM,
    env,
    frontDoor,
    auditKeyFile,
    send,
    xks,
    output: () => output,
    settledOutput: async () => {
      for (let seen = -1; seen !== output.length; ) {
        seen = output.length;
        await sleep(100);
      }
      return output;
    },
    waitForOutput: async (pattern) => {
      for (const deadline = Date.now() + 5000; !pattern.test(output); ) {
        if (Date.now() > deadline) throw new Error(`proxy output never matched ${pattern}`);
        await sleep(20);
      }
      return output;
    },
    stop: async () => {
      agent.destroy();
      stopping = true;
      // A proxy that already died (reported above) emits no second 'exit': waiting for one would hang.
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        // A proxy that does not end on SIGTERM is a failure of the test that stops it, not a hang.
        const killed = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(killed);
      }
      rmSync(dir, { recursive: true, force: true });
      if (child.signalCode === 'SIGKILL')
        throw new Error(`the proxy did not exit on SIGTERM:\n${output.slice(-4000)}`);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function listening(child: ChildProcess, output: () => string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`proxy did not start:\n${output()}`)), 20_000);
    const check = () => {
      const match = /listening on https?:\/\/([\w.:-]+)/.exec(output());
      if (match) {
        clearTimeout(timer);
        child.stderr?.off('data', check);
        resolvePromise(match[1] as string);
      }
    };
    child.stderr?.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`proxy exited with ${code}:\n${output()}`));
    });
  });
}

/** Request metadata as KMS sends it. */
export function metadata(kmsOperation: string, extra: Record<string, string> = {}) {
  return {
    awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
    kmsKeyArn: 'arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    kmsOperation,
    kmsRequestId: `req-${randomBytes(6).toString('hex')}`,
    ...extra,
  };
}
