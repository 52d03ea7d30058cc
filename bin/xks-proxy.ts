#!/usr/bin/env node
// `xks-proxy`, the proxy's command line. Each command is a file of its own, loaded when it runs;
// bin/cli.ts parses their options and reports their errors.
//
//   npm run xks-proxy -- <command> ...    in the clone (or npx xks-proxy; npm link for everywhere)
import { isEntryPoint } from '../scripts/entry-point.ts';
import { type Group, type Output, runCli, STDIO } from './cli.ts';

const HELP = `Usage: xks-proxy <command> ...   (npm run xks-proxy -- <command> ...)

Commands:
  credentials create   generate a SigV4 credential and add it to a key store's store
  credentials list     the access key ids in a store
  credentials remove   remove a credential from a store
  preflight            check a proxy endpoint the way AWS KMS will use it
  keys create          generate a new external key in the HSM, with any usage
  keys create-test-keys  generate the keys AWS's XKS test client expects
  keys create-version  generate the next version of an external key in the HSM (key rotation)
  keys list-versions   the versions of an external key
  audit verify         check the audit records in log files against the audit key
  revocation revoke    cut AWS KMS off from a key store or a key (revocation restore: let it back)
  revocation status    what the revocation switch revokes

Run 'xks-proxy credentials <command> --help', 'xks-proxy keys <command> --help',
'xks-proxy revocation --help' or 'xks-proxy preflight --help' for the options.
`;

/** Each command loads its own modules: the AWS SDK, pkcs11js, the trusted CA list. */
const XKS_PROXY: Group = {
  help: HELP,
  commands: {
    credentials: { load: async () => (await import('./credentials.ts')).CREDENTIALS },
    preflight: { load: async () => (await import('./preflight/index.ts')).PREFLIGHT },
    keys: { load: async () => (await import('./keys.ts')).keysCommands() },
    audit: { load: async () => (await import('./audit.ts')).AUDIT },
    revocation: { load: async () => (await import('./revocation.ts')).REVOCATION },
  },
};

/** Runs the command line; returns the exit code. */
export function main(argv: readonly string[], io: Output = STDIO): Promise<number> {
  return runCli(XKS_PROXY, argv, io);
}

if (isEntryPoint(import.meta)) {
  process.exitCode = await main(process.argv.slice(2));
}
