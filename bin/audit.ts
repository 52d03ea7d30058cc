// `xks-proxy audit verify`: checks the hash chains of the proxy's audit records (functions/audit.ts)
// in log files: the proxy's own output, or CloudWatch Logs exports of it.
import { readFileSync } from 'node:fs';
import { auditRecordsIn, parseAuditKey, verifyAudit } from '../functions/audit.ts';
import { command, type Group, UsageError } from './cli.ts';

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
  -h, --help    this text
`;

function readKey(file: string): Buffer {
  try {
    return parseAuditKey(readFileSync(file, 'utf8'), file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(code === undefined ? (error as Error).message : `cannot read ${file}: ${code}`);
  }
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

const VERIFY = command({
  help: AUDIT_HELP,
  options: {
    'key-file': { type: 'string', multiple: true },
    partial: { type: 'boolean' },
    'file-order': { type: 'boolean' },
    json: { type: 'boolean' },
  },
  positionals: true,
  run(values, files, io) {
    if (files.length === 0) throw new UsageError('audit verify needs at least one log file');
    const keys = (values['key-file'] ?? []).map(readKey);
    if (keys.length === 0) throw new UsageError('audit verify needs the audit key (--key-file)');
    const text = files.map((file) => `${readLog(file)}\n`).join('');
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
  },
});

/** `xks-proxy audit verify`. */
export const AUDIT: Group = { help: AUDIT_HELP, commands: { verify: VERIFY } };
