// `xks-proxy credentials`: SigV4 credentials for key stores (spec: Appendix A; "SigV4 credentials
// rotation"; "XKS proxy configuration in AWS KMS console"), and the stores that hold them: a local
// JSON file or a Secrets Manager secret (bin/revocation.ts keeps its switch in the same kinds).
//
//   npm run xks-proxy -- credentials create --store secretsmanager:xks/prod/payments \
//     --keystore-path /keystores/payments --console-file payments.json
//
// Secrets are never printed, logged or put in an error message, except with --print-secret.
import { randomBytes, randomInt } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { type Credential, DEMO_CREDENTIAL, parseCredentialsSecret } from '../functions/config.ts';
import { ACCESS_KEY_ID, PATH_PREFIX, SECRET_ACCESS_KEY } from '../functions/ids.ts';
import { CliError, command, type Group, UsageError } from './cli.ts';

/** The access key id alphabet of Appendix A: RFC 4648 Base32. */
export const ACCESS_KEY_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** 26 characters: 130 random bits, in the middle of the allowed 20-30. */
export const ACCESS_KEY_ID_LENGTH = 26;
/** 32 random bytes: 256 bits, Base64 in 44 characters (Appendix A: `openssl rand 32 | base64`). */
export const SECRET_BYTES = 32;
/** What KMS appends to a key store's path prefix (spec: XksProxyUriPath, version 1). */
export const URI_PATH_SUFFIX = '/kms/xks/v1';

/**
 * A fresh credential. The access key id and the secret come from separate draws of the CSPRNG, so
 * the id reveals nothing about the secret (Appendix A). randomInt draws each id character without
 * modulo bias.
 */
export function generateCredential(): Credential {
  let accessKeyId = '';
  for (let i = 0; i < ACCESS_KEY_ID_LENGTH; i++) {
    accessKeyId += ACCESS_KEY_ID_ALPHABET[randomInt(ACCESS_KEY_ID_ALPHABET.length)];
  }
  return { accessKeyId, secretAccessKey: randomBytes(SECRET_BYTES).toString('base64') };
}

/** True for the public demo credential of the local quick start, or either of its halves. */
export function isDemoCredential(credential: Credential): boolean {
  return (
    credential.accessKeyId === DEMO_CREDENTIAL.accessKeyId ||
    credential.secretAccessKey === DEMO_CREDENTIAL.secretAccessKey
  );
}

/** What a store holds: the format the proxy reads, `{"credentials": [...]}`, other fields kept. */
export interface CredentialsDocument {
  credentials: Credential[];
  [field: string]: unknown;
}

/** A JSON document in a local file or a Secrets Manager secret. */
export interface Store<Document> {
  /** `file:/absolute/path` or `secretsmanager:id`, for messages. */
  readonly description: string;
  /** A local file: the only place the public demo credential may go. */
  readonly local: boolean;
  /** The stored document; undefined when the file or the secret does not exist yet. */
  read(): Promise<Document | undefined>;
  /** Replaces the stored document (creating the file or secret when read() found none). */
  write(document: Document): Promise<void>;
}

/** Where a key store's credentials live: a local file or a Secrets Manager secret. */
export type CredentialStore = Store<CredentialsDocument>;

/** A kind of document a store holds: how it is read and written, each way checked. */
export interface StoreFormat<Document> {
  /** The description of a secret the CLI creates for it. */
  purpose: string;
  /** Throws CliError, naming the store, never quoting the text. */
  parse(store: string, text: string): Document;
  serialize(store: string, document: Document): string;
}

/** Parses stored text: the proxy's own parser, except that an empty list (after `remove --force`) is allowed. */
function parseDocument(store: string, text: string): CredentialsDocument {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // JSON.parse's message would quote the text, which holds secrets.
    throw new CliError(`${store} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CliError(`${store} is not a JSON object`);
  }
  const document = value as CredentialsDocument;
  if (Array.isArray(document.credentials) && document.credentials.length === 0) return document;
  try {
    // An empty environment: the rule against demo credentials in Lambda is not the CLI's concern.
    document.credentials = parseCredentialsSecret(store, text, {});
  } catch (error) {
    throw new CliError((error as Error).message);
  }
  return document;
}

/** Serializes a document, checking first that the proxy will accept it. */
function serialize(store: string, document: CredentialsDocument): string {
  const text = `${JSON.stringify(document, null, 2)}\n`;
  if (document.credentials.length > 0) {
    try {
      parseCredentialsSecret(store, text, {});
    } catch (error) {
      throw new CliError((error as Error).message);
    }
  }
  return text;
}

/** The credentials a key store's credentialsFile or credentialsSecretArn holds. */
export const CREDENTIALS_FORMAT: StoreFormat<CredentialsDocument> = {
  purpose: 'XKS proxy: SigV4 credentials of a key store',
  parse: parseDocument,
  serialize,
};

/**
 * Writes `text` to `path` atomically with mode 0600: a temporary file in the same directory,
 * flushed, then renamed over the target. Readers (the local proxy polls its credentials file) see
 * the old content or the new one, never a part.
 */
export function writeFileAtomic(path: string, text: string): void {
  const temp = resolve(
    dirname(path),
    `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`,
  );
  // 'wx': never follow or reuse something already there.
  const fd = openSync(temp, 'wx', 0o600);
  try {
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // The umask may have taken bits away; 0600 exactly, whatever it is.
    chmodSync(temp, 0o600);
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  try {
    // Make the rename itself durable; not every file system allows fsync on a directory.
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch {
    // Best effort.
  }
}

/** A local JSON file: `{"credentials": [...]}` (a key store's `credentialsFile`), or another format. */
export class FileStore<Document = CredentialsDocument> implements Store<Document> {
  readonly path: string;
  readonly description: string;
  readonly local = true;
  readonly #format: StoreFormat<Document>;
  /** Set when the existing file was readable by others than its owner (rewriting it fixes that). */
  widePermissions = false;

  constructor(path: string, format?: StoreFormat<Document>) {
    this.path = resolve(path);
    this.description = `file:${this.path}`;
    this.#format = format ?? (CREDENTIALS_FORMAT as unknown as StoreFormat<Document>);
  }

  async read(): Promise<Document | undefined> {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
      this.widePermissions = (statSync(this.path).mode & 0o077) !== 0;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      throw new CliError(`cannot read ${this.description}: ${code ?? 'error'}`);
    }
    return this.#format.parse(this.description, text);
  }

  async write(document: Document): Promise<void> {
    const text = this.#format.serialize(this.description, document);
    try {
      writeFileAtomic(this.path, text);
    } catch (error) {
      throw new CliError(
        `cannot write ${this.description}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
  }
}

/** A Secrets Manager secret (a key store's `credentialsSecretArn`, or another format), by name or ARN. */
export class SecretsManagerStore<Document = CredentialsDocument> implements Store<Document> {
  readonly secretId: string;
  readonly description: string;
  readonly local = false;
  /** The ARN of the secret write() created, if it created one. */
  createdArn: string | undefined;
  readonly client: SecretsManagerClient;
  readonly #format: StoreFormat<Document>;
  #exists = true;

  constructor(secretId: string, client: SecretsManagerClient, format?: StoreFormat<Document>) {
    this.secretId = secretId;
    this.description = `secretsmanager:${secretId}`;
    this.client = client;
    this.#format = format ?? (CREDENTIALS_FORMAT as unknown as StoreFormat<Document>);
  }

  async read(): Promise<Document | undefined> {
    let text: string | undefined;
    try {
      const output = await this.client.send(new GetSecretValueCommand({ SecretId: this.secretId }));
      text = output.SecretString;
    } catch (error) {
      if (errorName(error) === 'ResourceNotFoundException') {
        // Either no such secret, or one with no current value: write() tells them apart.
        this.#exists = false;
        return undefined;
      }
      throw awsError(`cannot read ${this.description}`, error);
    }
    this.#exists = true;
    if (text === undefined) throw new CliError(`${this.description} has no SecretString`);
    return this.#format.parse(this.description, text);
  }

  async write(document: Document): Promise<void> {
    const SecretString = this.#format.serialize(this.description, document);
    if (!this.#exists) {
      if (this.secretId.startsWith('arn:')) {
        throw new CliError(
          `${this.description} does not exist; to create a secret, give its name, not an ARN`,
        );
      }
      try {
        const created = await this.client.send(
          new CreateSecretCommand({
            Name: this.secretId,
            Description: this.#format.purpose,
            SecretString,
          }),
        );
        this.#exists = true;
        this.createdArn = created.ARN;
        return;
      } catch (error) {
        // The secret exists without a current value: give it one.
        if (errorName(error) !== 'ResourceExistsException')
          throw awsError(`cannot create ${this.description}`, error);
      }
    }
    try {
      await this.client.send(new PutSecretValueCommand({ SecretId: this.secretId, SecretString }));
    } catch (error) {
      throw awsError(`cannot write ${this.description}`, error);
    }
  }
}

function errorName(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? (error as { name?: string }).name : undefined;
}

/** AWS SDK errors name the problem (AccessDenied, region, network), never the secret value. */
function awsError(what: string, error: unknown): CliError {
  const message = error instanceof Error ? error.message : String(error);
  return new CliError(`${what}: ${errorName(error) ?? 'Error'}: ${message}`);
}

export interface StoreOptions {
  /** For Secrets Manager: the region; else the ARN's, then AWS_REGION, then AWS_DEFAULT_REGION. */
  region?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

/** A store from `file:PATH` or `secretsmanager:NAME_OR_ARN`, of credentials or another format. */
export function openStore(spec: string, options?: StoreOptions): CredentialStore;
export function openStore<Document>(
  spec: string,
  options: StoreOptions,
  format: StoreFormat<Document>,
): Store<Document>;
export function openStore<Document>(
  spec: string,
  options: StoreOptions = {},
  format?: StoreFormat<Document>,
): Store<Document> {
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? '' : spec.slice(0, colon);
  const target = spec.slice(colon + 1);
  if (kind === 'file' && target !== '') return new FileStore(target, format);
  if (kind === 'secretsmanager' && target !== '') {
    const env = options.env ?? process.env;
    const arnRegion = /^arn:[^:]+:secretsmanager:([^:]+):/.exec(target)?.[1];
    if (options.region !== undefined && arnRegion !== undefined && options.region !== arnRegion) {
      throw new CliError(`--region ${options.region} differs from the secret ARN's region ${arnRegion}`, 2);
    }
    const region = options.region ?? arnRegion ?? (env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined);
    const client = new SecretsManagerClient(region === undefined ? {} : { region });
    return new SecretsManagerStore(target, client, format);
  }
  throw new CliError(`--store must be file:PATH or secretsmanager:NAME_OR_ARN, not '${spec}'`, 2);
}

/**
 * Adds a credential to a store, after the ones it has (rotation step 1: the proxy then accepts old
 * and new). Refuses an invalid credential, an access key id or secret already there, and the
 * public demo credential anywhere but a local file.
 */
export async function addCredential(store: CredentialStore, credential: Credential): Promise<Credential[]> {
  if (!ACCESS_KEY_ID.test(credential.accessKeyId)) {
    throw new CliError('the access key id must be 20-30 characters of A-Z and 2-7');
  }
  if (!SECRET_ACCESS_KEY.test(credential.secretAccessKey)) {
    throw new CliError('the secret access key must be 43-64 characters of A-Za-z0-9+/=');
  }
  if (!store.local && isDemoCredential(credential)) {
    throw new CliError(`the public demo credential is for local files only, not ${store.description}`);
  }
  const document = (await store.read()) ?? { credentials: [] };
  if (document.credentials.some((c) => c.accessKeyId === credential.accessKeyId)) {
    throw new CliError(`access key id ${credential.accessKeyId} is already in ${store.description}`);
  }
  if (document.credentials.some((c) => c.secretAccessKey === credential.secretAccessKey)) {
    throw new CliError(`that secret access key is already in ${store.description}`);
  }
  const credentials = [...document.credentials, { ...credential }];
  await store.write({ ...document, credentials });
  return credentials;
}

/** The access key ids in a store, oldest first. */
export async function listCredentials(store: CredentialStore): Promise<string[]> {
  const document = await store.read();
  if (document === undefined) throw new CliError(`${store.description} does not exist`);
  return document.credentials.map((c) => c.accessKeyId);
}

/**
 * Removes a credential (rotation step 4, once KMS signs with the new one only). Refuses to remove
 * the last one unless `force`: the proxy refuses a store without credentials.
 */
export async function removeCredential(
  store: CredentialStore,
  accessKeyId: string,
  force = false,
): Promise<Credential[]> {
  const document = await store.read();
  if (document === undefined) throw new CliError(`${store.description} does not exist`);
  const credentials = document.credentials.filter((c) => c.accessKeyId !== accessKeyId);
  if (credentials.length === document.credentials.length) {
    throw new CliError(`access key id ${accessKeyId} is not in ${store.description}`);
  }
  if (credentials.length === 0 && !force) {
    throw new CliError(
      `${accessKeyId} is the last credential in ${store.description}: the proxy does not accept a store without credentials (--force to remove it anyway)`,
    );
  }
  await store.write({ ...document, credentials });
  return credentials;
}

/** The KMS console's configuration file (spec: "XKS proxy configuration in AWS KMS console"). */
export interface ConsoleConfig {
  XksProxyUriPath: string;
  XksProxyAuthenticationCredential: { AccessKeyId: string; RawSecretAccessKey: string };
}

/** Checks a key store path prefix: '' or `/a/b`, with the URI path at most 128 characters. */
export function checkKeystorePath(keystorePath: string): void {
  if (!PATH_PREFIX.test(keystorePath)) {
    throw new CliError(`--keystore-path must be '' or /segment/... of A-Za-z0-9_-, not '${keystorePath}'`, 2);
  }
  if (keystorePath.length + URI_PATH_SUFFIX.length > 128) {
    throw new CliError('--keystore-path is too long: XksProxyUriPath is at most 128 characters', 2);
  }
}

export function consoleConfig(keystorePath: string, credential: Credential): ConsoleConfig {
  checkKeystorePath(keystorePath);
  return {
    XksProxyUriPath: `${keystorePath}${URI_PATH_SUFFIX}`,
    XksProxyAuthenticationCredential: {
      AccessKeyId: credential.accessKeyId,
      RawSecretAccessKey: credential.secretAccessKey,
    },
  };
}

/** Writes the console file, mode 0600: it holds the secret. */
export function writeConsoleFile(path: string, config: ConsoleConfig): void {
  try {
    writeFileAtomic(resolve(path), `${JSON.stringify(config, null, 2)}\n`);
  } catch (error) {
    throw new CliError(`cannot write ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The command line.

function requireStore(value: string | undefined, region: string | undefined): CredentialStore {
  if (value === undefined) throw new UsageError('--store is required');
  return openStore(value, { region });
}

function plural(n: number): string {
  return `${n} credential${n === 1 ? '' : 's'}`;
}

const CREATE = command({
  help: `Usage: xks-proxy credentials create [--store STORE] [--keystore-path PREFIX]
                                 [--console-file FILE] [--print-secret] [--region REGION]

Generates a credential: a 26-character access key id of A-Z2-7 and a secret access key of 256
random bits in Base64 (44 characters). Prints the access key id, never the secret unless asked.

  --store file:PATH              add it to this local file (created with mode 0600 if missing)
  --store secretsmanager:ID      add it to this secret (created if missing, when ID is a name);
                                 the credentials already there are kept
  --keystore-path PREFIX         the key store's path prefix, what comes before /kms/xks/v1
                                 ('' or /a/b); needed with --console-file
  --console-file FILE            write the KMS console's configuration file (mode 0600; it holds
                                 the secret: delete it after the upload)
  --print-secret                 also print the secret access key
  --region REGION                Secrets Manager's region (default: the ARN's, AWS_REGION,
                                 AWS_DEFAULT_REGION, then the AWS profile's)
  -h, --help                     this text

Without --store the credential is stored nowhere: give --console-file or --print-secret.
`,
  options: {
    store: { type: 'string' },
    'keystore-path': { type: 'string' },
    'console-file': { type: 'string' },
    'print-secret': { type: 'boolean' },
    region: { type: 'string' },
  },
  async run(options, _, io) {
    const keystorePath = options['keystore-path'];
    const consoleFile = options['console-file'];
    if (keystorePath !== undefined) checkKeystorePath(keystorePath);
    if (consoleFile !== undefined && keystorePath === undefined) {
      throw new UsageError("--console-file needs --keystore-path (the key store path prefix, or '')");
    }
    const store =
      options.store === undefined ? undefined : openStore(options.store, { region: options.region });
    if (store === undefined && consoleFile === undefined && !options['print-secret']) {
      throw new UsageError(
        'the credential would be stored nowhere: give --store, --console-file or --print-secret',
      );
    }
    if (consoleFile !== undefined) {
      // Before anything is stored: a mistake here must not leave a credential KMS never gets.
      if (store instanceof FileStore && samePath(store.path, resolve(consoleFile))) {
        throw new UsageError('--console-file must not be the credentials file');
      }
      if (!isDirectory(dirname(resolve(consoleFile)))) {
        throw new UsageError(`cannot write ${consoleFile}: no such directory`);
      }
    }

    const credential = generateCredential();
    if (store !== undefined) {
      const credentials = await addCredential(store, credential);
      io.out(`Access key id: ${credential.accessKeyId}`);
      io.out(`Added to ${store.description} (${plural(credentials.length)}, the new one last)`);
      if (store instanceof SecretsManagerStore && store.createdArn !== undefined) {
        io.out(`Created the secret ${store.createdArn}`);
      }
      if (store instanceof FileStore && store.widePermissions) {
        io.err(`Note: ${store.path} was readable by others; it is now mode 0600`);
      }
    } else {
      io.out(`Access key id: ${credential.accessKeyId}`);
      io.err('Not stored in any key store: add it to the proxy configuration yourself');
    }
    if (keystorePath !== undefined) io.out(`XksProxyUriPath: ${keystorePath}${URI_PATH_SUFFIX}`);
    if (consoleFile !== undefined && keystorePath !== undefined) {
      writeConsoleFile(consoleFile, consoleConfig(keystorePath, credential));
      io.out(
        `KMS console file: ${resolve(consoleFile)} (mode 0600; it holds the secret: delete it after the upload)`,
      );
    }
    if (options['print-secret']) io.out(`Secret access key: ${credential.secretAccessKey}`);
    return 0;
  },
});

const LIST = command({
  help: `Usage: xks-proxy credentials list --store STORE [--region REGION]

Prints the access key ids in the store, one a line, oldest first. Never the secrets.

  --store file:PATH | secretsmanager:ID
  --region REGION                Secrets Manager's region
  -h, --help                     this text
`,
  options: { store: { type: 'string' }, region: { type: 'string' } },
  async run(options, _, io) {
    for (const id of await listCredentials(requireStore(options.store, options.region))) io.out(id);
    return 0;
  },
});

const REMOVE = command({
  help: `Usage: xks-proxy credentials remove --store STORE --access-key-id ID [--force] [--region REGION]

Removes a credential: the last step of a rotation, once KMS signs with the new credential only.
KMS requests signed with it fail once the proxy has read the store again.

  --store file:PATH | secretsmanager:ID
  --access-key-id ID             the credential to remove
  --force                        remove it even when it is the last one: the store then holds
                                 no credential, which the proxy does not accept (a running
                                 proxy keeps the credentials it had; a new one fails to start)
  --region REGION                Secrets Manager's region
  -h, --help                     this text
`,
  options: {
    store: { type: 'string' },
    'access-key-id': { type: 'string' },
    force: { type: 'boolean' },
    region: { type: 'string' },
  },
  async run(options, _, io) {
    const accessKeyId = options['access-key-id'];
    if (accessKeyId === undefined) throw new UsageError('--access-key-id is required');
    const store = requireStore(options.store, options.region);
    const credentials = await removeCredential(store, accessKeyId, options.force === true);
    io.out(`Removed ${accessKeyId} from ${store.description} (${plural(credentials.length)} left)`);
    return 0;
  },
});

/** `xks-proxy credentials create|list|remove`. */
export const CREDENTIALS: Group = {
  help: `Usage: xks-proxy credentials <create|list|remove> [options]

A key store's SigV4 credentials, which KMS signs its requests with (spec: Appendix A), live in a
store: a local JSON file (file:PATH, a key store's credentialsFile) or a Secrets Manager secret
(secretsmanager:NAME_OR_ARN, a key store's credentialsSecretArn), both holding
{"credentials":[{"accessKeyId":"...","secretAccessKey":"..."}, ...]}.

Rotation (spec: "SigV4 credentials rotation", docs/deploy.md section 9):
  1. credentials create --store S --keystore-path P --console-file new.json   (old and new accepted)
  2. give KMS the new credential (UpdateCustomKeyStore, or the console with new.json)
  3. wait until KMS signs with the new access key id only
  4. credentials remove --store S --access-key-id OLD_ID

Run 'xks-proxy credentials <command> --help' for the options of each.
`,
  commands: { create: CREATE, list: LIST, remove: REMOVE },
};

function samePath(a: string, b: string): boolean {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  return real(a) === real(b);
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
