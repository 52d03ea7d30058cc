// Bundles each Lambda handler with esbuild into dist/<function>/index.mjs (ESM, minified, with
// source maps). pkcs11js stays external: it is a native addon that ships in the PKCS#11 layer.
//
//   node scripts/build.ts [outdir]
//
// Three things keep a cold start short:
// - One file: what a cold start runs is the entry file alone. The AWS SDK's Secrets Manager client,
//   imported only when a secret ARN is configured (functions/aws.ts), is bundled into a file of its
//   own beside it (secrets-manager.mjs, secretsManagerApart) and read only when that import runs.
//   No code splitting: each further ES module a cold start loads (esbuild's shared chunks, the
//   chunk of a dynamic import) costs it a job of Node's module loader.
// - ajv compiles at build time: every `new Ajv(options).compile(schema)` of the functions is
//   compiled here into standalone validator code (ajv/dist/standalone), and the bundles get a
//   small `Ajv` whose compile() returns that code for the same options and schema. The functions'
//   source is unchanged (tests and `npm start` still compile at run time); the bundles carry
//   neither ajv's compiler nor its ~100 ms of compiling at init.
// - Node built-ins are loaded with require(), not import (builtinsByRequire): Node's ES module
//   wrapper of a built-in reads every export, which runs the lazy ones.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Ajv, type Options } from 'ajv';
import standalone from 'ajv/dist/standalone/index.js';
import { type BuildOptions, build, type Metafile, type Plugin } from 'esbuild';
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
  outExtension: { '.js': '.mjs' },
  entryNames: 'index',
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
  /** The entry file: dist/<function>/index.mjs, all that a cold start loads. */
  file: string;
  /** The entry file's size in bytes. */
  bytes: number;
  /** The file read only when a secret is configured (the Secrets Manager client), in bytes. */
  lazyBytes: number;
  /** The source files in the entry file, relative to the project (node_modules/... for dependencies). */
  inputs: string[];
  /** Bytes each of those source files takes in the output. */
  inputBytes: Record<string, number>;
  /** The source files in the Secrets Manager client's file. */
  lazyInputs: string[];
}

export async function buildFunctions(outdir = join(root, 'dist')): Promise<Record<string, Bundle>> {
  const ajvPlugin = precompiledAjv();
  const bundles: Record<string, Bundle> = {};
  for (const name of FUNCTIONS) {
    const dir = join(outdir, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    let secrets: Metafile | undefined;
    const { metafile } = await build({
      ...BUNDLE_OPTIONS,
      absWorkingDir: root,
      entryPoints: [join(root, 'functions', `${name}.ts`)],
      outdir: dir,
      metafile: true,
      plugins: [
        ajvPlugin,
        builtinsByRequire(),
        secretsManagerApart((built) => {
          secrets = built;
        }),
      ],
    });
    if (secrets === undefined) throw new Error(`${name}: no ${SECRETS_FILE} built`);
    bundles[name] = describeBundle(metafile, join(dir, 'index.mjs'), secrets);
  }
  return bundles;
}

/** What a function's build made: its entry file, and the Secrets Manager client's file beside it. */
export function describeBundle(metafile: Metafile, entryFile: string, secrets: Metafile): Bundle {
  const outputOf = (built: Metafile, file: string) => {
    const found = Object.entries(built.outputs).find(([o]) => resolve(root, o) === resolve(file));
    if (found === undefined) throw new Error(`no output ${file} in the build`);
    return found[1];
  };
  const entry = outputOf(metafile, entryFile);
  const lazy = outputOf(secrets, join(dirname(entryFile), SECRETS_FILE));
  return {
    file: resolve(entryFile),
    bytes: entry.bytes,
    lazyBytes: lazy.bytes,
    inputs: Object.keys(entry.inputs),
    inputBytes: Object.fromEntries(
      Object.entries(entry.inputs).map(([i, { bytesInOutput }]) => [i, bytesInOutput]),
    ),
    lazyInputs: Object.keys(lazy.inputs),
  };
}

// ---------------------------------------------------------------------------------------------
// The Secrets Manager client, apart

/** What functions/aws.ts imports to read a secret, only when a secret ARN is configured. */
const SECRETS_MODULE = '@aws-lambda-powertools/parameters/secrets';
/** Its bundle, beside each function's bundle. */
export const SECRETS_FILE = 'secrets-manager.mjs';

/**
 * An esbuild plugin: the dynamic import of the Secrets Manager client (SECRETS_MODULE, with the AWS
 * SDK behind it: ~450 KB) becomes an import of ./secrets-manager.mjs, which the plugin bundles beside
 * each entry file once the build ends. The function's own code stays one file without esbuild's code
 * splitting, so that a cold start loads one ES module. `onBuilt` gets that file's metafile.
 */
export function secretsManagerApart(onBuilt?: (metafile: Metafile) => void): Plugin {
  return {
    name: 'secrets-manager-apart',
    setup(b) {
      b.initialOptions.metafile = true;
      const cwd = b.initialOptions.absWorkingDir ?? process.cwd();
      b.onResolve({ filter: new RegExp(`^${SECRETS_MODULE}$`) }, (args) =>
        args.kind === 'dynamic-import' ? { path: `./${SECRETS_FILE}`, external: true } : undefined,
      );
      b.onEnd(async (result) => {
        if (result.errors.length > 0 || result.metafile === undefined) return;
        const dirs = new Set(
          Object.entries(result.metafile.outputs)
            .filter(([, output]) => output.entryPoint !== undefined)
            .map(([file]) => dirname(resolve(cwd, file))),
        );
        for (const dir of dirs) {
          const { metafile } = await build({
            ...BUNDLE_OPTIONS,
            absWorkingDir: root,
            stdin: {
              contents: `export { getSecret } from '${SECRETS_MODULE}';`,
              resolveDir: root,
              sourcefile: 'secrets-manager.ts',
              loader: 'ts',
            },
            entryNames: undefined,
            outExtension: undefined,
            outfile: join(dir, SECRETS_FILE),
            metafile: true,
            plugins: [builtinsByRequire()],
          });
          onBuilt?.(metafile);
        }
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// ajv at build time

interface Compiled {
  options: Options;
  schema: object;
}

/** The key a compile() is found by, at build time and (as source text) in the bundle alike. */
function keyOf(options: Options | undefined, schema: object): string {
  return JSON.stringify([options ?? {}, schema]);
}

/**
 * Every compile() the functions make: their modules that import ajv are loaded here with an Ajv
 * that records instead of compiling (config.ts compiles at load; schemas.ts compiles each
 * operation's schema on first use, so every operation is asked for).
 */
export async function recordCompiles(): Promise<Compiled[]> {
  const work = mkdtempSync(join(tmpdir(), 'xks-ajv-'));
  try {
    const entry = [
      `import ${JSON.stringify(join(root, 'functions/config.ts'))};`,
      `import { validatorFor } from ${JSON.stringify(join(root, 'functions/schemas.ts'))};`,
      `import { OPERATIONS } from ${JSON.stringify(join(root, 'functions/routes.ts'))};`,
      'for (const operation of OPERATIONS) validatorFor(operation);',
    ].join('\n');
    const recorder = [
      'export const compiled = (globalThis.__xksAjvCompiled ??= []);',
      'export class Ajv {',
      '  constructor(options) { this.options = options; }',
      '  compile(schema) { compiled.push({ options: this.options, schema }); return Object.assign(() => true, { errors: null }); }',
      '}',
      'export default Ajv;',
    ].join('\n');
    const out = join(work, 'record.mjs');
    await build({
      stdin: { contents: entry, resolveDir: root, sourcefile: 'record-ajv.ts', loader: 'ts' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      outfile: out,
      packages: 'external',
      logLevel: 'warning',
      plugins: [
        {
          name: 'ajv-recorder',
          setup(b) {
            b.onResolve({ filter: /^ajv$/ }, () => ({ path: 'ajv', namespace: 'ajv-recorder' }));
            b.onLoad({ filter: /.*/, namespace: 'ajv-recorder' }, () => ({
              contents: recorder,
              loader: 'js',
            }));
          },
        },
      ],
    });
    const store = globalThis as { __xksAjvCompiled?: Compiled[] };
    store.__xksAjvCompiled = [];
    await import(`${pathToFileURL(out).href}?${Date.now()}`);
    const compiled = store.__xksAjvCompiled;
    delete store.__xksAjvCompiled;
    return compiled;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The validators' modules: a shim `ajv` module and one standalone module per schema. */
async function precompile(): Promise<{ shim: string; code: string[] }> {
  const byKey = new Map<string, string>();
  for (const { options, schema } of await recordCompiles()) {
    const key = keyOf(options, schema);
    if (byKey.has(key)) continue;
    const ajv = new Ajv({
      ...options,
      inlineRefs: false,
      code: { ...options?.code, source: true, esm: true },
    });
    // module.exports is the function, and .default too: the typings see only the latter.
    byKey.set(key, standalone.default(ajv, ajv.compile(subschemasApart(schema))));
  }
  const keys = [...byKey.keys()];
  const shim = [
    ...keys.map((_, i) => `import v${i} from 'ajv-precompiled:${i}';`),
    keyOf.toString(),
    `const validators = new Map([${keys.map((k, i) => `[${JSON.stringify(k)}, v${i}]`).join(', ')}]);`,
    'export class Ajv {',
    '  #options;',
    '  constructor(options) { this.#options = options; }',
    '  compile(schema) {',
    '    const validate = validators.get(keyOf(this.#options, schema));',
    "    if (validate === undefined) throw new Error('ajv: this schema was not compiled at build time (scripts/build.ts precompiledAjv)');",
    '    return validate;',
    '  }',
    '}',
    'export default Ajv;',
  ].join('\n');
  return { shim, code: [...byKey.values()] };
}

/**
 * The same schema with each object and array below the root moved to `$defs` and referenced, which
 * ajv (inlineRefs false) compiles to a function of its own. ajv's code for a schema is otherwise one
 * function, and V8 compiles a whole function at its first call: the configuration's is 56 KB, 5-8 ms
 * of every cold start, much of it for sections a configuration leaves out (the fleet, the local
 * server's limits, the client certificate). As functions, only the parts a document reaches are
 * compiled (docs/performance.md, "Cold start"). What a validator accepts, the defaults it fills in
 * and its first error's instancePath, keyword, params and message are the same
 * (test/unit/validator-build.test.ts); only schemaPath names the `$defs` entry.
 */
export function subschemasApart(schema: object): object {
  const defs: Record<string, object> = {};
  const isSchema = (value: unknown): value is Record<string, unknown> =>
    typeof value === 'object' && value !== null && !Array.isArray(value);
  const withParts = (sub: Record<string, unknown>): Record<string, unknown> => {
    const out = { ...sub };
    if (isSchema(sub.properties)) {
      out.properties = Object.fromEntries(Object.entries(sub.properties).map(([k, v]) => [k, apart(v)]));
    }
    if (isSchema(sub.items)) out.items = apart(sub.items);
    return out;
  };
  const apart = (sub: unknown): unknown => {
    if (!isSchema(sub)) return sub;
    const part = withParts(sub);
    if (part.type !== 'object' && part.type !== 'array') return part;
    const { default: value, ...rest } = part;
    const name = `s${Object.keys(defs).length}`;
    defs[name] = rest;
    // The default stays here: ajv's useDefaults reads it from the parent's `properties`.
    return value === undefined ? { $ref: `#/$defs/${name}` } : { $ref: `#/$defs/${name}`, default: value };
  };
  const root = withParts(schema as Record<string, unknown>);
  return Object.keys(defs).length === 0 ? root : { ...root, $defs: defs };
}

let precompiled: Promise<{ shim: string; code: string[] }> | undefined;

/**
 * An esbuild plugin: `ajv` imported from functions/ becomes the precompiled validators. The
 * schemas are compiled once per process, at the first build that uses the plugin.
 */
export function precompiledAjv(): Plugin {
  return {
    name: 'ajv-precompiled',
    async setup(b) {
      precompiled ??= precompile();
      const { shim, code } = await precompiled;
      b.onResolve({ filter: /^ajv$/ }, (args) =>
        args.importer.startsWith(join(root, 'functions'))
          ? { path: 'ajv', namespace: 'ajv-precompiled' }
          : undefined,
      );
      b.onResolve({ filter: /^ajv-precompiled:\d+$/ }, (args) => ({
        path: args.path,
        namespace: 'ajv-precompiled',
      }));
      b.onLoad({ filter: /.*/, namespace: 'ajv-precompiled' }, (args) => ({
        contents: args.path === 'ajv' ? shim : (code[Number(args.path.split(':')[1])] as string),
        loader: 'js',
        // The standalone code requires ajv's small runtime helpers (ajv/dist/runtime/*).
        resolveDir: root,
      }));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Node built-ins

/**
 * An esbuild plugin: `import ... from 'node:x'` in the bundles becomes require('node:x') (the banner's
 * require). Node answers an import of a built-in with an ES module wrapper that copies every export
 * of it, so each lazy export is loaded: node:http's WebSocket and fetch classes load undici, tens of ms
 * at cold start for the one `STATUS_CODES` the front door reads; node:fs's `promises` loads
 * fs/promises and readline.
 *
 * The module esbuild gets for the built-in is an ES module with one export per export of the
 * built-in, each read from it only if the bundle uses it (a pure expression, dropped when unused).
 * As CommonJS (`module.exports = require(...)`), each file importing it got esbuild's interop copy:
 * a getter per export of the built-in, about a thousand at every cold start.
 */
export function builtinsByRequire(): Plugin {
  return {
    name: 'builtins-by-require',
    setup(b) {
      b.onResolve({ filter: /^[a-z:_/]+$/ }, (args) =>
        args.kind === 'import-statement' && isBuiltin(args.path)
          ? { path: args.path, namespace: 'builtin-by-require' }
          : undefined,
      );
      b.onLoad({ filter: /.*/, namespace: 'builtin-by-require' }, (args) => {
        const names = Object.keys(process.getBuiltinModule(args.path) as object).filter(
          (name) => name !== 'default' && /^[A-Za-z_$][\w$]*$/.test(name),
        );
        return {
          contents: [
            `const builtin = require(${JSON.stringify(args.path)});`,
            ...names.map((name) => `export const ${name} = /* @__PURE__ */ (() => builtin.${name})();`),
            'export default builtin;',
          ].join('\n'),
          loader: 'js',
        };
      });
    },
  };
}

/**
 * For serverless-esbuild (serverless.yml `custom.esbuild.plugins: scripts/build.ts`): it requires
 * this file and calls its default export for the plugins, so that `sls package` builds the same
 * bundles as buildFunctions.
 */
export default function serverlessEsbuildPlugins(): Plugin[] {
  return [precompiledAjv(), builtinsByRequire(), secretsManagerApart()];
}

// No top-level await: serverless-esbuild require()s this file for its plugins.
if (isEntryPoint(import.meta)) {
  buildFunctions(process.argv[2] ? resolve(process.argv[2]) : undefined).then((bundles) => {
    for (const [name, { bytes, lazyBytes }] of Object.entries(bundles)) {
      console.log(
        `${name.padEnd(16)} ${(bytes / 1024).toFixed(1)} KiB at cold start, ${(lazyBytes / 1024).toFixed(1)} KiB on demand`,
      );
    }
  });
}
