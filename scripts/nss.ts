// Creates an NSS softoken token and its keys, idempotently: the second PKCS#11 implementation the
// tests run the proxy on beside SoftHSM, and what docs/hsm.md ("Trying a new HSM") does by hand.
// The token is an NSS database that certutil (Debian's libnss3-tools) creates with the user PIN,
// read from a file: no PIN on a command line. libsoftokn3 (libnss3) opens it as a token whose
// label is the dbTokenDescription of C_Initialize's library parameters.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { finalize, findToken, initialize, loadLibrary } from '../layers/pkcs11/session.ts';
import { ensureKeys, findLibrary, type KeySpec } from './softhsm.ts';

const MODULE_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/libsoftokn3.so',
  '/usr/lib/aarch64-linux-gnu/libsoftokn3.so',
  '/usr/lib64/libsoftokn3.so',
];

export function findNssModule(): string {
  return findLibrary(MODULE_CANDIDATES, 'libnss3');
}

/**
 * The library parameters that open the NSS database in `dbDir` as the token `label` (`flags`:
 * NSS's, e.g. readOnly, which also stops NSS from making an empty database in an empty folder).
 * The database folder comes last, unquoted: a library given these parameters without their last
 * character (pkcs11js 2.1.7 drops it, layers/pkcs11/session.ts initializeArgs) opens another
 * folder, so every test on NSS shows that the layer passes them whole.
 */
export function nssLibraryParameters(dbDir: string, label: string, flags = ''): string {
  if (/[\s']/.test(dbDir)) throw new Error(`an NSS database folder without blanks or quotes, not '${dbDir}'`);
  return `certPrefix='' keyPrefix='' secmod='secmod.db' flags=${flags} dbTokenDescription='${label}' configdir=sql:${dbDir}`;
}

export interface NssTokenOptions {
  /** Folder of the token; its database goes in `database` under it. */
  dir: string;
  /** The database's folder under `dir`; `nssdb` when absent. */
  database?: string;
  /** The token label (dbTokenDescription): at most 32 characters. */
  label: string;
  pin: string;
  keys: KeySpec[];
}

export interface NssToken {
  modulePath: string;
  libraryParameters: string;
  /** Labels of the keys this call created (the others were there already). */
  created: string[];
}

/** Makes sure the NSS database exists, with this PIN, and holds every key in `keys`. */
export function ensureNssToken(options: NssTokenOptions): NssToken {
  const dbDir = join(resolve(options.dir), options.database ?? 'nssdb');
  mkdirSync(dbDir, { recursive: true, mode: 0o700 });
  if (!existsSync(join(dbDir, 'key4.db'))) createDatabase(dbDir, options.pin);
  const modulePath = findNssModule();
  const libraryParameters = nssLibraryParameters(dbDir, options.label);

  const lib = loadLibrary(modulePath);
  initialize(lib, libraryParameters);
  try {
    const found = findToken(lib, { tokenLabel: options.label });
    if (!('slot' in found)) throw new Error(`NSS opened no token labelled '${options.label}'`);
    const created = ensureKeys(lib, found.slot, options.pin, options.keys);
    return { modulePath, libraryParameters, created };
  } finally {
    finalize(lib);
  }
}

/** `certutil -N`: a new database whose user PIN (NSS: the database password) is `pin`. */
function createDatabase(dbDir: string, pin: string): void {
  const pinFile = join(dbDir, `.pin-${process.pid}`);
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  try {
    execFileSync('certutil', ['-N', '-d', `sql:${dbDir}`, '-f', pinFile], { stdio: 'pipe' });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error('certutil not found: apt-get install libnss3-tools');
    throw new Error(`certutil -N failed: ${String((error as { stderr?: Buffer }).stderr ?? error)}`);
  } finally {
    rmSync(pinFile, { force: true });
  }
}
