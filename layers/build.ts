// Builds the PKCS#11 Lambda layer zip: pkcs11js (the native addon npm built in node_modules) under
// nodejs/node_modules, the HSM worker thread's bundled code (nodejs/hsm-worker.mjs), the HSM
// vendor's PKCS#11 library under lib/ and its config under etc/. Lambda
// mounts a layer at /opt: /opt/nodejs/node_modules is on the module path, /opt/lib on
// LD_LIBRARY_PATH. The zip is only written when every .node/.so in it matches the target
// architecture and passes the AL2023 ABI check (layers/abi.ts). See layers/README.md.
//
//   node layers/build.ts [--arch x86_64|arm64] --vendor-lib /path/libvendor.so
//                        [--vendor-config /path/file-or-dir]... [--out dir]
//   node layers/build.ts --demo-softhsm [--arch x86_64|arm64] [--out dir]     (NOT FOR PRODUCTION)
import {
  copyFileSync,
  cpSync,
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { ZipFile } from 'yazl';
import { isEntryPoint } from '../scripts/entry-point.ts';
import { type AbiReport, checkLayerDir, elfInfo, findSharedObjects, formatReport, passes } from './abi.ts';

export const ARCHS = ['x86_64', 'arm64'] as const;
export type Arch = (typeof ARCHS)[number];

const root = resolve(import.meta.dirname, '..');
export const DEFAULT_OUT = join(root, 'layers', 'dist');
export const DEFAULT_PKCS11JS = join(root, 'node_modules', 'pkcs11js');

/** What the layer takes from the npm-built pkcs11js: no sources, no obj.target, nothing else. */
export const PKCS11JS_FILES = [
  'package.json',
  'index.js',
  'index.d.ts',
  'LICENSE',
  'build/Release/pkcs11.node',
];
const PKCS11JS_DIR = 'nodejs/node_modules/pkcs11js';

/** Cedar's Node.js build (secondary authorization): JavaScript and wasm, no native code. */
export const DEFAULT_CEDAR = join(root, 'node_modules', '@cedar-policy', 'cedar-wasm');
export const CEDAR_FILES = [
  'package.json',
  'nodejs/package.json',
  'nodejs/cedar_wasm.js',
  'nodejs/cedar_wasm_bg.wasm',
];
const CEDAR_DIR = 'nodejs/node_modules/@cedar-policy/cedar-wasm';

/**
 * The HSM worker thread's code (layers/pkcs11/hsm-worker.ts), bundled: the functions start it from
 * the layer (XKS_HSM_WORKER=/opt/nodejs/hsm-worker.mjs in serverless.yml); pkcs11js stays external
 * and is found beside it in /opt/nodejs/node_modules.
 */
export const HSM_WORKER_FILE = 'nodejs/hsm-worker.mjs';

export async function buildHsmWorker(outFile: string): Promise<void> {
  const { build } = await import('esbuild');
  await build({
    entryPoints: [join(root, 'layers', 'pkcs11', 'hsm-worker.ts')],
    outfile: outFile,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    minify: true,
    external: ['pkcs11js'],
    logLevel: 'error',
  });
}

/** Where SoftHSM's demo tokens live on Lambda: the only writable place, wiped with the environment. */
export const DEMO_TOKEN_DIR = '/tmp/softhsm/tokens';

export const DEMO_SOFTHSM_CONF = `# SoftHSM demo layer: NOT FOR PRODUCTION. A software token in /tmp, lost on every cold start.
# Lambda: set SOFTHSM2_CONF=/opt/etc/softhsm2.conf and create ${DEMO_TOKEN_DIR} before C_Initialize.
directories.tokendir = ${DEMO_TOKEN_DIR}
objectstore.backend = file
log.level = ERROR
slots.removable = false
`;

export const DEMO_README = `!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  NOT FOR PRODUCTION. NOT FOR PRODUCTION. NOT FOR PRODUCTION.                                !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

This is the SoftHSM DEMO layer of serverless-xks-proxy. SoftHSM is a SOFTWARE token:

  - keys are NOT protected by any hardware: they are files in the Lambda's /tmp, readable by
    anything that runs in the function;
  - the token directory (${DEMO_TOKEN_DIR}) is LOST ON EVERY COLD START, and every
    concurrent Lambda environment has its own, different keys: data encrypted by one
    environment cannot be decrypted by another, or after a cold start. Anything encrypted
    with a KMS key backed by this layer can become UNRECOVERABLE at any time.

Use it only to try the deployment end to end. For real keys build the layer with your HSM
vendor's PKCS#11 library: node layers/build.ts --vendor-lib /path/libvendor.so (layers/README.md).

Contents: nodejs/node_modules/pkcs11js (the addon), lib/libsofthsm2.so (Debian's SoftHSM 2),
etc/softhsm2.conf (token directory ${DEMO_TOKEN_DIR}). The function needs
SOFTHSM2_CONF=/opt/etc/softhsm2.conf, hsm.modulePath /opt/lib/libsofthsm2.so, and must create
${DEMO_TOKEN_DIR} and a token with its keys at start-up.
`;

export function layerZipName(arch: Arch, demo: boolean): string {
  return demo ? `pkcs11-layer-NOT-FOR-PRODUCTION-softhsm-demo-${arch}.zip` : `pkcs11-layer-${arch}.zip`;
}

export interface LayerOptions {
  arch?: Arch;
  /** The vendor's PKCS#11 library (first) and any libraries it needs, copied to lib/. */
  vendorLibs?: string[];
  /** Config files or folders, copied to etc/<name>. */
  vendorConfigs?: string[];
  /** SoftHSM demo layer instead of a vendor library. NOT FOR PRODUCTION. */
  demoSoftHsm?: boolean;
  outDir?: string;
  /** The npm-built pkcs11js package; node_modules/pkcs11js by default. */
  pkcs11jsDir?: string;
  /** Progress lines (the ABI report); silent by default. */
  log?: (line: string) => void;
}

export interface Layer {
  zip: string;
  bytes: number;
  /** The zip's entries, sorted. */
  entries: string[];
  reports: AbiReport[];
}

function copyInto(stage: string, dest: string, src: string): void {
  const target = join(stage, dest);
  if (statSync(target, { throwIfNoEntry: false })) throw new Error(`two inputs would both be ${dest}`);
  if (!statSync(src, { throwIfNoEntry: false })) throw new Error(`${src} not found`);
  mkdirSync(dirname(target), { recursive: true });
  // Dereference symlinks: a layer zip should hold the files (Debian's libsofthsm2.so is a symlink).
  if (statSync(src).isDirectory()) cpSync(src, target, { recursive: true, dereference: true });
  else copyFileSync(src, target);
}

/** Every file under dir, relative and sorted: the zip's entries. */
function listFiles(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[])
    .filter((path) => statSync(join(dir, path)).isFile())
    .sort();
}

/** Fixed timestamps so that the same inputs give the same zip. */
const MTIME = new Date(2000, 0, 1);

async function writeZip(stage: string, files: string[], zipPath: string): Promise<void> {
  const zip = new ZipFile();
  for (const file of files) {
    const executable = /\.node$|\.so(\.\d+)*$/.test(file);
    zip.addBuffer(readFileSync(join(stage, file)), file, {
      mtime: MTIME,
      mode: executable ? 0o100755 : 0o100644,
    });
  }
  zip.end();
  // Write beside the target and rename: a failed build never leaves a half-written zip behind.
  const partial = `${zipPath}.partial`;
  try {
    await pipeline(zip.outputStream, createWriteStream(partial));
    renameSync(partial, zipPath);
  } finally {
    rmSync(partial, { force: true });
  }
}

export async function buildLayer(options: LayerOptions): Promise<Layer> {
  const arch = options.arch ?? 'x86_64';
  const demo = options.demoSoftHsm ?? false;
  const vendorLibs = options.vendorLibs ?? [];
  const vendorConfigs = options.vendorConfigs ?? [];
  const log = options.log ?? (() => {});
  if (!ARCHS.includes(arch)) throw new Error(`--arch must be x86_64 or arm64, not ${arch}`);
  if (demo && (vendorLibs.length > 0 || vendorConfigs.length > 0)) {
    throw new Error(
      '--demo-softhsm builds the SoftHSM demo layer: it takes no --vendor-lib or --vendor-config',
    );
  }
  if (!demo && vendorLibs.length === 0) {
    throw new Error(
      "--vendor-lib is required: the path to your HSM vendor's PKCS#11 library (or --demo-softhsm)",
    );
  }

  const outDir = resolve(options.outDir ?? DEFAULT_OUT);
  const zipPath = join(outDir, layerZipName(arch, demo));
  // An old zip of the same name must not survive a refused build and pass for its result.
  rmSync(zipPath, { force: true });

  const stage = mkdtempSync(join(tmpdir(), 'pkcs11-layer-'));
  try {
    const pkcs11js = options.pkcs11jsDir ?? DEFAULT_PKCS11JS;
    for (const file of PKCS11JS_FILES) {
      const src = join(pkcs11js, file);
      if (!statSync(src, { throwIfNoEntry: false })) {
        throw new Error(`${src} is missing: build pkcs11js first (npm ci, on a machine of the target arch)`);
      }
      copyInto(stage, `${PKCS11JS_DIR}/${file}`, src);
    }
    for (const file of CEDAR_FILES) copyInto(stage, `${CEDAR_DIR}/${file}`, join(DEFAULT_CEDAR, file));
    await buildHsmWorker(join(stage, HSM_WORKER_FILE));
    if (demo) {
      const { findSoftHsmModule } = await import('../scripts/softhsm.ts');
      copyInto(stage, 'lib/libsofthsm2.so', findSoftHsmModule());
      mkdirSync(join(stage, 'etc'), { recursive: true });
      writeFileSync(join(stage, 'etc', 'softhsm2.conf'), DEMO_SOFTHSM_CONF);
      writeFileSync(join(stage, 'README.txt'), DEMO_README);
    } else {
      // The name given is kept (a symlink's name, e.g. libvendor.so -> libvendor.so.1.2.3).
      for (const lib of vendorLibs) copyInto(stage, `lib/${basename(lib)}`, lib);
      for (const config of vendorConfigs) copyInto(stage, `etc/${basename(config)}`, config);
    }

    // Architecture first: an arm64 layer with an x86_64 addon fails at the first require().
    const wrong = findSharedObjects(stage)
      .map((file) => ({ name: relative(stage, file), found: elfInfo(file).arch }))
      .filter(({ found }) => found !== arch);
    if (wrong.length > 0) {
      throw new Error(
        `--arch ${arch}, but ${wrong.map(({ name, found }) => `${name} is ${found}`).join(', ')}: ` +
          `every .node and .so in the layer must be ${arch} (build pkcs11js with npm ci on an ${arch} ` +
          `machine or container, and use the vendor's ${arch} library)`,
      );
    }

    const reports = checkLayerDir(stage);
    for (const report of reports) log(formatReport(report));
    if (!passes(reports)) {
      throw new Error(
        `ABI check failed, no zip written: the files marked FAIL need newer glibc/libstdc++ than Amazon Linux 2023 has ` +
          `(see layers/README.md)\n${reports.map(formatReport).join('\n')}`,
      );
    }

    mkdirSync(outDir, { recursive: true });
    const entries = listFiles(stage);
    await writeZip(stage, entries, zipPath);
    return { zip: zipPath, bytes: statSync(zipPath).size, entries, reports };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

const USAGE = `usage: node layers/build.ts [--arch x86_64|arm64] --vendor-lib /path/libvendor.so [--vendor-lib dep.so]...
                           [--vendor-config /path/file-or-dir]... [--out dir]
       node layers/build.ts --demo-softhsm [--arch x86_64|arm64] [--out dir]   (NOT FOR PRODUCTION)`;

if (isEntryPoint(import.meta)) {
  try {
    const { values } = parseArgs({
      options: {
        arch: { type: 'string', default: 'x86_64' },
        'vendor-lib': { type: 'string', multiple: true },
        'vendor-config': { type: 'string', multiple: true },
        'demo-softhsm': { type: 'boolean', default: false },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      console.log(USAGE);
      process.exit(0);
    }
    const layer = await buildLayer({
      arch: values.arch as Arch,
      vendorLibs: values['vendor-lib'],
      vendorConfigs: values['vendor-config'],
      demoSoftHsm: values['demo-softhsm'],
      outDir: values.out,
      log: (line) => console.log(line),
    });
    console.log(`${layer.zip}  ${(layer.bytes / 1024).toFixed(1)} KiB`);
    if (values['demo-softhsm'])
      console.log('SoftHSM DEMO layer: NOT FOR PRODUCTION (see README.txt in the zip)');
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    if ((error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) console.error(USAGE);
    process.exit(1);
  }
}
