// The revocation switch: the customer cuts AWS KMS off from a key store, or from one key, without
// touching KMS, the deployment or the HSM (docs/security.md, Revocation). The switch is a small JSON
// document in a Secrets Manager secret (deployed: changed under IAM, each change in CloudTrail) or a
// local file:
//
//   {"revoked": ["payments", "payments/payments-key-1", "*"]}
//
// An entry names a key store, a key of a key store (`<keystore>/<externalKeyId>`), or every key store
// (`*`). A revoked key answers GetKeyMetadata with keyStatus DISABLED and Encrypt and Decrypt with
// InvalidStateException (spec: Error codes, "the specified external key or key store is disabled");
// in a revoked key store every key does. GetHealthStatus is unchanged: it reports the HSMs.
import { KEY_ID, NAME } from './ids.ts';

/** The switch's document; other fields are kept by the CLI and ignored here. */
export interface RevocationDocument {
  revoked: string[];
  [field: string]: unknown;
}

export const ALL_KEYSTORES = '*';
/** Far above any real list, far below what would slow a lookup or a log line down. */
const MAX_ENTRIES = 10_000;

/** The document in `text`, checked; messages name `where` and the rule, never the text. */
export function parseRevocation(text: string, where: string): RevocationDocument {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${where}: the revocation document is not JSON`);
  }
  const revoked = (value as { revoked?: unknown } | null)?.revoked;
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Array.isArray(revoked)) {
    throw new Error(`${where}: the revocation document must be {"revoked": [...]}`);
  }
  if (revoked.length > MAX_ENTRIES) throw new Error(`${where}: more than ${MAX_ENTRIES} revocations`);
  for (const entry of revoked) {
    if (typeof entry !== 'string' || !isEntry(entry)) {
      throw new Error(
        `${where}: each revocation is "*", "<keystore>" or "<keystore>/<externalKeyId>" (A-Z a-z 0-9 . - _)`,
      );
    }
  }
  return value as RevocationDocument;
}

/** `*`, `<keystore>` or `<keystore>/<externalKeyId>`. */
function isEntry(entry: string): boolean {
  if (entry === ALL_KEYSTORES) return true;
  const [keystore = '', keyId, ...rest] = entry.split('/');
  return rest.length === 0 && NAME.test(keystore) && (keyId === undefined || KEY_ID.test(keyId));
}

/** One entry's change, as the proxy logs and audits it. */
export interface RevocationChange {
  entry: string;
  revoked: boolean;
}

export interface RevocationSource {
  /** A local file, read again when it changes (looked at once a second at most). */
  file?: string | undefined;
  /** A Secrets Manager secret, read again when the value in hand is older than cacheSeconds. */
  secretArn?: string | undefined;
  cacheSeconds: number;
}

export interface RevocationHooks {
  readSecret(arn: string): Promise<string>;
  readFile(path: string): { text: string; version: string };
  /** Every change seen after the first read (and, for the first read, what it revokes). */
  onChange(changes: RevocationChange[], source: string): void;
  /** A read that failed after the first one: the switch keeps what it had. */
  onError(error: unknown, source: string): void;
}

/**
 * The switch as the proxy holds it. Requests ask `reason`; the middleware calls `refreshIfDue`
 * before each request, which reads the source again once the value in hand is older than its
 * bound. A Lambda environment runs no timers while frozen: after a thaw the first request finds
 * the value old and waits for one read (docs/security.md, Revocation, what it costs).
 */
export class RevocationSwitch {
  readonly #source: RevocationSource;
  readonly #hooks: RevocationHooks;
  readonly #name: string;
  readonly #maxAgeMs: number;
  #entries: ReadonlySet<string> = new Set();
  #readAt = Number.NEGATIVE_INFINITY;
  #fileVersion: string | undefined;
  #inflight: Promise<void> | undefined;

  constructor(source: RevocationSource, hooks: RevocationHooks) {
    this.#source = source;
    this.#hooks = hooks;
    this.#name =
      source.file !== undefined ? `file:${source.file}` : `secretsmanager:${source.secretArn as string}`;
    // A file costs a stat: looked at once a second at most (sooner when cacheSeconds says so).
    const seconds = source.file !== undefined ? Math.min(1, source.cacheSeconds) : source.cacheSeconds;
    this.#maxAgeMs = seconds * 1000;
  }

  /** Where the switch is read from, for logs and audit records. */
  get source(): string {
    return this.#name;
  }

  /** The first read, at start-up: a switch that cannot be read stops the start. */
  async load(): Promise<void> {
    await this.#read(Date.now(), true);
  }

  /** A promise only when a secret is due to be read again: otherwise nothing waits. */
  refreshIfDue(now = Date.now()): Promise<void> | undefined {
    if (now - this.#readAt < this.#maxAgeMs) return undefined;
    if (this.#source.file !== undefined) {
      void this.#read(now, false);
      return undefined;
    }
    this.#inflight ??= this.#read(now, false).finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  /**
   * Why `keyId` of `keystore` is cut off, or undefined when it is not. Without `keyId`, whether the
   * key store itself is.
   */
  reason(keystore: string, keyId?: string): string | undefined {
    const entries = this.#entries;
    if (entries.size === 0) return undefined;
    if (entries.has(ALL_KEYSTORES) || entries.has(keystore)) return 'The external key store is revoked';
    if (keyId !== undefined && entries.has(`${keystore}/${keyId}`)) return 'The external key is revoked';
    return undefined;
  }

  async #read(now: number, first: boolean): Promise<void> {
    let document: RevocationDocument;
    try {
      if (this.#source.file !== undefined) {
        // The stat and the read are synchronous: the request goes on without yielding.
        const { text, version } = this.#hooks.readFile(this.#source.file);
        this.#readAt = now;
        if (version === this.#fileVersion) return;
        document = parseRevocation(text, this.#name);
        this.#fileVersion = version;
      } else {
        document = parseRevocation(
          await this.#hooks.readSecret(this.#source.secretArn as string),
          this.#name,
        );
        this.#readAt = Date.now();
      }
    } catch (error) {
      if (first) throw error;
      this.#hooks.onError(error, this.#name);
      // Keep what is known; try again in a second, not on every request.
      this.#readAt = Date.now() - this.#maxAgeMs + 1000;
      return;
    }
    const next = new Set(document.revoked);
    const changes: RevocationChange[] = [];
    for (const entry of next) if (!this.#entries.has(entry)) changes.push({ entry, revoked: true });
    for (const entry of this.#entries) if (!next.has(entry)) changes.push({ entry, revoked: false });
    this.#entries = next;
    if (changes.length > 0) this.#hooks.onChange(changes, this.#name);
  }
}
