// `xks-proxy revocation`: the revocation switch (functions/revocation.ts), changed in one command.
//
//   npm run xks-proxy -- revocation revoke --store secretsmanager:xks/revocation --keystore payments
import { parseArgs } from 'node:util';
import { ALL_KEYSTORES, parseRevocation, type RevocationDocument } from '../functions/revocation.ts';
import { CliError, openStore, SecretsManagerStore, type Store, type StoreFormat } from './xks-proxy.ts';

export const REVOCATION_HELP = `Usage: xks-proxy revocation <revoke|restore|status> --store STORE
                            [--keystore NAME [--key EXTERNAL_KEY_ID] | --all] [--region REGION]

Cuts AWS KMS off from a key store or one of its keys, or lets it back in, through the proxy's
revocation switch (its revocation.secretArn or revocation.file), without touching KMS or the HSM.
Once the proxy has read the change (within revocation.cacheSeconds, 5 s by default, for a secret;
within a second for a file), GetKeyMetadata answers keyStatus DISABLED and Encrypt and Decrypt
answer InvalidStateException; GetHealthStatus still reports the HSMs.

  revoke     revoke the key store (--keystore), one of its keys (--keystore and --key), or every
             key store (--all)
  restore    take that revocation back
  status     print what is revoked

  --store S        the switch: file:PATH or secretsmanager:NAME_OR_ARN, holding {"revoked": [...]};
                   revoke creates it when it does not exist (a secret by name, not by ARN)
  --keystore NAME  a key store's name (keystores[].name in the proxy's configuration)
  --key ID         an externalKeyId of that key store
  --all            every key store of the proxy
  --region REGION  for Secrets Manager: default the ARN's region, then AWS_REGION, AWS_DEFAULT_REGION

Exit code 0 when done, 1 when it failed, 2 on bad usage.
`;

/** The switch's document, checked both ways with the proxy's own parser. */
export const REVOCATION_FORMAT: StoreFormat<RevocationDocument> = {
  purpose: 'XKS proxy: revocation switch (key stores and keys cut off from AWS KMS)',
  parse: (store, text) => {
    try {
      return parseRevocation(text, store);
    } catch (error) {
      throw new CliError((error as Error).message);
    }
  },
  serialize: (store, document) => {
    const text = `${JSON.stringify(document, null, 2)}\n`;
    REVOCATION_FORMAT.parse(store, text);
    return text;
  },
};

interface Output {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** The switch entry the options name: `*`, `<keystore>` or `<keystore>/<key>`. */
function entryOf(values: {
  keystore?: string | undefined;
  key?: string | undefined;
  all?: boolean | undefined;
}) {
  if (values.all === true) {
    if (values.keystore !== undefined || values.key !== undefined) {
      throw new CliError('--all takes no --keystore or --key', 2);
    }
    return ALL_KEYSTORES;
  }
  if (values.keystore === undefined) throw new CliError('name a key store (--keystore), or --all', 2);
  const entry = values.key === undefined ? values.keystore : `${values.keystore}/${values.key}`;
  // The same rules as the proxy's: a name it would refuse is refused here, before anything is written.
  try {
    parseRevocation(JSON.stringify({ revoked: [entry] }), '--keystore/--key');
  } catch (error) {
    throw new CliError((error as Error).message, 2);
  }
  return entry;
}

/** Adds (revoke) or removes (restore) an entry; returns the new list. */
export async function changeRevocation(
  store: Store<RevocationDocument>,
  entry: string,
  revoked: boolean,
): Promise<string[]> {
  const document = (await store.read()) ?? { revoked: [] };
  const has = document.revoked.includes(entry);
  if (revoked === has) return document.revoked;
  const list = revoked ? [...document.revoked, entry] : document.revoked.filter((e) => e !== entry);
  await store.write({ ...document, revoked: list });
  return list;
}

function describe(entry: string): string {
  if (entry === ALL_KEYSTORES) return 'every key store';
  const [keystore, key] = entry.split('/');
  return key === undefined ? `key store ${keystore}` : `key ${key} of key store ${keystore}`;
}

/** Returns the exit code. */
export async function revocationMain(args: string[], io: Output): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    io.out(REVOCATION_HELP.trimEnd());
    return command === undefined ? 2 : 0;
  }
  try {
    if (!['revoke', 'restore', 'status'].includes(command)) {
      throw new CliError(`unknown command 'revocation ${command}'\n\n${REVOCATION_HELP.trimEnd()}`, 2);
    }
    let values: ReturnType<typeof parse>['values'];
    try {
      values = parse(rest).values;
    } catch (error) {
      throw new CliError(`${(error as Error).message}\n\n${REVOCATION_HELP.trimEnd()}`, 2);
    }
    if (values.store === undefined) throw new CliError('--store is required', 2);
    const store = openStore(values.store, { region: values.region }, REVOCATION_FORMAT);
    if (command === 'status') {
      const document = await store.read();
      if (document === undefined) throw new CliError(`${store.description} does not exist`);
      io.out(
        document.revoked.length === 0 ? 'nothing is revoked' : document.revoked.map(describe).join('\n'),
      );
      return 0;
    }
    const entry = entryOf(values);
    const list = await changeRevocation(store, entry, command === 'revoke');
    io.out(
      `${command === 'revoke' ? 'revoked' : 'restored'}: ${describe(entry)} (${store.description}); ` +
        `now revoked: ${list.length === 0 ? 'nothing' : list.join(', ')}`,
    );
    if (store instanceof SecretsManagerStore && store.createdArn !== undefined) {
      io.out(`created secret ${store.createdArn}: the proxy's revocation.secretArn`);
    }
    return 0;
  } catch (error) {
    if (error instanceof CliError) {
      io.err(`xks-proxy: ${error.message}`);
      return error.exitCode;
    }
    const name = (error as { name?: string } | null)?.name ?? 'Error';
    io.err(`xks-proxy: unexpected error: ${name}: ${(error as Error)?.message ?? ''}`);
    return 1;
  }
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      store: { type: 'string' },
      keystore: { type: 'string' },
      key: { type: 'string' },
      all: { type: 'boolean' },
      region: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
}
