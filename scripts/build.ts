// Bundles each Lambda handler with esbuild into dist/<function>/index.mjs (ESM, minified, with
// source maps). pkcs11js stays external: it is a native addon that ships in the PKCS#11 layer.
//
//   node scripts/build.ts [outdir]
import { mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type BuildOptions, build } from 'esbuild';
import { isEntryPoint } from './entry-point.ts';

export const FUNCTIONS = ['getHealthStatus', 'getKeyMetadata', 'encrypt', 'decrypt'] as const;

const root = resolve(import.meta.dirname, '..');

export const BUNDLE_OPTIONS: BuildOptions = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  minify: true,
  sourcemap: true,
  // Native addon and wasm: both ship in the layer (nodejs/node_modules), not in the bundles.
  external: ['pkcs11js', '@cedar-policy/cedar-wasm'],
  // Some dependencies are CommonJS and call require() for Node built-ins.
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  legalComments: 'none',
  logLevel: 'warning',
};

export interface Bundle {
  file: string;
  bytes: number;
  /** The source files inside, relative to the project (node_modules/... for dependencies). */
  inputs: string[];
}

export async function buildFunctions(outdir = join(root, 'dist')): Promise<Record<string, Bundle>> {
  const bundles: Record<string, Bundle> = {};
  for (const name of FUNCTIONS) {
    const dir = join(outdir, name);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'index.mjs');
    const { metafile } = await build({
      ...BUNDLE_OPTIONS,
      absWorkingDir: root,
      entryPoints: [join(root, 'functions', `${name}.ts`)],
      outfile: file,
      metafile: true,
    });
    bundles[name] = { file, bytes: statSync(file).size, inputs: Object.keys(metafile.inputs) };
  }
  return bundles;
}

if (isEntryPoint(import.meta)) {
  const bundles = await buildFunctions(process.argv[2] ? resolve(process.argv[2]) : undefined);
  for (const [name, { bytes }] of Object.entries(bundles)) {
    console.log(`${name.padEnd(16)} ${(bytes / 1024).toFixed(1)} KiB`);
  }
}
