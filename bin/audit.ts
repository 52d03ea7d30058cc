// `xks-proxy audit verify`: checks the hash chains of the proxy's audit records (functions/audit.ts)
// in log files: the proxy's own output, or CloudWatch Logs exports of it.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { auditRecordsIn, parseAuditKey, verifyAudit } from '../functions/audit.ts';

export const AUDIT_HELP = `Usage: xks-proxy audit verify --key-file KEYFILE... FILE... [--partial] [--file-order] [--json]

Checks the audit records in the log files against the audit key (the proxy's audit.keyFile, or
the value of its audit.keySecretArn saved to a file): every chain (one per Lambda environment or
local process) must start with its start marker and go on without a removed, altered, inserted,
renumbered or repeated record, each with the MAC only the key can make. Exit code 0 when every
chain is intact, 1 when something was found (each problem is printed), 2 on bad usage.

  --key-file    the audit key (hex); give it again for each older key, e.g. across a rotation
  --partial     the files are an excerpt: chains may begin after their start marker
  --file-order  the records must also be in sequence order in the files (a log whose order is
                guaranteed; the proxy writes refusals to stderr, which pipelines may interleave)
  --json        print the result as JSON
`;

interface Output {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** Returns the exit code. */
export function auditMain(args: string[], io: Output): number {
  const [command, ...rest] = args;
  if (command !== 'verify') {
    (command === undefined || command === '--help' ? io.out : io.err)(AUDIT_HELP.trimEnd());
    return command === '--help' ? 0 : 2;
  }
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(rest);
  } catch (error) {
    io.err(`xks-proxy: ${(error as Error).message}\n\n${AUDIT_HELP.trimEnd()}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (positionals.length === 0) {
    io.err(`xks-proxy: audit verify needs at least one log file\n\n${AUDIT_HELP.trimEnd()}`);
    return 2;
  }
  const keys: Buffer[] = [];
  for (const file of values['key-file'] ?? []) {
    try {
      keys.push(parseAuditKey(readFileSync(file, 'utf8'), file));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      io.err(`xks-proxy: ${code === undefined ? (error as Error).message : `cannot read ${file}: ${code}`}`);
      return 2;
    }
  }
  if (keys.length === 0) {
    io.err(`xks-proxy: audit verify needs the audit key (--key-file)\n\n${AUDIT_HELP.trimEnd()}`);
    return 2;
  }
  let text = '';
  for (const file of positionals) {
    try {
      text += `${readFileSync(file, 'utf8')}\n`;
    } catch (error) {
      io.err(`xks-proxy: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
      return 2;
    }
  }
  const result = verifyAudit(auditRecordsIn(text), {
    keys,
    partial: values.partial === true,
    fileOrder: values['file-order'] === true,
  });
  if (values.json) {
    io.out(JSON.stringify({ ...result, intact: result.problems.length === 0 }));
  } else if (result.records === 0) {
    io.out('BROKEN: no audit records found (the wrong files, or the records were removed)');
  } else {
    for (const problem of result.problems) io.out(`FAIL  ${problem}`);
    io.out(
      `${result.problems.length === 0 ? 'ok' : 'BROKEN'}: ${result.records} audit records in ${result.chains} chain(s), ` +
        `${result.problems.length} problem(s)`,
    );
  }
  return result.problems.length === 0 && result.records > 0 ? 0 : 1;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      'key-file': { type: 'string', multiple: true },
      partial: { type: 'boolean' },
      'file-order': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: true,
  });
}
