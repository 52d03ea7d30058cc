// `xks-proxy revocation`: the revocation switch (functions/revocation.ts), changed in one command.
//
//   npm run xks-proxy -- revocation revoke --store secretsmanager:xks/revocation --keystore payments
import { ALL_KEYSTORES, parseRevocation, type RevocationDocument } from '../functions/revocation.ts';
import { CliError, command, type Group, type Output, runCli, STDIO, UsageError } from './cli.ts';
import { openStore, SecretsManagerStore, type Store, type StoreFormat } from './credentials.ts';

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
  -h, --help       this text

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

/** The switch entry the options name: `*`, `<keystore>` or `<keystore>/<key>`. */
function entryOf(values: {
  keystore?: string | undefined;
  key?: string | undefined;
  all?: boolean | undefined;
}) {
  if (values.all === true) {
    if (values.keystore !== undefined || values.key !== undefined) {
      throw new UsageError('--all takes no --keystore or --key');
    }
    return ALL_KEYSTORES;
  }
  if (values.keystore === undefined) throw new UsageError('name a key store (--keystore), or --all');
  const entry = values.key === undefined ? values.keystore : `${values.keystore}/${values.key}`;
  // The same rules as the proxy's: a name it would refuse is refused here, before anything is written.
  try {
    parseRevocation(JSON.stringify({ revoked: [entry] }), '--keystore/--key');
  } catch (error) {
    throw new UsageError((error as Error).message);
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

const OPTIONS = {
  store: { type: 'string' },
  keystore: { type: 'string' },
  key: { type: 'string' },
  all: { type: 'boolean' },
  region: { type: 'string' },
} as const;

function storeOf(values: { store?: string | undefined; region?: string | undefined }) {
  if (values.store === undefined) throw new UsageError('--store is required');
  return openStore(values.store, { region: values.region }, REVOCATION_FORMAT);
}

const STATUS = command({
  help: REVOCATION_HELP,
  options: OPTIONS,
  async run(values, _, io) {
    const store = storeOf(values);
    const document = await store.read();
    if (document === undefined) throw new CliError(`${store.description} does not exist`);
    io.out(document.revoked.length === 0 ? 'nothing is revoked' : document.revoked.map(describe).join('\n'));
    return 0;
  },
});

/** revoke (`revoked` true) or restore. */
function change(revoked: boolean) {
  return command({
    help: REVOCATION_HELP,
    options: OPTIONS,
    async run(values, _, io) {
      const store = storeOf(values);
      const entry = entryOf(values);
      const list = await changeRevocation(store, entry, revoked);
      io.out(
        `${revoked ? 'revoked' : 'restored'}: ${describe(entry)} (${store.description}); ` +
          `now revoked: ${list.length === 0 ? 'nothing' : list.join(', ')}`,
      );
      if (store instanceof SecretsManagerStore && store.createdArn !== undefined) {
        io.out(`created secret ${store.createdArn}: the proxy's revocation.secretArn`);
      }
      return 0;
    },
  });
}

/** `xks-proxy revocation revoke|restore|status`. */
export const REVOCATION: Group = {
  help: REVOCATION_HELP,
  commands: { revoke: change(true), restore: change(false), status: STATUS },
};

/** `xks-proxy revocation ...` (argv without 'revocation'); returns the exit code. */
export function revocationMain(args: readonly string[], io: Output = STDIO): Promise<number> {
  return runCli(REVOCATION, args, io, ['revocation']);
}
