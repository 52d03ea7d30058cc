// Dependency hygiene: exact versions, a lockfile with an integrity hash for every package, install
// scripts for the two packages that need them only, the production dependencies exactly those
// docs/reliability.md lists with the reason for each, runtime code that loads nothing else, and the
// directions of the proxy's own imports (handlers, layer, domain, local server, AWS). `npm audit`
// cannot run here (the registry mirror answers 405 to its endpoint): docs/reliability.md says so.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import ts from 'typescript';
import { ROOT } from '../helpers/proxy.ts';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));

test('every dependency is pinned to an exact version', () => {
  for (const [name, range] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
    assert.match(String(range), /^\d+\.\d+\.\d+$/, `${name}@${range} is not an exact version`);
  }
});

test('the lockfile pins every package with a sha512 integrity hash', () => {
  const packages = Object.entries(lock.packages as Record<string, { integrity?: string; link?: boolean }>);
  assert.ok(packages.length > 100);
  for (const [path, info] of packages) {
    if (path === '' || info.link) continue;
    assert.match(info.integrity ?? '', /^sha512-/, `${path} has no sha512 integrity`);
  }
});

test('install scripts run for pkcs11js (native addon) and esbuild (its binary) only', () => {
  assert.deepEqual(Object.keys(pkg.allowScripts).sort(), ['esbuild', 'pkcs11js']);
});

test('the production dependencies are exactly those docs/reliability.md lists, each with a reason', () => {
  const doc = readFileSync(join(ROOT, 'docs/reliability.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Dependencies'));
  const listed = [...section.matchAll(/^\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]{20,}?)\s*\|$/gm)].map(
    (m) => [m[1], m[2]?.trim()],
  );
  assert.deepEqual(
    listed.map(([name]) => name).sort(),
    Object.keys(pkg.dependencies).sort(),
    'docs/reliability.md and package.json disagree',
  );
  for (const [name, version] of listed) assert.equal(version, pkg.dependencies[name as string], name);
});

// ---------------------------------------------------------------------------------------------
// What runs from an installation reaches production dependencies only: an import of a
// devDependency works in a clone and breaks where `npm install --omit=dev` installed the project
// (the Lambda bundles, an installed CLI).

/** The runtime code: the handlers, the local server, the CLI and the PKCS#11 layer. */
const RUNTIME_DIRS = ['functions/', 'local/', 'bin/', 'layers/'];
/** Build tools kept beside the code they build: they run from a clone, with its devDependencies. */
const BUILD_TOOLS: Record<string, string> = {
  'layers/build.ts': 'builds the layer zip (esbuild), from a clone',
};

/**
 * The modules a file loads when it runs, in the order written: static imports and re-exports
 * (not `import type` / `export type`, which Node strips; `import { type X }` still loads the module),
 * `import('...')`, and `require('...')` / `createRequire(...)('...')`. A specifier that is not a
 * string literal is returned as `<computed>`: it cannot be checked. `withTypes`: the type-only
 * imports too (what the file depends on, loaded or not).
 */
function runtimeImports(fileName: string, source: string, withTypes = false): string[] {
  const file = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const literal = (node: ts.Node | undefined) =>
    node !== undefined && ts.isStringLiteralLike(node) ? node.text : '<computed>';
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      if (withTypes || !node.importClause?.isTypeOnly) found.push(literal(node.moduleSpecifier));
    } else if (ts.isExportDeclaration(node)) {
      if (node.moduleSpecifier !== undefined && (withTypes || !node.isTypeOnly)) {
        found.push(literal(node.moduleSpecifier));
      }
    } else if (withTypes && ts.isImportTypeNode(node)) {
      found.push(literal(ts.isLiteralTypeNode(node.argument) ? node.argument.literal : undefined));
    } else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const loads =
        callee.kind === ts.SyntaxKind.ImportKeyword ||
        (ts.isIdentifier(callee) && callee.text === 'require') ||
        (ts.isCallExpression(callee) &&
          ts.isIdentifier(callee.expression) &&
          callee.expression.text === 'createRequire');
      if (loads) found.push(literal(node.arguments[0]));
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

/** `@scope/name/sub` -> `@scope/name`; `name/sub` -> `name`. */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
}

/** Every file the runtime code loads, from every file in RUNTIME_DIRS, with the packages each imports. */
function runtimeGraph(): { files: Set<string>; packages: { file: string; specifier: string }[] } {
  const tracked = execFileSync('git', ['ls-files', ...RUNTIME_DIRS], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => /\.(ts|js|mjs|cjs)$/.test(f) && BUILD_TOOLS[f] === undefined);
  const files = new Set<string>();
  const packages: { file: string; specifier: string }[] = [];
  const queue = [...tracked];
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    if (files.has(file)) continue;
    files.add(file);
    if (file.endsWith('.json')) continue;
    for (const specifier of runtimeImports(file, readFileSync(join(ROOT, file), 'utf8'))) {
      if (specifier.startsWith('.')) {
        const target = relative(ROOT, resolve(ROOT, dirname(file), specifier));
        assert.ok(existsSync(join(ROOT, target)), `${file} imports ${specifier}, which does not exist`);
        queue.push(target);
      } else if (!isBuiltin(specifier)) {
        packages.push({ file, specifier });
      }
    }
  }
  return { files, packages };
}

describe('runtime code imports production dependencies only', () => {
  test('the import scanner sees what Node loads, and only that', () => {
    const source = [
      "import type { A } from 'type-only';",
      "import { type B } from 'inline-type';",
      "import def, { c } from 'static';",
      "import 'side-effect';",
      "export { d } from 'reexport';",
      "export type { E } from 'type-reexport';",
      "type F = typeof import('type-query');",
      "const g = await import('dynamic');",
      "const h = createRequire(import.meta.url)('created-require');",
      "const i = require('plain-require');",
      'const j = await import(name);',
      "// import('in-a-comment') and require('in-a-comment')",
      'const k = \'import("in-a-string")\';',
    ].join('\n');
    assert.deepEqual(runtimeImports('x.ts', source), [
      'inline-type',
      'static',
      'side-effect',
      'reexport',
      'dynamic',
      'created-require',
      'plain-require',
      '<computed>',
    ]);
    // And on a real file that imports devDependencies: the test signers.
    const signers = runtimeImports('sign.ts', readFileSync(join(ROOT, 'test/helpers/sign.ts'), 'utf8'));
    assert.deepEqual(signers, ['@aws-crypto/sha256-js', '@smithy/signature-v4', 'aws4']);
    assert.ok(signers.every((s) => pkg.devDependencies[packageOf(s)] !== undefined));
  });

  test('every package that functions/, local/, bin/ and layers/ load is in "dependencies"', () => {
    const { files, packages } = runtimeGraph();
    // The walk reaches what the entry points load, beyond their folders and through dynamic imports.
    for (const file of ['bin/xks-proxy.ts', 'bin/preflight/run.ts', 'bin/preflight/trusted-cas.json']) {
      assert.ok(files.has(file), `${file} not reached`);
    }
    assert.ok(files.has('scripts/entry-point.ts') && files.has('functions/sigv4.ts'));
    assert.ok(packages.some((p) => p.specifier === 'pkcs11js') && packages.length > 10);
    for (const tool of Object.keys(BUILD_TOOLS)) {
      const loads = runtimeImports(tool, readFileSync(join(ROOT, tool), 'utf8'));
      assert.ok(
        loads.some((s) => pkg.devDependencies[packageOf(s)] !== undefined),
        `${tool} loads no devDependency: it needs no exception`,
      );
    }
    const outside = packages
      .filter(
        ({ specifier }) => specifier === '<computed>' || pkg.dependencies[packageOf(specifier)] === undefined,
      )
      .map(
        ({ file, specifier }) =>
          `${file} loads ${specifier}${pkg.devDependencies[packageOf(specifier)] === undefined ? '' : ' (a devDependency)'}`,
      );
    assert.deepEqual(outside, []);
  });

  test('the CLI runs with nothing but "dependencies" resolvable', () => {
    // Each command loads its whole module graph before it reads its arguments; --help then exits 0.
    for (const command of [['preflight'], ['credentials'], ['audit'], ['keys']]) {
      const result = spawnSync(
        process.execPath,
        [
          '--import',
          join(ROOT, 'test/helpers/production-only.ts'),
          join(ROOT, 'bin/xks-proxy.ts'),
          ...command,
          '--help',
        ],
        { cwd: ROOT, encoding: 'utf8' },
      );
      assert.equal(result.status, 0, `xks-proxy ${command.join(' ')} --help: ${result.stderr}`);
      assert.match(result.stdout, /Usage|usage/, command.join(' '));
    }
    // The guard itself refuses a devDependency.
    const refused = spawnSync(
      process.execPath,
      ['--import', join(ROOT, 'test/helpers/production-only.ts'), join(ROOT, 'test/helpers/sign.ts')],
      { cwd: ROOT, encoding: 'utf8' },
    );
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /@aws-crypto\/sha256-js is not in package\.json "dependencies"/);
  });
});

// ---------------------------------------------------------------------------------------------
// Dependency directions inside the proxy. Each rule is a function over one file's path and source,
// returning what it breaks; the tree must break none, and each rule must catch a planted breach.

/** The proxy's own runtime code these rules are about. */
const PROXY_DIRS = ['functions/', 'local/', 'layers/'];
/** XKS domain rules: pure computation over requests, keys and records. */
const DOMAIN = [
  'errors',
  'ids',
  'schemas',
  'xks',
  'routes',
  'mtls',
  'sigv4',
  'audit',
  'revocation',
  'authorization',
].map((f) => `functions/${f}.ts`);
/** What local/ may use of functions/: the handlers, the runtime factory and its input, the error table. */
const LOCAL_MAY_IMPORT = [
  'functions/handlers.ts',
  'functions/runtime.ts',
  'functions/config.ts',
  'functions/errors.ts',
];
/** The one module that names AWS services or the Lambda environment (infra/ and serverless.yml aside). */
const AWS_BOUNDARY = 'functions/aws.ts';
const AWS_PACKAGE = /^(?:@aws-sdk\/|@smithy\/|@aws-lambda-powertools\/parameters)/;
/** Packages domain code must not load, however indirectly. */
const NOT_IN_DOMAIN = /^(?:@middy\/|pkcs11js$|@aws-sdk\/|@smithy\/|@aws-lambda-powertools\/)/;
/**
 * Built-ins a cold start does without: node:http with net, streams and the HTTP client and server
 * (errors.ts has the reason phrases); node:worker_threads, loaded with the first HSM worker, which
 * an on-demand cold start starts after its response (layers/pkcs11/worker-hsm.ts); node:v8, loaded
 * at the first young-generation collection, during an HSM call (functions/young-gc.ts); node:os,
 * loaded after the first response to lower V8's background threads (functions/background-threads.ts).
 */
const NOT_AT_COLD_START = ['node:http', 'node:worker_threads', 'node:v8', 'node:os'];

/** A relative specifier as a path from the repository's root; a package name as it is. */
function target(file: string, specifier: string): string {
  return specifier.startsWith('.') ? relative(ROOT, resolve(ROOT, dirname(file), specifier)) : specifier;
}

/** The files a file loads (runtime imports), or depends on (withTypes), as targets. */
function importsOf(file: string, source: string, withTypes = false): string[] {
  return runtimeImports(file, source, withTypes).map((s) => target(file, s));
}

function visit(source: string, fileName: string, each: (node: ts.Node, file: ts.SourceFile) => void): void {
  const file = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const walk = (node: ts.Node): void => {
    each(node, file);
    ts.forEachChild(node, walk);
  };
  walk(file);
}

interface Rule {
  name: string;
  /** What `file` breaks of the rule; `read` gives any other file's source. */
  check(file: string, source: string, read: (file: string) => string): string[];
  /** Files that break it, to show that the check catches them. */
  breaches: Array<[file: string, source: string]>;
}

const RULES: Rule[] = [
  {
    name: 'a route handler reaches the HSM, the configuration and the logger only through its request',
    check: (file, source) =>
      file.startsWith('functions/operations/')
        ? importsOf(file, source)
            .filter((t) => t.startsWith('layers/') || t === 'functions/runtime.ts' || t === AWS_BOUNDARY)
            .map((t) => `${file} loads ${t}`)
        : [],
    breaches: [
      ['functions/operations/x.ts', "import { createRuntime } from '../runtime.ts';"],
      ['functions/operations/x.ts', "import { HsmFleet } from '../../layers/pkcs11/fleet.ts';"],
    ],
  },
  {
    name: 'the PKCS#11 layer imports nothing from functions/',
    check: (file, source) =>
      file.startsWith('layers/')
        ? importsOf(file, source, true)
            .filter((t) => t.startsWith('functions/'))
            .map((t) => `${file} imports ${t}`)
        : [],
    breaches: [['layers/pkcs11/x.ts', "import type { Runtime } from '../../functions/runtime.ts';"]],
  },
  {
    name: 'domain code loads neither middy, pkcs11js, Powertools nor an AWS SDK, however indirectly',
    check: (file, source, read) => {
      if (!DOMAIN.includes(file)) return [];
      const problems: string[] = [];
      const seen = new Set<string>();
      const queue = [file];
      for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
        if (seen.has(f)) continue;
        seen.add(f);
        for (const t of importsOf(f, f === file ? source : read(f))) {
          if (NOT_IN_DOMAIN.test(t))
            problems.push(`${file} loads ${t}${f === file ? '' : ` (through ${f})`}`);
          else if (t.endsWith('.ts')) queue.push(t);
        }
      }
      return problems;
    },
    breaches: [
      ['functions/xks.ts', "import { Logger } from '@aws-lambda-powertools/logger';"],
      ['functions/errors.ts', "import { xksHandler } from './middleware.ts';"],
    ],
  },
  {
    name: 'local/ uses of functions/ only the handlers, the runtime factory, its config, the error table',
    check: (file, source) =>
      file.startsWith('local/')
        ? importsOf(file, source, true)
            .filter((t) => t.startsWith('functions/') && !LOCAL_MAY_IMPORT.includes(t))
            .map((t) => `${file} imports ${t}`)
        : [],
    breaches: [
      ['local/x.ts', "import { parseRoute } from '../functions/routes.ts';"],
      ['local/x.ts', "import type { Route } from '../functions/routes.ts';"],
    ],
  },
  {
    name: 'only functions/aws.ts names AWS services or the Lambda environment (AWS SDKs, AWS_* variables)',
    check: (file, source) => {
      if (file === AWS_BOUNDARY) return [];
      const problems = importsOf(file, source)
        .filter((t) => AWS_PACKAGE.test(t))
        .map((t) => `${file} loads ${t}`);
      visit(source, file, (node) => {
        if ((ts.isIdentifier(node) || ts.isStringLiteralLike(node)) && /\bAWS_[A-Z]/.test(node.text)) {
          problems.push(`${file} names ${node.text}`);
        }
      });
      return problems;
    },
    breaches: [
      ['functions/runtime.ts', 'const lambda = process.env.AWS_LAMBDA_FUNCTION_NAME;'],
      ['functions/config.ts', "const lambda = env['AWS_LAMBDA_FUNCTION_NAME'];"],
      ['local/x.ts', "await import('@aws-sdk/client-secrets-manager');"],
    ],
  },
  {
    name: 'HSM errors are mapped to XKS errors in functions/errors.ts only',
    check: (file, source) => {
      if (!file.startsWith('functions/') || file === 'functions/errors.ts') return [];
      const problems: string[] = [];
      visit(source, file, (node) => {
        if (ts.isImportSpecifier(node) && node.name.text === 'HsmError')
          problems.push(`${file} imports HsmError`);
      });
      return problems;
    },
    breaches: [['functions/operations/x.ts', "import { HsmError } from '../../layers/pkcs11/hsm.ts';"]],
  },
  {
    name: 'HTTP error statuses are written in functions/errors.ts only',
    check: (file, source) => {
      if (file === 'functions/errors.ts' || !(file.startsWith('functions/') || file.startsWith('local/')))
        return [];
      const problems: string[] = [];
      visit(source, file, (node, sourceFile) => {
        // As written: the scanner gives 0o700 as 448.
        if (ts.isNumericLiteral(node) && /^[45]\d\d$/.test(node.getText(sourceFile))) {
          problems.push(`${file} writes the status ${node.text}`);
        }
      });
      return problems;
    },
    breaches: [['local/x.ts', 'res.writeHead(404);']],
  },
  {
    name: 'the functions and the HSM layer import no built-in a cold start does without',
    check: (file, source) => {
      // The Lambda bundles' modules; the worker thread's own code needs node:worker_threads.
      const bundled = file.startsWith('functions/') || file.startsWith('layers/pkcs11/');
      if (!bundled || file === 'layers/pkcs11/hsm-worker.ts') return [];
      const imports = importsOf(file, source);
      return NOT_AT_COLD_START.filter((name) => imports.includes(name)).map(
        (name) => `${file} imports ${name}`,
      );
    },
    breaches: [
      ['functions/front-door.ts', "import { STATUS_CODES } from 'node:http';"],
      ['layers/pkcs11/worker-hsm.ts', "import { Worker } from 'node:worker_threads';"],
      ['functions/young-gc.ts', "import { getHeapSpaceStatistics } from 'node:v8';"],
      ['functions/background-threads.ts', "import { setPriority } from 'node:os';"],
    ],
  },
];

describe('dependency directions', () => {
  const tracked = execFileSync('git', ['ls-files', ...PROXY_DIRS], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => f.endsWith('.ts'));
  const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');

  for (const rule of RULES) {
    test(rule.name, () => {
      assert.deepEqual(
        tracked.flatMap((file) => rule.check(file, read(file), read)),
        [],
      );
      for (const [file, source] of rule.breaches) {
        assert.notDeepEqual(rule.check(file, source, read), [], `not caught: ${file}: ${source}`);
      }
    });
  }
});
