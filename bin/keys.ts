// `xks-proxy keys`: external keys in the HSM: new keys, the key set of AWS's XKS test client, and
// versions of a key (key rotation).
//
//   XKS_HSM_PIN=... npx xks-proxy keys create --config config.json --key payments
//   XKS_HSM_PIN=... npx xks-proxy keys create-test-keys --config config.json
//   XKS_HSM_PIN=... npx xks-proxy keys create-version --config config.json --key payments
//   XKS_HSM_PIN=... npx xks-proxy keys list-versions --module /usr/lib/softhsm/libsofthsm2.so \
//     --token xks --key payments
//
// Every version of a key has CKA_LABEL = the externalKeyId; version N > 1 has CKA_ID
// `xks-v<N>:<label>` (layers/pkcs11/pkcs11-hsm.ts). The proxy encrypts with the highest version
// and names it in the ciphertextMetadata, which the AAD covers (spec: Encrypt, ciphertextMetadata:
// "an external key manager may implement automatic key rotation and use the extra bytes to encode
// versioning"), so every older version keeps decrypting what it made.
//
// The PIN comes from an environment variable or the proxy's config file, never from the command
// line (ps shows it), and is never printed. No key material is read: the keys are non-extractable.
import { readFileSync } from 'node:fs';
import type * as pkcs11 from 'pkcs11js';
import { KEY_ID } from '../functions/ids.ts';
import type { KeyUsage } from '../layers/pkcs11/hsm.ts';
import {
  ckrOf,
  errorText,
  MAX_VERSIONS,
  P,
  secretKeyTemplate,
  TokenError,
  TokenSession,
  versionId,
} from '../layers/pkcs11/session.ts';
import { isEntryPoint } from '../scripts/entry-point.ts';
import { DEMO_KEYS, HEALTH_CHECK_KEY } from '../scripts/softhsm.ts';
import { CliError, command, type Group, type Output, runCli, STDIO, UsageError, type Values } from './cli.ts';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const DEFAULT_PIN_ENV = 'XKS_HSM_PIN';
/** versionOf() reads at most 9 digits. */
const HIGHEST_VERSION = 999_999_999;

/** A refusal or a failure, with a message fit to print: it never holds the PIN. */
export class KeysError extends CliError {
  constructor(message: string, exitCode = 1) {
    super(message, exitCode);
    this.name = 'KeysError';
  }
}

/** Where the key lives and how to log in. */
export interface Connection {
  modulePath: string;
  /** C_Initialize's library parameters (NSS softoken), when the library takes any. */
  libraryParameters?: string | undefined;
  tokenLabel?: string | undefined;
  tokenSerial?: string | undefined;
  pin: string;
}

/** One version of a key as the HSM describes it: attributes only, never CKA_VALUE. */
export interface KeyVersion {
  version: number;
  /** CKA_ID as text, `0x<hex>` when not printable, null when the key has none. */
  id: string | null;
  keySpec: string;
  usage: KeyUsage[];
  sensitive: boolean | null;
  extractable: boolean | null;
  alwaysSensitive: boolean | null;
  neverExtractable: boolean | null;
  /** Generated inside the HSM (CKA_LOCAL), not imported. */
  local: boolean | null;
  /** The highest version: the one the proxy encrypts with. */
  current: boolean;
}

export interface VersionList {
  key: string;
  token: string;
  versions: KeyVersion[];
  /** Version numbers more than one object claims: the proxy refuses such a key. */
  ambiguous: number[];
  current: number | undefined;
}

// ---------------------------------------------------------------------------------------------
// PKCS#11.

/** A logged-in read/write session on the token, or the KeysError saying why there is none. */
function openToken(connection: Connection): TokenSession {
  try {
    return TokenSession.open(connection, { readWrite: true });
  } catch (error) {
    if (!(error instanceof TokenError)) throw error;
    if (error.step === 'load') {
      throw new KeysError(
        `cannot load the PKCS#11 library ${connection.modulePath}: ${pkcs11Text(error.cause)}`,
      );
    }
    if (error.found === undefined) throw pkcs11Error(error.step, error.cause);
    // The proxy refuses several tokens too: a key made in one of them would be missing in the other.
    const hint = error.found.count > 0 ? ': name one with --token and --token-serial' : '';
    throw new KeysError(`${error.message}${hint}`);
  }
}

/** Every secret key labelled `label`, unlike the proxy (which looks at MAX_VERSIONS): to report a token over the limit. */
function findAll(token: TokenSession, label: string): Buffer[] {
  return token.findKeys(label, 0);
}

function describeKey(token: TokenSession, handle: Buffer): Omit<KeyVersion, 'current'> {
  let facts: ReturnType<TokenSession['facts']>;
  try {
    facts = token.facts(handle);
  } catch (error) {
    throw pkcs11Error('C_GetAttributeValue', error);
  }
  return {
    version: facts.version,
    id: idText(facts.id),
    keySpec: facts.keySpec,
    usage: facts.usage,
    sensitive: token.flag(handle, P.CKA_SENSITIVE),
    extractable: token.flag(handle, P.CKA_EXTRACTABLE),
    alwaysSensitive: token.flag(handle, P.CKA_ALWAYS_SENSITIVE),
    neverExtractable: token.flag(handle, P.CKA_NEVER_EXTRACTABLE),
    local: token.flag(handle, P.CKA_LOCAL),
  };
}

function list(token: TokenSession, key: string): VersionList {
  const found = findAll(token, key).map((handle) => describeKey(token, handle));
  const counts = new Map<number, number>();
  for (const v of found) counts.set(v.version, (counts.get(v.version) ?? 0) + 1);
  const ambiguous = [...counts].filter(([, n]) => n > 1).map(([version]) => version);
  const current = found.length === 0 ? undefined : Math.max(...found.map((v) => v.version));
  const versions = found
    .map((v) => ({ ...v, current: v.version === current }))
    // Ties (ambiguous versions) by CKA_ID: the order a token returns objects in may change.
    .sort((a, b) => a.version - b.version || (a.id ?? '').localeCompare(b.id ?? ''));
  return { key, token: token.label, versions, ambiguous: ambiguous.sort((a, b) => a - b), current };
}

/** The versions of a key; an empty list when the token has no such key. */
export function listVersions(connection: Connection, key: string): VersionList {
  checkKeyId(key);
  const token = openToken(connection);
  try {
    return list(token, key);
  } catch (error) {
    throw error instanceof KeysError ? error : pkcs11Error('C_FindObjects', error);
  } finally {
    token.close();
  }
}

export interface CreateOptions extends Usage {
  /** Create version 1 when the token has no key of this label. */
  allowNew?: boolean;
}

/**
 * Generates the next version of a key inside the HSM: AES-256, sensitive and non-extractable.
 * Refuses a key whose versions are ambiguous (the proxy refuses it too), a key at MAX_VERSIONS
 * (the proxy looks at no more objects of a label than that, and might miss the newest), a missing
 * key without allowNew, and a version that encrypts but cannot decrypt (what it encrypted could
 * never be decrypted).
 */
export function createVersion(
  connection: Connection,
  key: string,
  options: CreateOptions,
): { created: KeyVersion; list: VersionList } {
  checkKeyId(key);
  if (options.encrypt && !options.decrypt) {
    throw new KeysError(
      'a version that encrypts but cannot decrypt would make ciphertexts nothing can decrypt: add decrypt to --usage',
      2,
    );
  }
  if (!options.encrypt && !options.decrypt)
    throw new KeysError('--usage must name decrypt, encrypt or both', 2);
  const token = openToken(connection);
  try {
    const before = list(token, key);
    if (before.versions.length === 0 && !options.allowNew) {
      throw new KeysError(
        `token '${token.label}' has no secret key labelled '${key}': --allow-new creates its version 1`,
      );
    }
    refuseAmbiguous(before);
    if (before.versions.length >= MAX_VERSIONS) {
      throw new KeysError(
        `'${key}' has ${before.versions.length} versions: the proxy looks at ${MAX_VERSIONS} at most; destroy versions no ciphertext needs first`,
      );
    }
    const next = (before.current ?? 0) + 1;
    if (next > HIGHEST_VERSION) throw new KeysError(`'${key}' is at the highest version number`);

    const handle = generateAes256(token, key, options, next);

    // PKCS#11 has no compare-and-set: a second create-version running at the same time could have
    // made the same version. Say so instead of destroying either (a proxy may already use one).
    const after = list(token, key);
    if (after.ambiguous.includes(next)) {
      throw new KeysError(
        `another create-version made version ${next} of '${key}' at the same time: the proxy refuses the key until one of the two is destroyed (run list-versions)`,
      );
    }
    const created = { ...describeKey(token, handle), current: after.current === next };
    if (created.version !== next) {
      throw new KeysError(`the token did not keep CKA_ID ${versionId(next, key)}`);
    }
    return { created, list: after };
  } catch (error) {
    throw error instanceof KeysError ? error : pkcs11Error('PKCS#11', error);
  } finally {
    token.close();
  }
}

/** Generates an AES-256 key inside the HSM: sensitive, not extractable, only the usages asked for. */
function generateAes256(token: TokenSession, label: string, usage: Usage, version = 1): Buffer {
  const template: pkcs11.Template = [
    ...secretKeyTemplate({ label, keyType: P.CKK_AES, ...usage, version }),
    { type: P.CKA_VALUE_LEN, value: 32 },
  ];
  try {
    return token.lib.C_GenerateKey(token.session, { mechanism: P.CKM_AES_KEY_GEN }, template);
  } catch (error) {
    throw pkcs11Error('C_GenerateKey', error);
  }
}

/** CKA_ENCRYPT and CKA_DECRYPT of a key. */
export interface Usage {
  encrypt: boolean;
  decrypt: boolean;
}

/**
 * Generates a new external key (version 1) inside the HSM with any usage, none included: a key for
 * one direction only, or a key that does nothing (AWS's XKS test client expects both kinds). Refuses
 * a label the token already has: a new version of a key is create-version's job.
 */
export function createKey(
  connection: Connection,
  key: string,
  usage: Usage,
): { created: KeyVersion; token: string } {
  checkKeyId(key);
  const token = openToken(connection);
  try {
    return { created: createNew(token, key, usage), token: token.label };
  } catch (error) {
    throw error instanceof KeysError ? error : pkcs11Error('PKCS#11', error);
  } finally {
    token.close();
  }
}

function createNew(token: TokenSession, key: string, usage: Usage): KeyVersion {
  if (findAll(token, key).length > 0) {
    throw new KeysError(
      `token '${token.label}' already has a secret key labelled '${key}': create-version makes its next version`,
    );
  }
  const created = describeKey(token, generateAes256(token, key, usage));
  if (!sameUsage(created.usage, usage)) {
    throw new KeysError(
      `the token made '${key}' with usage ${created.usage.join(',') || 'none'}, not as asked`,
    );
  }
  return { ...created, current: true };
}

function sameUsage(usage: readonly KeyUsage[], wanted: Usage): boolean {
  const expected = usageNames(wanted);
  return usage.length === expected.length && expected.every((name) => usage.includes(name));
}

function usageNames(usage: Usage): KeyUsage[] {
  return [...(usage.encrypt ? ['ENCRYPT' as const] : []), ...(usage.decrypt ? ['DECRYPT' as const] : [])];
}

/** The keys AWS's public XKS test client expects, with this proxy's health-check key. */
export function testClientKeys(healthCheckKey = HEALTH_CHECK_KEY): { label: string; usage: Usage }[] {
  return DEMO_KEYS.map((k) => ({
    label: k.label === HEALTH_CHECK_KEY ? healthCheckKey : k.label,
    usage: { encrypt: k.encrypt, decrypt: k.decrypt },
  }));
}

export interface TestKeyResult {
  label: string;
  usage: KeyUsage[];
  /** Generated now, or there already with the expected usage. */
  created: boolean;
}

/**
 * Makes sure the token holds every key of testClientKeys(): generates those missing, keeps those
 * there with the expected usage, and refuses (having made the others) a key there with another usage.
 */
export function createTestKeys(
  connection: Connection,
  healthCheckKey?: string,
): { token: string; keys: TestKeyResult[] } {
  const token = openToken(connection);
  try {
    const keys: TestKeyResult[] = [];
    const wrong: string[] = [];
    for (const { label, usage } of testClientKeys(healthCheckKey)) {
      const existing = list(token, label);
      if (existing.versions.length === 0) {
        keys.push({ label, usage: createNew(token, label, usage).usage, created: true });
        continue;
      }
      refuseAmbiguous(existing);
      const current = existing.versions.find((v) => v.current) as KeyVersion;
      keys.push({ label, usage: current.usage, created: false });
      if (!sameUsage(current.usage, usage) || current.keySpec !== 'AES_256') {
        wrong.push(
          `'${label}' is there as ${current.keySpec} ${current.usage.join(',') || 'without usage'}, not AES_256 ${usageNames(usage).join(',') || 'without usage'}`,
        );
      }
    }
    if (wrong.length > 0) {
      throw new KeysError(`token '${token.label}': ${wrong.join('; ')}: the test client would fail on it`);
    }
    return { token: token.label, keys };
  } catch (error) {
    throw error instanceof KeysError ? error : pkcs11Error('PKCS#11', error);
  } finally {
    token.close();
  }
}

function refuseAmbiguous(versions: VersionList): void {
  if (versions.ambiguous.length === 0) return;
  throw new KeysError(
    `more than one object of '${versions.key}' claims version ${versions.ambiguous.join(', ')}: the proxy refuses this key until only one remains (run list-versions)`,
  );
}

function checkKeyId(key: string): void {
  if (!KEY_ID.test(key)) throw new KeysError('--key must be 1-128 characters of A-Za-z0-9._-', 2);
}

function idText(id: Buffer | undefined): string | null {
  if (id === undefined || id.length === 0) return null;
  return /^[\x20-\x7e]+$/.test(id.toString('latin1')) ? id.toString('latin1') : `0x${id.toString('hex')}`;
}

/** pkcs11js messages start with the CKR_ name; they never hold the PIN. */
function pkcs11Text(error: unknown): string {
  return ckrOf(error) ?? errorText(error).split('\n')[0] ?? 'error';
}

function pkcs11Error(call: string, error: unknown): KeysError {
  const ckr = pkcs11Text(error);
  if (/^CKR_PIN_/.test(ckr)) return new KeysError(`the token refused the PIN (${ckr})`);
  return new KeysError(`${call} failed: ${ckr}`);
}

// ---------------------------------------------------------------------------------------------
// The command line.

const CONNECTION_HELP = `Connection (the options override --config):
  --config FILE        the proxy's JSON configuration: modulePath, libraryParameters, tokenLabel,
                       tokenSerial and pin from its hsm section
  --module PATH        the vendor's PKCS#11 library
  --library-parameters S
                       C_Initialize's library parameters, for a library that takes them (NSS
                       softoken: "configdir='sql:DIR' ... dbTokenDescription='LABEL'", docs/hsm.md)
  --token LABEL        the token's label
  --token-serial S     the token's serial number (with several tokens of one label)
  --pin-env VAR        the environment variable holding the crypto user's PIN (default
                       XKS_HSM_PIN; it overrides the config file's pin). There is no --pin:
                       a PIN on the command line shows in ps and in the shell history.`;

export const KEYS_HELP = {
  keys: `Usage: xks-proxy keys <create|create-test-keys|create-version|list-versions> [options]

External keys in the HSM: AES-256 secret keys whose CKA_LABEL is the externalKeyId.
  create            generate a new key, with any usage (encrypt, decrypt, both or none)
  create-test-keys  generate the keys AWS's XKS test client expects, and the health-check key
  create-version    generate the next version of a key (rotation)
  list-versions     the versions of a key

Every version of a key has its CKA_LABEL; version N > 1 has CKA_ID 'xks-v<N>:<label>'. The proxy
encrypts with the highest version and names it in the ciphertextMetadata (spec: Encrypt), so every
older version still decrypts what it made.

Rotation:
  1. keys create-version --config config.json --key KEYID
  2. after hsm.keyCacheSeconds (60 s by default) every proxy encrypts with the new version
  3. never destroy an older version while ciphertexts of it may exist: they would be lost

Run 'xks-proxy keys <command> --help' for the options.
`,
  create: `Usage: xks-proxy keys create --key KEYID [--usage encrypt,decrypt|encrypt|decrypt|none]
                              [--json] (--config FILE | --module PATH --token LABEL)
                              [--library-parameters S] [--token-serial S] [--pin-env VAR]

Generates a new key inside the HSM (version 1): AES-256 (CKM_AES_KEY_GEN), CKA_TOKEN, CKA_PRIVATE,
CKA_SENSITIVE, not CKA_EXTRACTABLE, no wrap/unwrap/sign/verify/derive, and the usage asked for.
Refuses a label the token already has (create-version makes a new version of it). Prints its
attributes, never key material.

  --key KEYID          the externalKeyId (the key's CKA_LABEL)
  --usage LIST         encrypt,decrypt (default), encrypt, decrypt, or none: GetKeyMetadata
                       reports it, and Encrypt and Decrypt need it (InvalidKeyUsageException)
  --json               print JSON
  -h, --help           this text

${CONNECTION_HELP}
`,
  'create-test-keys': `Usage: xks-proxy keys create-test-keys [--health-check-key LABEL] [--json]
                                        (--config FILE | --module PATH --token LABEL)
                                        [--library-parameters S] [--token-serial S] [--pin-env VAR]

Generates, in the HSM, the keys AWS's public XKS test client expects and the proxy's health-check
key, each as 'keys create' would: foo (encrypt, decrypt), encrypt_only_key, decrypt_only_key,
impotent_key (no usage), and the health-check key (encrypt, decrypt). Keys already there with that
usage are kept; one there with another usage is an error (the test client would fail on it).

  --health-check-key LABEL
                       the health-check key's label: the config's hsm.healthCheckKeyLabel, else
                       xks-health-check
  --json               print JSON
  -h, --help           this text

${CONNECTION_HELP}
`,
  'create-version': `Usage: xks-proxy keys create-version --key KEYID [--usage encrypt,decrypt] [--allow-new]
                                      [--json] (--config FILE | --module PATH --token LABEL)
                                      [--library-parameters S] [--token-serial S] [--pin-env VAR]

Generates the next version of a key inside the HSM: AES-256 (CKM_AES_KEY_GEN), CKA_TOKEN,
CKA_PRIVATE, CKA_SENSITIVE, not CKA_EXTRACTABLE, no wrap/unwrap/sign/verify/derive. Prints its
version and attributes, never key material. Run it once at a time per key: two runs at the same
moment could make the same version twice, which the proxy refuses until one is destroyed.

  --key KEYID          the externalKeyId (the keys' CKA_LABEL)
  --usage LIST         encrypt,decrypt (default) or decrypt: the current version's usage is the
                       key's usage (GetKeyMetadata), so a decrypt-only version stops Encrypt
                       (InvalidKeyUsageException) while older versions keep decrypting
  --allow-new          create version 1 when the token has no such key
  --json               print JSON
  -h, --help           this text

${CONNECTION_HELP}
`,
  'list-versions': `Usage: xks-proxy keys list-versions --key KEYID [--json]
                                     (--config FILE | --module PATH --token LABEL)
                                     [--library-parameters S] [--token-serial S] [--pin-env VAR]

Lists the versions of a key: number, CKA_ID, key spec, usage, sensitive/extractable, and which
one is current (the highest: what the proxy encrypts with). Exits 1 when a version number is
claimed by more than one object (the proxy refuses such a key) or there is no such key.

  --key KEYID          the externalKeyId (the keys' CKA_LABEL)
  --json               print JSON
  -h, --help           this text

${CONNECTION_HELP}
`,
} as const;

const CONNECTION_OPTIONS = {
  config: { type: 'string' },
  module: { type: 'string' },
  'library-parameters': { type: 'string' },
  token: { type: 'string' },
  'token-serial': { type: 'string' },
  'pin-env': { type: 'string' },
  key: { type: 'string' },
  json: { type: 'boolean' },
} as const;

const OPTIONS = {
  create: { ...CONNECTION_OPTIONS, usage: { type: 'string' } },
  'create-test-keys': { ...CONNECTION_OPTIONS, 'health-check-key': { type: 'string' } },
  'create-version': { ...CONNECTION_OPTIONS, usage: { type: 'string' }, 'allow-new': { type: 'boolean' } },
  'list-versions': CONNECTION_OPTIONS,
} as const;

/** The PIN never on the command line: ps and the shell history would show it. */
const REFUSED = {
  pin: 'give the PIN in an environment variable (--pin-env, default XKS_HSM_PIN) or the config file',
};

/** --key: required, and an externalKeyId. */
function keyOf(values: { key?: string | undefined }): string {
  if (values.key === undefined) throw new UsageError('--key is required');
  checkKeyId(values.key);
  return values.key;
}

interface ConnectionValues {
  config?: string | undefined;
  module?: string | undefined;
  'library-parameters'?: string | undefined;
  token?: string | undefined;
  'token-serial'?: string | undefined;
  'pin-env'?: string | undefined;
}

/**
 * The connection from the options, the config file and the environment, with the config's
 * health-check key when there is one; notes go to `io.err`.
 */
export async function resolveConnection(
  values: ConnectionValues,
  env: NodeJS.ProcessEnv,
  io: Output,
): Promise<Connection & { healthCheckKeyLabel?: string }> {
  const pinEnv = values['pin-env'] ?? DEFAULT_PIN_ENV;
  // The value is not repeated: a PIN given here by mistake must not be printed.
  if (!ENV_NAME.test(pinEnv)) throw new KeysError('--pin-env takes the name of an environment variable', 2);
  const envPin = env[pinEnv] || undefined;
  let hsm: {
    modulePath?: string;
    libraryParameters?: string;
    tokenLabel?: string;
    tokenSerial?: string;
    pin?: string;
    healthCheckKeyLabel?: string;
  } = {};
  if (values.config !== undefined) {
    let text: string;
    try {
      text = readFileSync(values.config, 'utf8');
    } catch (error) {
      throw new KeysError(
        `cannot read ${values.config}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
    let input: unknown;
    try {
      input = JSON.parse(text);
    } catch {
      // JSON.parse's message quotes the text, which holds the PIN.
      throw new KeysError(`${values.config} is not JSON`);
    }
    // Loaded only here: compiling the configuration schema is most of this command's start-up time.
    const { parseConfig } = await import('../functions/config.ts');
    try {
      // The proxy's own validation (its messages never hold values); the PIN variable wins, as in the proxy.
      const config = parseConfig(input, envPin === undefined ? {} : { XKS_HSM_PIN: envPin });
      hsm = config.hsm;
      if (config.hsm.fleet !== undefined) {
        io.err(
          "Note: the config has an HSM fleet; this uses the hsm section's token. The other HSMs need the same version: replicate it with the HSM's own tools (the key is not extractable)",
        );
      }
    } catch (error) {
      throw new KeysError((error as Error).message);
    }
  }
  const modulePath = values.module ?? hsm.modulePath;
  const libraryParameters = values['library-parameters'] ?? hsm.libraryParameters;
  const tokenLabel = values.token ?? (values['token-serial'] === undefined ? hsm.tokenLabel : undefined);
  const tokenSerial = values['token-serial'] ?? (values.token === undefined ? hsm.tokenSerial : undefined);
  if (modulePath === undefined) throw new KeysError('--module or --config is required', 2);
  if (tokenLabel === undefined && tokenSerial === undefined) {
    throw new KeysError('--token, --token-serial or --config is required', 2);
  }
  const pin = envPin ?? hsm.pin;
  if (pin === undefined) {
    const where = pinEnv === DEFAULT_PIN_ENV ? DEFAULT_PIN_ENV : 'the variable --pin-env names';
    throw new KeysError(
      `no PIN: ${where} is not set${values.config === undefined ? '' : ', and the config file has no hsm.pin'}`,
    );
  }
  const connection = { modulePath, libraryParameters, tokenLabel, tokenSerial, pin };
  return hsm.healthCheckKeyLabel === undefined
    ? connection
    : { ...connection, healthCheckKeyLabel: hsm.healthCheckKeyLabel };
}

/** --usage: a comma-separated list of encrypt and decrypt, or none (also given as ''). */
function parseUsage(text: string | undefined): Usage {
  if (text === undefined) return { encrypt: true, decrypt: true };
  const words = text
    .split(',')
    .map((w) => w.trim().toLowerCase())
    .filter((w) => w !== '');
  if (words.length === 0 || (words.length === 1 && words[0] === 'none')) {
    return { encrypt: false, decrypt: false };
  }
  if (words.some((w) => w !== 'encrypt' && w !== 'decrypt')) {
    throw new KeysError('--usage is a comma-separated list of encrypt and decrypt, or none', 2);
  }
  return { encrypt: words.includes('encrypt'), decrypt: words.includes('decrypt') };
}

const yes = (flag: boolean | null) => (flag === null ? '-' : String(flag));

function table(versions: KeyVersion[]): string[] {
  const rows = [
    ['VERSION', 'CKA_ID', 'KEY SPEC', 'USAGE', 'SENSITIVE', 'EXTRACTABLE', 'CURRENT'],
    ...versions.map((v) => [
      String(v.version),
      v.id ?? '-',
      v.keySpec,
      v.usage.join(',') || '-',
      yes(v.sensitive),
      yes(v.extractable),
      v.current ? 'yes' : '',
    ]),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) =>
    r
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd(),
  );
}

function attributes(v: KeyVersion): string[] {
  return [
    `  version            ${v.version}${v.current ? ' (current)' : ''}`,
    `  CKA_ID             ${v.id ?? '(none)'}`,
    `  key spec           ${v.keySpec}`,
    `  usage              ${v.usage.join(', ') || '(none)'}`,
    `  sensitive          ${yes(v.sensitive)}`,
    `  extractable        ${yes(v.extractable)}`,
    `  always sensitive   ${yes(v.alwaysSensitive)}`,
    `  never extractable  ${yes(v.neverExtractable)}`,
    `  generated in HSM   ${yes(v.local)}`,
  ];
}

async function createKeyCommand(
  values: Values<(typeof OPTIONS)['create']>,
  io: Output,
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const key = keyOf(values);
  const usage = parseUsage(values.usage);
  const { created, token } = createKey(await resolveConnection(values, env, io), key, usage);
  if (values.json) {
    io.out(JSON.stringify({ key: key, token, created }, null, 2));
  } else {
    io.out(`Created key '${key}' in token '${token}':`);
    for (const line of attributes(created)) io.out(line);
  }
  return 0;
}

async function createTestKeysCommand(
  values: Values<(typeof OPTIONS)['create-test-keys']>,
  io: Output,
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const healthCheckKey = values['health-check-key'];
  if (healthCheckKey !== undefined) checkKeyId(healthCheckKey);
  const connection = await resolveConnection(values, env, io);
  const result = createTestKeys(connection, healthCheckKey ?? connection.healthCheckKeyLabel);
  if (values.json) {
    io.out(JSON.stringify(result, null, 2));
  } else {
    io.out(`The XKS test client's keys in token '${result.token}':`);
    const width = Math.max(...result.keys.map((k) => k.label.length));
    for (const key of result.keys) {
      const usage = key.usage.join(',') || 'no usage';
      io.out(
        `  ${key.label.padEnd(width)}  AES_256 ${usage.padEnd(15)}  ${key.created ? 'created' : 'already there'}`,
      );
    }
  }
  return 0;
}

async function createVersionCommand(
  values: Values<(typeof OPTIONS)['create-version']>,
  io: Output,
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const key = keyOf(values);
  const usage = parseUsage(values.usage);
  const connection = await resolveConnection(values, env, io);
  const { created, list } = createVersion(connection, key, {
    ...usage,
    allowNew: values['allow-new'] === true,
  });
  if (values.json) {
    io.out(JSON.stringify({ key: list.key, token: list.token, created, versions: list.versions }, null, 2));
  } else {
    io.out(`Created version ${created.version} of key '${list.key}' in token '${list.token}':`);
    for (const line of attributes(created)) io.out(line);
    if (created.version > 1) {
      io.out(
        'Proxies encrypt with it once their key cache expires (hsm.keyCacheSeconds, 60 s by default); older versions still decrypt.',
      );
    }
  }
  if (!usage.encrypt) {
    io.err(
      `Note: the current version of '${list.key}' cannot encrypt: Encrypt fails with InvalidKeyUsageException until a newer version can`,
    );
  }
  return 0;
}

async function listVersionsCommand(
  values: Values<(typeof OPTIONS)['list-versions']>,
  io: Output,
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const key = keyOf(values);
  const result = listVersions(await resolveConnection(values, env, io), key);
  if (result.versions.length === 0) {
    throw new KeysError(`token '${result.token}' has no secret key labelled '${result.key}'`);
  }
  if (values.json) {
    io.out(JSON.stringify(result, null, 2));
  } else {
    const n = result.versions.length;
    io.out(`Key '${result.key}' in token '${result.token}': ${n} version${n === 1 ? '' : 's'}`);
    for (const line of table(result.versions)) io.out(line);
  }
  if (result.versions.length > MAX_VERSIONS) {
    io.err(
      `Note: the proxy looks at ${MAX_VERSIONS} objects of a label at most: it may not see the current version`,
    );
  }
  refuseAmbiguous(result);
  return 0;
}

/** `xks-proxy keys ...`, the PIN from `env`. */
export function keysCommands(env: NodeJS.ProcessEnv = process.env): Group {
  const keysCommand = <N extends keyof typeof OPTIONS>(
    name: N,
    run: (values: Values<(typeof OPTIONS)[N]>, io: Output, env: NodeJS.ProcessEnv) => Promise<number>,
  ) =>
    command({
      help: KEYS_HELP[name],
      options: OPTIONS[name],
      refused: REFUSED,
      run: (values, _, io) => run(values, io, env),
    });
  return {
    help: KEYS_HELP.keys,
    commands: {
      create: keysCommand('create', createKeyCommand),
      'create-test-keys': keysCommand('create-test-keys', createTestKeysCommand),
      'create-version': keysCommand('create-version', createVersionCommand),
      'list-versions': keysCommand('list-versions', listVersionsCommand),
    },
  };
}

/** Runs `xks-proxy keys ...` (argv without 'keys'); returns the exit code. */
export function keysMain(
  argv: readonly string[],
  io: Output = STDIO,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return runCli(keysCommands(env), argv, io, ['keys']);
}

if (isEntryPoint(import.meta)) {
  process.exitCode = await keysMain(process.argv.slice(2));
}
