// The report of `xks-proxy preflight`: one check per line, grouped, each problem with the exception
// AWS KMS would raise because of it (spec: "Error codes", the KMS exception table).

export type Status = 'pass' | 'warn' | 'fail';

export interface Check {
  /** Stable identifier, e.g. `tls.chain`. */
  id: string;
  title: string;
  status: Status;
  /** What was seen, in a sentence or two. */
  detail: string;
  /** For a warn or fail: the exception AWS KMS would raise because of it (spec: KMS exception table). */
  kmsException?: string;
  /** The KMS operations that exception shows up in. */
  kmsOperation?: string;
  /** The message KMS gives with it (spec: KMS exception table). */
  kmsMessage?: string;
}

export interface Report {
  target: {
    endpoint: string;
    uriPath: string;
    region: string;
    accessKeyId: string;
    externalKeyId?: string;
    mutualTls: boolean;
  };
  startedAt: string;
  durationMs: number;
  checks: Check[];
  /** Checks that could not run, with the reason (e.g. no TLS connection at all). */
  skipped: string[];
  summary: Record<Status, number>;
  /** True when no check failed. */
  ok: boolean;
}

/** How many checks passed, warned and failed. */
export function summarize(checks: Check[]): Record<Status, number> {
  const summary: Record<Status, number> = { pass: 0, warn: 0, fail: 0 };
  for (const check of checks) summary[check.status]++;
  return summary;
}

/** A duration for a detail line. */
export const ms = (value: number) => `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;

const GROUPS: [string, string][] = [
  ['uri', 'URI'],
  ['credential', 'Credential'],
  ['tls', 'TLS'],
  ['http', 'HTTP'],
  ['mtls', 'Mutual TLS'],
  ['health', 'GetHealthStatus'],
  ['key', 'Key'],
  ['errors', 'Error behaviour'],
  ['latency', 'Latency'],
];

/** The report for people: grouped, one line per check, the KMS exception under each problem. */
export function formatReport(report: Report, options: { color?: boolean } = {}): string {
  const paint = (code: string, text: string) => (options.color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const badge: Record<Status, string> = {
    pass: paint('32', 'PASS'),
    warn: paint('33', 'WARN'),
    fail: paint('31;1', 'FAIL'),
  };
  const lines: string[] = [];
  const t = report.target;
  lines.push(paint('1', `XKS proxy preflight: ${t.endpoint}${t.uriPath}`));
  lines.push(
    `region ${t.region}, access key id ${t.accessKeyId}${t.externalKeyId === undefined ? '' : `, key ${t.externalKeyId}`}${t.mutualTls ? ', mutual TLS' : ''}`,
  );
  for (const [prefix, heading] of GROUPS) {
    const checks = report.checks.filter((c) => c.id === prefix || c.id.startsWith(`${prefix}.`));
    if (checks.length === 0) continue;
    lines.push('', paint('1', heading));
    for (const check of checks) {
      lines.push(`  ${badge[check.status]}  ${check.title}`);
      lines.push(`        ${paint('2', check.id)}  ${check.detail}`);
      if (check.status !== 'pass' && check.kmsException !== undefined) {
        lines.push(
          `        -> KMS: ${paint(check.status === 'fail' ? '31' : '33', check.kmsException)} (${check.kmsOperation})`,
        );
        if (check.kmsMessage !== undefined) lines.push(`           "${check.kmsMessage}"`);
      }
    }
  }
  if (report.skipped.length > 0) {
    lines.push('', paint('1', 'Not run'));
    for (const reason of report.skipped) lines.push(`  - ${reason}`);
  }
  const s = report.summary;
  const verdict = report.ok
    ? paint('32;1', s.warn > 0 ? 'no failures (see the warnings)' : 'all checks passed')
    : paint('31;1', `${s.fail} check${s.fail === 1 ? '' : 's'} failed`);
  lines.push('', `${s.pass} pass, ${s.warn} warn, ${s.fail} fail in ${ms(report.durationMs)}: ${verdict}`);
  return lines.join('\n');
}
