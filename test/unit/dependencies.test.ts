// Dependency hygiene: exact versions, a lockfile with an integrity hash for every package, install
// scripts for the two packages that need them only, the production dependencies exactly those
// docs/reliability.md lists with the reason for each, and runtime code that loads nothing else. `npm audit`
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
 * string literal is returned as `<computed>`: it cannot be checked.
 */
function runtimeImports(fileName: string, source: string): string[] {
  const file = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const literal = (node: ts.Node | undefined) =>
    node !== undefined && ts.isStringLiteralLike(node) ? node.text : '<computed>';
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      if (!node.importClause?.isTypeOnly) found.push(literal(node.moduleSpecifier));
    } else if (ts.isExportDeclaration(node)) {
      if (node.moduleSpecifier !== undefined && !node.isTypeOnly) found.push(literal(node.moduleSpecifier));
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
