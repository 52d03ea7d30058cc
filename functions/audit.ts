// The audit trail (spec: Logging: "appropriate measures must be used to ensure the integrity of
// the logs"): one audit record per request, in the request's log line, chained by a keyed MAC.
// Each runtime (each Lambda environment) starts a chain with a start marker; every record carries
// its HMAC-SHA-256 under the audit key and the MAC of the one before it, so a removed, altered,
// inserted or reordered record breaks the chain, and `xks-proxy audit verify` finds where. Without
// the key, nobody who can rewrite the logs can compute the MACs of a changed chain (docs/security.md,
// The audit trail). Records never hold plaintext, AAD, keys, PINs or secrets: only who asked what,
// with which key, and what happened.
import { createHmac, randomUUID } from 'node:crypto';

/** What an audit record says about a request. */
export interface AuditFields {
  operation?: string;
  kmsRequestId?: string;
  /** For requests refused before their signature was checked: what the body claimed. */
  unverifiedKmsRequestId?: string;
  kmsOperation?: string;
  keystore?: string;
  keyId?: string;
  keyVersion?: number;
  /** requestMetadata.awsPrincipalArn. */
  principal?: string;
  sourceVpc?: string;
  sourceVpce?: string;
  /** The SigV4 access key id KMS signed with (not a secret). */
  accessKeyId?: string;
  /** Secondary authorization: ALLOW or DENY, and the policies that decided. */
  decision?: string;
  policyIds?: string[];
  outcome?: 'success' | 'error';
  statusCode?: number;
  errorName?: string;
  /** The HSM that served the request. */
  hsm?: string;
  latencyMs?: number;
  /** A revocation record: whether the key store (or its key `keyId`) is now revoked, and from where. */
  revoked?: boolean;
  source?: string;
}

export interface AuditRecord extends AuditFields {
  /** 'start' for a chain's first record; 'request' for a request; 'revocation' for a change of it. */
  type: 'start' | 'request' | 'revocation';
  /** The chain (one per runtime); random. */
  chain: string;
  seq: number;
  time: string;
  /** The previous record's MAC; 64 zeros for the start marker. */
  prev: string;
  /** HMAC-SHA-256 (hex) under the audit key of this record without `mac`, in canonical JSON. */
  mac: string;
}

/** Audit keys are at least this long (the HMAC-SHA-256 output, RFC 2104 section 3). */
export const AUDIT_KEY_BYTES = 32;

/**
 * The audit key in a key file or secret: at least 32 bytes as hex (`openssl rand -hex 32`), plain
 * or as `{"key": "<hex>"}`. Messages never quote the text.
 */
export function parseAuditKey(text: string, where: string): Buffer {
  let value = text.trim();
  try {
    const parsed: unknown = JSON.parse(value);
    if (
      typeof parsed === 'object' &&
      parsed !== null &&
      typeof (parsed as { key?: unknown }).key === 'string'
    ) {
      value = (parsed as { key: string }).key.trim();
    }
  } catch {
    // Not JSON: the text is the key itself.
  }
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(value) || value.length < AUDIT_KEY_BYTES * 2) {
    throw new Error(
      `${where}: the audit key must be at least ${AUDIT_KEY_BYTES} bytes of hex (openssl rand -hex 32)`,
    );
  }
  return Buffer.from(value, 'hex');
}

export const GENESIS = '0'.repeat(64);

/** JSON with object keys sorted, so that the hash does not depend on key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    let text = '';
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v === undefined) continue;
      text += `${text === '' ? '{' : ','}${JSON.stringify(key)}:${canonical(v)}`;
    }
    return text === '' ? '{}' : `${text}}`;
  }
  return JSON.stringify(value);
}

/**
 * Every key a record written here can have, in canonical (sorted) order: the records this process
 * writes are hashed without sorting keys each time (canonicalRecord); macOf, which checks any
 * record read back, sorts.
 */
const RECORD_KEYS = [
  'accessKeyId',
  'chain',
  'decision',
  'errorName',
  'hsm',
  'keyId',
  'keyVersion',
  'keystore',
  'kmsOperation',
  'kmsRequestId',
  'latencyMs',
  'operation',
  'outcome',
  'policyIds',
  'prev',
  'principal',
  'revoked',
  'seq',
  'source',
  'sourceVpc',
  'sourceVpce',
  'statusCode',
  'time',
  'type',
  'unverifiedKmsRequestId',
] as const;
// A field added to AuditRecord but not above would be logged yet left out of the MAC: refused here.
type Unlisted = Exclude<keyof Omit<AuditRecord, 'mac'>, (typeof RECORD_KEYS)[number]>;
const everyKeyListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyKeyListed;

/** canonical() of a record written here, its keys taken in RECORD_KEYS' order. */
function canonicalRecord(record: Omit<AuditRecord, 'mac'>): string {
  let text = '';
  for (const key of RECORD_KEYS) {
    const value = record[key];
    if (value === undefined) continue;
    text += `${text === '' ? '{' : ','}"${key}":${canonical(value)}`;
  }
  return `${text}}`;
}

/** The MAC a record must carry under `key`: HMAC-SHA-256 of its canonical JSON without `mac`. */
export function macOf(record: Omit<AuditRecord, 'mac'> | AuditRecord, key: Buffer): string {
  const { mac: _ignored, ...rest } = record as AuditRecord;
  return createHmac('sha256', key).update(canonical(rest)).digest('hex');
}

export class AuditChain {
  readonly id: string;
  readonly #key: Buffer;
  #seq = 0;
  #prev = GENESIS;
  #started = false;

  constructor(key: Buffer, id: string = randomUUID()) {
    if (key.length < AUDIT_KEY_BYTES)
      throw new Error(`the audit key must be at least ${AUDIT_KEY_BYTES} bytes`);
    this.#key = key;
    this.id = id;
  }

  /** The chain's start marker: log it once, before any request record. */
  start(now = new Date()): AuditRecord {
    if (this.#started) throw new Error('the audit chain has started already');
    this.#started = true;
    return this.#append('start', {}, now);
  }

  /** The next request's record (or, with `type` 'revocation', a change of the revocation switch). */
  next(fields: AuditFields, now = new Date(), type: 'request' | 'revocation' = 'request'): AuditRecord {
    if (!this.#started) throw new Error('log the audit chain start first');
    return this.#append(type, fields, now);
  }

  #append(type: AuditRecord['type'], fields: AuditFields, now: Date): AuditRecord {
    const body = {
      type,
      chain: this.id,
      seq: type === 'start' ? 0 : ++this.#seq,
      time: now.toISOString(),
      prev: this.#prev,
      ...stripUndefined(fields),
    };
    const mac = createHmac('sha256', this.#key).update(canonicalRecord(body)).digest('hex');
    this.#prev = mac;
    return { ...body, mac };
  }
}

function stripUndefined(fields: AuditFields): AuditFields {
  const out: Record<string, unknown> = {};
  for (const k in fields) {
    const v = fields[k as keyof AuditFields];
    if (v !== undefined) out[k] = v;
  }
  return out as AuditFields;
}

export interface Verification {
  chains: number;
  records: number;
  /** Every break found, with the chain and sequence number where it is. */
  problems: string[];
}

/**
 * Checks audit records against the audit key (or keys: each chain is checked with the one its first
 * record was written under, e.g. across a key rotation): each chain must begin with its start marker
 * (unless `partial`, for an excerpt of a longer log), go 0, 1, 2, ... without gaps or repeats, link
 * each record to the previous one's MAC, and have each MAC match its record under the key. A chain
 * recomputed without the key (plain SHA-256, or another key) fails at every record. The records of a
 * chain are taken in sequence order (a process writes successes to stdout and refusals to stderr,
 * which a log pipeline may interleave); `fileOrder` also requires the order they are given in.
 */
export function verifyAudit(
  records: Iterable<AuditRecord>,
  options: { keys: readonly Buffer[]; partial?: boolean; fileOrder?: boolean },
): Verification {
  const last = new Map<string, AuditRecord>();
  const keyOf = new Map<string, Buffer | undefined>();
  const problems: string[] = [];
  let count = 0;
  let ordered: Iterable<AuditRecord> = records;
  if (!options.fileOrder) {
    const chains = new Map<string, AuditRecord[]>();
    for (const record of records) {
      const chain = chains.get(record.chain) ?? [];
      chain.push(record);
      chains.set(record.chain, chain);
    }
    // Array.prototype.sort is stable: a repeated sequence number keeps its place, and is found.
    ordered = [...chains.values()].flatMap((chain) => chain.sort((a, b) => a.seq - b.seq));
  }
  for (const record of ordered) {
    count++;
    const where = `chain ${record.chain} seq ${record.seq}`;
    if (!keyOf.has(record.chain)) {
      keyOf.set(
        record.chain,
        options.keys.find((key) => typeof record.mac === 'string' && macOf(record, key) === record.mac),
      );
    }
    const key = keyOf.get(record.chain);
    if (typeof record.mac !== 'string') {
      problems.push(`${where}: not keyed (no MAC: anyone could have written it)`);
    } else if (key === undefined || macOf(record, key) !== record.mac) {
      problems.push(`${where}: altered, or written without the audit key (its MAC does not match)`);
    }
    const before = last.get(record.chain);
    if (before === undefined) {
      if (record.type !== 'start' || record.seq !== 0 || record.prev !== GENESIS) {
        if (!options.partial)
          problems.push(`${where}: the chain's start marker is missing (removed records)`);
      }
    } else if (record.seq !== before.seq + 1) {
      problems.push(
        record.seq <= before.seq
          ? `${where}: out of order or repeated after seq ${before.seq}`
          : `${where}: ${record.seq - before.seq - 1} record(s) missing after seq ${before.seq}`,
      );
    } else if (record.prev !== before.mac) {
      problems.push(`${where}: does not follow seq ${before.seq} (a record was replaced or inserted)`);
    }
    last.set(record.chain, record);
  }
  return { chains: last.size, records: count, problems };
}

/**
 * The audit records in log text: one JSON document per line (the proxy's structured logs, or a
 * CloudWatch Logs export of them), each with an `audit` object; other lines are skipped. Records
 * without a MAC (unkeyed, or with it removed) are returned too, for verifyAudit to refuse.
 */
export function* auditRecordsIn(text: string): Generator<AuditRecord> {
  for (const line of text.split('\n')) {
    const at = line.indexOf('{');
    if (at < 0 || !line.includes('"audit"')) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line.slice(at));
    } catch {
      continue;
    }
    const audit = (parsed as { audit?: unknown })?.audit;
    if (audit !== null && typeof audit === 'object' && typeof (audit as AuditRecord).chain === 'string') {
      yield audit as AuditRecord;
    }
  }
}
