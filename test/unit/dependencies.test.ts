// Dependency hygiene (issue: hardening): exact versions, a lockfile with an integrity hash for
// every package, install scripts for the two packages that need them only, and the production
// dependencies exactly those docs/reliability.md lists with the reason for each. `npm audit`
// cannot run here (the registry mirror answers 405 to its endpoint): docs/reliability.md says so.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
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
