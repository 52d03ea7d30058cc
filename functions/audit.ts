// The audit trail (spec: Logging: "appropriate measures must be used to ensure the integrity of
// the logs"): one audit record per request, in the request's log line, chained by hash. Each
// process (each Lambda environment) starts a chain with a start marker; every record carries
// the hash of the one before it, so a removed, altered, inserted or reordered record breaks the
// chain, and `xks-proxy audit verify` finds where. Records never hold plaintext, AAD, keys,
// PINs or secrets: only who asked what, with which key, and what happened.
import { hash, randomUUID } from 'node:crypto';

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
}

export interface AuditRecord extends AuditFields {
  /** 'start' for a chain's first record, 'request' after. */
  type: 'start' | 'request';
  /** The chain (one per process); random. */
  chain: string;
  seq: number;
  time: string;
  /** The previous record's hash; 64 zeros for the start marker. */
  prev: string;
  /** SHA-256 (hex) of this record without `hash`, in canonical JSON. */
  hash: string;
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
 * writes are serialized without sorting keys each time (canonicalRecord); hashOf, which checks any
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
  'seq',
  'sourceVpc',
  'sourceVpce',
  'statusCode',
  'time',
  'type',
  'unverifiedKmsRequestId',
] as const;
// A field added to AuditRecord but not above would be logged yet left out of the hash: refused here.
type Unlisted = Exclude<keyof Omit<AuditRecord, 'hash'>, (typeof RECORD_KEYS)[number]>;
const everyKeyListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyKeyListed;

/** canonical() of a record written here, its keys taken in RECORD_KEYS' order. */
function canonicalRecord(record: Omit<AuditRecord, 'hash'>): string {
  let text = '';
  for (const key of RECORD_KEYS) {
    const value = record[key];
    if (value === undefined) continue;
    text += `${text === '' ? '{' : ','}"${key}":${canonical(value)}`;
  }
  return `${text}}`;
}

export function hashOf(record: Omit<AuditRecord, 'hash'> | AuditRecord): string {
  const { hash: _ignored, ...rest } = record as AuditRecord;
  return hash('sha256', canonical(rest), 'hex');
}

export class AuditChain {
  readonly id: string;
  #seq = 0;
  #prev = GENESIS;
  #started = false;

  constructor(id: string = randomUUID()) {
    this.id = id;
  }

  /** The chain's start marker: log it once, before any request record. */
  start(now = new Date()): AuditRecord {
    if (this.#started) throw new Error('the audit chain has started already');
    this.#started = true;
    return this.#append('start', {}, now);
  }

  /** The next request's record. */
  next(fields: AuditFields, now = new Date()): AuditRecord {
    if (!this.#started) throw new Error('log the audit chain start first');
    return this.#append('request', fields, now);
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
    const text = canonicalRecord(body);
    const digest = hash('sha256', text, 'hex');
    this.#prev = digest;
    const record = { ...body, hash: digest };
    written.set(record, `${text.slice(0, -1)},"hash":"${digest}"}`);
    return record;
  }
}

/** The JSON of the records written here, made while hashing them (the log line reuses it). */
const written = new WeakMap<AuditRecord, string>();

/** A record's JSON: its canonical text with the hash last, when written here. */
export function auditJson(record: AuditRecord): string {
  return written.get(record) ?? JSON.stringify(record);
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
 * Checks audit records: each chain must begin with its start marker (unless `partial`, for an
 * excerpt of a longer log), go 0, 1, 2, ... without gaps or repeats, link each record to the
 * previous one's hash, and have each hash match its record. The records of a chain are taken in
 * sequence order (a process writes successes to stdout and refusals to stderr, which a log
 * pipeline may interleave); `fileOrder` also requires the order they are given in.
 */
export function verifyAudit(
  records: Iterable<AuditRecord>,
  options: { partial?: boolean; fileOrder?: boolean } = {},
): Verification {
  const last = new Map<string, AuditRecord>();
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
    if (hashOf(record) !== record.hash)
      problems.push(`${where}: altered (its hash does not match its contents)`);
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
    } else if (record.prev !== before.hash) {
      problems.push(`${where}: does not follow seq ${before.seq} (a record was replaced or inserted)`);
    }
    last.set(record.chain, record);
  }
  return { chains: last.size, records: count, problems };
}

/**
 * The audit records in log text: one JSON document per line (the proxy's structured logs, or a
 * CloudWatch Logs export of them), each with an `audit` object; other lines are skipped.
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
    if (audit !== null && typeof audit === 'object' && typeof (audit as AuditRecord).hash === 'string') {
      yield audit as AuditRecord;
    }
  }
}

/**
 * This process's audit chain. Its start marker is written at once, straight to stdout in the
 * Powertools Logger's JSON shape: whatever the log level, a chain must have its start.
 */
export const auditTrail = new AuditChain();
process.stdout.write(
  `${JSON.stringify({
    level: 'INFO',
    message: 'Audit chain start',
    timestamp: new Date().toISOString(),
    service: process.env.POWERTOOLS_SERVICE_NAME || 'xks-proxy',
    audit: auditTrail.start(),
  })}\n`,
);
