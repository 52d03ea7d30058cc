// The command line's shared plumbing (bin/cli.ts): --help, usage errors (exit 2, one line, then the
// command's usage), failures (exit 1, one line, no stack trace), and arguments it did not
// understand never repeated. Then every xks-proxy command through it, and the CLI run through a
// symlink, as `npm link` installs it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CliError, command, type Entry, runCli, UsageError } from '../../bin/cli.ts';
import { main } from '../../bin/xks-proxy.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

async function run(entry: Entry, args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(entry, args, { out: (l) => out.push(l), err: (l) => err.push(l) }, ['tool']);
  const text = [...out, ...err].join('\n');
  assert.ok(!text.includes(SECRET), `printed the secret: ${text}`);
  assert.ok(!/\n\s+at /.test(text), `printed a stack trace: ${text}`);
  return { code, out, err };
}

const HELP = 'Usage: xks-proxy tool do --name NAME [--loud]\n\nDoes it.\n\n  --name NAME  who\n';
let failWith: unknown;
const TOOL: Entry = {
  help: 'Usage: xks-proxy tool <do> [options]\n\nA tool.\n',
  commands: {
    do: {
      load: async () =>
        command({
          help: HELP,
          options: { name: { type: 'string' }, loud: { type: 'boolean' } },
          refused: { password: 'give it in a file' },
          run(values, _, io) {
            if (failWith !== undefined) throw failWith;
            if (values.name === undefined) throw new UsageError('--name is required');
            io.out(`${values.loud ? 'HELLO' : 'hello'} ${values.name}`);
            return 0;
          },
        }),
    },
  },
};

describe('bin/cli.ts', () => {
  test('runs a command, loaded on demand, with its options', async () => {
    failWith = undefined;
    assert.deepEqual(await run(TOOL, ['do', '--name', 'kms', '--loud']), {
      code: 0,
      out: ['HELLO kms'],
      err: [],
    });
  });

  test('--help: the help on stdout, exit 0; no command named: the same, exit 2', async () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const { code, out, err } = await run(TOOL, args);
      assert.equal(code, 0);
      assert.match(out.join('\n'), /^Usage: xks-proxy tool <do>/);
      assert.deepEqual(err, []);
    }
    assert.equal((await run(TOOL, [])).code, 2);
    const help = await run(TOOL, ['do', '--name', 'x', '--help']);
    assert.deepEqual([help.code, help.out], [0, [HELP.trimEnd()]]);
  });

  test('a usage error: exit 2, one line, then the usage lines and where the help is', async () => {
    failWith = undefined;
    for (const [args, message] of [
      [['do'], 'xks-proxy: --name is required'],
      [['do', '--bogus'], "xks-proxy: Unknown option '--bogus'"],
      [['do', '--name'], "xks-proxy: Option '--name <value>' argument missing"],
      [['undo'], "xks-proxy: unknown command 'tool undo'"],
    ] as const) {
      const { code, out, err } = await run(TOOL, [...args]);
      assert.equal(code, 2, args.join(' '));
      assert.deepEqual(out, []);
      const usage =
        args[0] === 'do' ? 'Usage: xks-proxy tool do --name NAME [--loud]' : 'Usage: xks-proxy tool <do>';
      const help = args[0] === 'do' ? 'tool do --help' : 'tool --help';
      assert.equal(err.length, 3, err.join('\n'));
      assert.equal(err[0], message);
      assert.ok(err[1]?.startsWith(usage), err[1]);
      assert.equal(err[2], `Run 'xks-proxy ${help}' for more.`);
    }
  });

  test('arguments it does not understand are never repeated: they may be a secret', async () => {
    failWith = undefined;
    for (const args of [
      ['do', '--name', 'x', SECRET],
      ['do', `--${SECRET}`],
      ['do', `--bogus=${SECRET}`],
      ['do', '--password', SECRET],
      ['do', `--password=${SECRET}`],
      ['do', '--name', 'x', '--loud', `-${SECRET}`],
    ]) {
      const { code, err } = await run(TOOL, args);
      assert.equal(code, 2, args.join(' '));
      assert.ok(err.length >= 1);
    }
    assert.equal((await run(TOOL, ['do', `--${SECRET}`])).err[0], 'xks-proxy: Unknown option');
    const refused = await run(TOOL, ['do', '--password', SECRET]);
    assert.equal(refused.err[0], 'xks-proxy: --password is not an option: give it in a file');
  });

  test('failures: the exit code of a CliError, one line; anything else: 1, name and first line', async () => {
    failWith = new CliError('the store\nis gone', 3);
    assert.deepEqual(await run(TOOL, ['do', '--name', 'x']), {
      code: 3,
      out: [],
      err: ['xks-proxy: the store is gone'],
    });
    failWith = new TypeError(`cannot read it\n${SECRET}`);
    assert.deepEqual(await run(TOOL, ['do', '--name', 'x']), {
      code: 1,
      out: [],
      err: ['xks-proxy: unexpected error: TypeError: cannot read it'],
    });
    failWith = SECRET;
    assert.deepEqual((await run(TOOL, ['do', '--name', 'x'])).err, ['xks-proxy: unexpected error: string']);
    failWith = undefined;
  });
});

describe('xks-proxy: every command through bin/cli.ts', () => {
  const commands = [
    ['credentials', 'create'],
    ['credentials', 'list'],
    ['credentials', 'remove'],
    ['keys', 'create'],
    ['keys', 'create-test-keys'],
    ['keys', 'create-version'],
    ['keys', 'list-versions'],
    ['audit', 'verify'],
    ['revocation', 'revoke'],
    ['revocation', 'restore'],
    ['revocation', 'status'],
    ['preflight'],
  ];

  test('--help prints the usage; an unknown option is exit 2, one line, then the usage', async () => {
    for (const name of commands) {
      const out: string[] = [];
      const err: string[] = [];
      const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
      assert.equal(await main([...name, '--help'], io), 0, name.join(' '));
      assert.match(out.join('\n'), new RegExp(`^Usage: xks-proxy ${name[0]}`), name.join(' '));
      out.length = 0;
      assert.equal(await main([...name, '--bogus', SECRET], io), 2, name.join(' '));
      assert.deepEqual(out, []);
      assert.equal(err[0], "xks-proxy: Unknown option '--bogus'", name.join(' '));
      assert.match(err[1] ?? '', new RegExp(`^Usage: xks-proxy ${name[0]}`), name.join(' '));
      assert.ok(!err.join('\n').includes(SECRET));
    }
  });
});

describe('installed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xks-cli-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('through a symlink, as `npm link` (or `npm install -g <folder>`) installs the command', () => {
    // npm's global layout: <prefix>/bin/xks-proxy -> ../lib/node_modules/<name>/bin/xks-proxy.ts,
    // the package itself a symlink to the clone, so that Node strips the types of files outside
    // node_modules.
    mkdirSync(join(dir, 'lib', 'node_modules'), { recursive: true });
    mkdirSync(join(dir, 'bin'));
    symlinkSync(ROOT, join(dir, 'lib', 'node_modules', 'serverless-xks-proxy'));
    const bin = join(dir, 'bin', 'xks-proxy');
    symlinkSync('../lib/node_modules/serverless-xks-proxy/bin/xks-proxy.ts', bin);
    const result = spawnSync(process.execPath, [bin, 'credentials', '--help'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^Usage: xks-proxy credentials/);
  });
});
