// ABI check for the PKCS#11 Lambda layer: every ELF shared object that goes into the layer (.node,
// .so) must load on the Lambda runtime's OS, Amazon Linux 2023. A library built on a newer distro
// (Debian 12, Ubuntu 24.04) can ask for symbol versions AL2023's glibc / libstdc++ do not have, and
// then dlopen() fails at cold start with "version `GLIBC_2.36' not found". objdump shows the
// versions each file needs, so the build can refuse such a layer instead of the Lambda.
//
//   node layers/abi.ts file-or-dir...     (directories: every .node / .so inside, recursively)
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { isEntryPoint } from '../scripts/entry-point.ts';

/**
 * The highest versions Amazon Linux 2023 provides: glibc 2.34, and gcc 11's libstdc++ (GLIBCXX_3.4.29,
 * CXXABI_1.3.13). Anything newer does not load there.
 */
export const LIMITS = { GLIBC: '2.34', GLIBCXX: '3.4.29', CXXABI: '1.3.13' } as const;
export type Family = keyof typeof LIMITS;
const FAMILIES = Object.keys(LIMITS) as Family[];

/**
 * Shared libraries a layer file may need without shipping them in lib/: they are in the Lambda
 * AL2023 base image. Deliberately small; anything else is reported (a warning, since the library may
 * still be there): ship it in the layer's lib/ or check the runtime image.
 */
export const AL2023_LIBRARIES: ReadonlySet<string> = new Set([
  // glibc 2.34
  'libc.so.6',
  'libm.so.6',
  'libdl.so.2',
  'libpthread.so.0',
  'librt.so.1',
  'libresolv.so.2',
  'libutil.so.1',
  'ld-linux-x86-64.so.2',
  'ld-linux-aarch64.so.1',
  // libgcc and libstdc++ (gcc 11): the Node.js runtime itself needs them
  'libgcc_s.so.1',
  'libstdc++.so.6',
  // openssl-libs (OpenSSL 3.0)
  'libcrypto.so.3',
  'libssl.so.3',
]);

/** Compares dotted versions numerically: 2.34 > 2.4, 3.4.29 > 3.4.9, 1.3 < 1.3.1. */
export function compareVersions(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

export interface ElfInfo {
  /** 'x86_64', 'arm64', or 'e_machine N' for anything else. */
  arch: string;
  bits: 32 | 64;
}

const MACHINES: Record<number, string> = { 3: 'i386', 40: 'arm', 62: 'x86_64', 183: 'arm64' };

/** Reads the ELF header (no objdump needed); throws when the file is not ELF. */
export function elfInfo(file: string): ElfInfo {
  const header = Buffer.alloc(20);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, header, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  if (header.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
  // EI_DATA: 1 little-endian, 2 big-endian; e_machine is the 2 bytes at offset 18.
  const machine = header[5] === 2 ? header.readUInt16BE(18) : header.readUInt16LE(18);
  return { arch: MACHINES[machine] ?? `e_machine ${machine}`, bits: header[4] === 2 ? 64 : 32 };
}

export interface AbiReport {
  /** The file's name as printed: relative to the layer root when there is one. */
  name: string;
  file: string;
  arch: string;
  /** The highest version needed per family, e.g. { GLIBC: '2.34', GLIBCXX: '3.4.29' }. */
  highest: Partial<Record<Family, string>>;
  /** Versions above LIMITS, with the symbols that need them: the check fails when not empty. */
  violations: string[];
  /** The NEEDED entries. */
  needed: string[];
  /** NEEDED entries neither in AL2023_LIBRARIES nor shipped: warnings. */
  missing: string[];
}

function objdump(flag: '-T' | '-p', file: string): string {
  try {
    return execFileSync('objdump', [flag, file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('objdump not found: install binutils (apt-get install binutils)');
    }
    throw new Error(`objdump ${flag} ${file} failed: ${(error as Error).message}`);
  }
}

const VERSION = /^(GLIBCXX|GLIBC|CXXABI)_(\d+(?:\.\d+)*)$/;

/**
 * Checks one file. `shipped` holds the basenames of the libraries the layer ships in lib/ (found at
 * run time through LD_LIBRARY_PATH=/opt/lib).
 */
export function checkFile(file: string, shipped: ReadonlySet<string> = new Set(), name = file): AbiReport {
  const arch = elfInfo(file).arch;
  // version -> symbols that need it. objdump -T: only undefined (*UND*) symbols are needs; defined
  // ones are versions the file itself provides (a shipped libstdc++ defines GLIBCXX_3.4.30 etc.).
  const needs = new Map<string, Set<string>>();
  for (const line of objdump('-T', file).split('\n')) {
    const m = /\*UND\*\s+[0-9a-f]+\s+\(?([\w.]+)\)?\s+(\S+)/.exec(line);
    if (!m?.[1] || !m[2] || !VERSION.test(m[1])) continue;
    const symbols = needs.get(m[1]) ?? new Set<string>();
    symbols.add(m[2]);
    needs.set(m[1], symbols);
  }
  // objdump -p: the NEEDED entries, and the version references, which the dynamic loader checks
  // (they cover the -T ones; reading both keeps a stripped symbol table from hiding a need).
  const needed: string[] = [];
  let inReferences = false;
  for (const line of objdump('-p', file).split('\n')) {
    const n = /^\s+NEEDED\s+(\S+)/.exec(line);
    if (n?.[1]) needed.push(n[1]);
    if (/^Version References:/.test(line)) inReferences = true;
    else if (inReferences && !/^\s/.test(line)) inReferences = false;
    const r = inReferences ? /^\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+\d+\s+(\S+)$/.exec(line) : null;
    if (r?.[1] && VERSION.test(r[1]) && !needs.has(r[1])) needs.set(r[1], new Set());
  }

  const highest: Partial<Record<Family, string>> = {};
  const violations: string[] = [];
  for (const [version, symbols] of needs) {
    const m = VERSION.exec(version);
    if (!m) continue;
    const family = m[1] as Family;
    const number = m[2] as string;
    const top = highest[family];
    if (top === undefined || compareVersions(number, top) > 0) highest[family] = number;
    if (compareVersions(number, LIMITS[family]) > 0) {
      const which = symbols.size > 0 ? `: ${[...symbols].sort().join(', ')}` : '';
      violations.push(`needs ${version} > ${family}_${LIMITS[family]} (AL2023)${which}`);
    }
  }
  violations.sort();
  const missing = needed.filter((lib) => !AL2023_LIBRARIES.has(lib) && !shipped.has(lib));
  return { name, file, arch, highest, violations, needed, missing };
}

/** Every .node and .so (also .so.1, .so.1.2.3) file under dir, sorted. */
export function findSharedObjects(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[])
    .filter((path) => /\.node$|\.so(\.\d+)*$/.test(path))
    .map((path) => join(dir, path))
    .filter((path) => statSync(path).isFile())
    .sort();
}

/**
 * Checks a layer laid out as it will be zipped (nodejs/, lib/, etc/ under root): every shared object
 * in it, with lib/'s files counting as shipped.
 */
export function checkLayerDir(root: string): AbiReport[] {
  const files = findSharedObjects(root);
  const lib = join(root, 'lib');
  const shipped = new Set(files.filter((f) => relative(lib, f) === basename(f)).map((f) => basename(f)));
  return files.map((f) => checkFile(f, shipped, relative(root, f)));
}

export function passes(reports: AbiReport[]): boolean {
  return reports.every((r) => r.violations.length === 0);
}

/** One line per file with the highest versions, then its failures and warnings, indented. */
export function formatReport(r: AbiReport): string {
  const versions = FAMILIES.map((f) => (r.highest[f] ? `${f}_${r.highest[f]}` : `${f} -`)).join('  ');
  const lines = [`${r.violations.length > 0 ? 'FAIL' : 'ok  '}  ${r.name}  [${r.arch}]  ${versions}`];
  for (const v of r.violations) lines.push(`      FAIL ${v}`);
  for (const m of r.missing) {
    lines.push(`      warn needs ${m}: not in AL2023's base image and not in the layer's lib/`);
  }
  return lines.join('\n');
}

if (isEntryPoint(import.meta)) {
  const args = process.argv.slice(2);
  if (args.length === 0 || args.includes('--help')) {
    console.error('usage: node layers/abi.ts file-or-dir...');
    process.exit(2);
  }
  try {
    const files = args.flatMap((arg) => (statSync(arg).isDirectory() ? findSharedObjects(arg) : [arg]));
    if (files.length === 0) throw new Error(`no .node or .so files in ${args.join(' ')}`);
    // Every library given counts as shipped (as if they all sat in the layer's lib/).
    const shipped = new Set(files.map((f) => basename(f)));
    const reports = files.map((f) => checkFile(f, shipped));
    for (const r of reports) console.log(formatReport(r));
    const ok = passes(reports);
    console.log(
      ok
        ? `ABI check passed: loads on Amazon Linux 2023 (GLIBC <= ${LIMITS.GLIBC}, GLIBCXX <= ${LIMITS.GLIBCXX}, CXXABI <= ${LIMITS.CXXABI})`
        : 'ABI check FAILED: these files will not load on Amazon Linux 2023 (see layers/README.md)',
    );
    process.exit(ok ? 0 : 1);
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    process.exit(2);
  }
}
