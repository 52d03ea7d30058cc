// What every `xks-proxy` command shares, so that each command's file holds its own job only:
// options (node:util parseArgs), --help, usage errors, error reporting and exit codes.
//
// Exit codes: 0 done; 1 failed (the message says why); 2 bad usage (the message, then the
// command's usage). An error is one line on stderr, `xks-proxy: ...`: never a stack trace, and
// never an argument the command did not understand, which may be a secret typed in the wrong place.
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';

/** Where a command prints: stdout and stderr, or a test's capture. */
export interface Output {
  out: (line: string) => void;
  err: (line: string) => void;
}

export const STDIO: Output = { out: (line) => console.log(line), err: (line) => console.error(line) };

/** A refusal or a failure, with a message fit to print: it never holds a secret. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/** Bad usage: exit code 2, and the command's usage after the message. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}

const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;

/** What parseArgs makes of a command's options (and -h/--help). */
export type Values<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{
    options: O & typeof HELP_OPTION;
    strict: true;
    allowPositionals: true;
    allowNegative: true;
  }>
>['values'];

/** One command: its help, its options, and what it does with them. */
export interface Command<O extends ParseArgsOptionsConfig = ParseArgsOptionsConfig> {
  /** --help's text. Its first paragraph (the `Usage:` lines) follows a usage error. */
  help: string;
  /** parseArgs options; -h/--help is added. */
  options: O;
  /** Takes arguments besides the options (default: none). */
  positionals?: boolean;
  /** Takes --no-NAME for its boolean options. */
  allowNegative?: boolean;
  /** Options left out on purpose, each with what to do instead: refused before parsing, unquoted. */
  refused?: Readonly<Record<string, string>>;
  /** Does the job; returns the exit code. */
  run(values: Values<O>, positionals: string[], io: Output): Promise<number> | number;
}

/** Commands under one name: `xks-proxy credentials create|list|remove`. */
export interface Group {
  /** Printed for --help, and (exit code 2) when no command is named. */
  help: string;
  commands: Readonly<Record<string, Entry>>;
}

/** A command or group loaded when it runs: it brings modules the others do not need. */
export interface Lazy {
  load: () => Promise<Command | Group>;
}

export type Entry = Command | Group | Lazy;

/** A command, its option types inferred from `options`. */
export function command<const O extends ParseArgsOptionsConfig>(spec: Command<O>): Command<O> {
  return spec;
}

const HELP_WORDS = new Set(['--help', '-h', 'help']);
/** What an option's name looks like: anything else is not repeated. */
const OPTION_NAME = /^(?:-[A-Za-z]|--[a-z][a-z0-9-]{0,39})$/;

/**
 * Runs `args` against `entry`, whose name after `xks-proxy` is `path`: finds the command, parses
 * its options, prints --help or runs it, and reports what it throws. Returns the exit code.
 */
export async function runCli(
  entry: Entry,
  args: readonly string[],
  io: Output = STDIO,
  path: readonly string[] = [],
): Promise<number> {
  const names = [...path];
  let usage: string | undefined;
  try {
    let current = entry;
    let rest = [...args];
    for (;;) {
      if ('load' in current) current = await current.load();
      usage = current.help;
      if ('commands' in current) {
        const [name, ...more] = rest;
        if (name === undefined || HELP_WORDS.has(name)) {
          io.out(current.help.trimEnd());
          return name === undefined ? 2 : 0;
        }
        const next = Object.hasOwn(current.commands, name) ? current.commands[name] : undefined;
        if (next === undefined) throw new UsageError(`unknown command '${[...names, name].join(' ')}'`);
        names.push(name);
        [current, rest] = [next, more];
        continue;
      }
      const { values, positionals } = parse(current, rest);
      if (values.help) {
        io.out(current.help.trimEnd());
        return 0;
      }
      return await current.run(values, positionals, io);
    }
  } catch (error) {
    return report(error, io, usage, names);
  }
}

function parse(command: Command, args: string[]) {
  for (const [name, instead] of Object.entries(command.refused ?? {})) {
    if (args.some((arg) => arg === `--${name}` || arg.startsWith(`--${name}=`))) {
      throw new UsageError(`--${name} is not an option: ${instead}`);
    }
  }
  try {
    return parseArgs({
      args,
      options: { ...command.options, ...HELP_OPTION },
      strict: true,
      allowPositionals: command.positionals === true,
      allowNegative: command.allowNegative === true,
    });
  } catch (error) {
    // Node quotes a stray argument, and an unknown option's name whatever it is.
    const { code, message } = error as { code?: string; message: string };
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      throw new UsageError('unexpected argument: this command takes options only');
    }
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const name = /^Unknown option '(-[^']*)'/.exec(message)?.[1] ?? '';
      throw new UsageError(OPTION_NAME.test(name) ? `Unknown option '${name}'` : 'Unknown option');
    }
    throw new UsageError(message);
  }
}

function report(error: unknown, io: Output, usage: string | undefined, names: string[]): number {
  if (error instanceof CliError) {
    io.err(`xks-proxy: ${oneLine(error.message)}`);
    if (error.exitCode === 2 && usage !== undefined) {
      io.err(usage.split(/\n\s*\n/)[0] ?? usage);
      io.err(`Run '${['xks-proxy', ...names, '--help'].join(' ')}' for more.`);
    }
    return error.exitCode;
  }
  // Unexpected: its name and first line only (a stack, or the rest, could hold values).
  const text = error instanceof Error ? `${error.name}: ${error.message.split('\n')[0]}` : typeof error;
  io.err(`xks-proxy: unexpected error: ${text}`);
  return 1;
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ');
}
