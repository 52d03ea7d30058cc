// The repository points nowhere outside itself: a user's clone holds only the tracked files. No
// path out of it, no notes file it does not hold, no issue numbers or briefs of how the work was
// organised (a comment states the fact and why, not where it was learnt), and every Markdown link
// to a file lands on a tracked file. Public sources are linked by their https:// address.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT } from '../helpers/proxy.ts';

/** npm writes the lockfile; this file spells out the patterns it looks for. */
const EXEMPT = new Set(['package-lock.json', 'test/unit/self-contained.test.ts']);

/** What points outside the repository, and what it points to. */
const OUTSIDE: readonly [RegExp, string][] = [
  [/\.\.\/shared\b/, 'a folder beside the clone'],
  [/(^|[\s'"`(=:])\/work\//m, 'a path on a development machine'],
  [/field[- ]notes/i, 'a notes file the repository does not hold'],
  [/\bissues? #?\d+/i, 'an issue by number'],
  [/\(issue\b|\bissue:|\bthe issue's\b|\bof the issue\b/i, 'an issue'],
  [/\bthe\sbrief\b|\bbrief's\b/i, 'a work brief'],
  [/\bthe lead\b/i, 'how the work was organised'],
];

const tracked = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' })
  .split('\0')
  .filter((file) => file !== '');
const trackedSet = new Set(tracked);
/** Every folder that holds a tracked file: `a`, `a/b` for `a/b/c.md`. */
const folders = new Set(
  tracked.flatMap((file) => {
    const parts = file.split('/');
    return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join('/'));
  }),
);

function findings(file: string, text: string): string[] {
  const found: string[] = [];
  text.split('\n').forEach((line, i) => {
    const what = OUTSIDE.find(([pattern]) => pattern.test(line))?.[1];
    if (what !== undefined) found.push(`${file}:${i + 1}: ${what}: ${line.trim().slice(0, 120)}`);
  });
  return found;
}

describe('the repository is self-contained', () => {
  test('the patterns find what they are for, and not ordinary words', () => {
    // Each example is written in two parts, so that a search of the tree for these pointers finds
    // real ones only.
    const bad = [
      ['See [the spec](..', '/shared/reference/xks_proxy_api_spec.md).'],
      ["const REFERENCE = '/wo", "rk/shared/reference/file';"],
      ['// learnt the hard way (FIELD', '-NOTES)'],
      ['// see the field', ' notes, PKCS#11 layer'],
      ['// Hostile clients (issue', ' 7): ...'],
      ['# fuzzing runs (issues', ' 5 and 7)'],
      ['// bounded runs (issue', ': hardening)'],
      ['// bounded (the issue', "'s 300 KB)"],
      ['/** Per verification (the bri', "ef's budget) */"],
      ['// as the', ' brief asks'],
    ].map((parts) => parts.join(''));
    for (const line of bad) assert.notDeepEqual(findings('x', line), [], line);
    const fine = [
      'This might be a transient network issue.',
      'Please do not report security problems in public issues.',
      'the CA that issues the client certificate',
      'const network = "https://example.com/work/items";',
      'import { ROOT } from "../helpers/proxy.ts";',
      'Briefly: the leading byte, the field names.',
    ];
    for (const line of fine) assert.deepEqual(findings('x', line), [], line);
  });

  test('no tracked file points outside the repository', () => {
    assert.ok(tracked.length > 100 && trackedSet.has('README.md'));
    const found = tracked
      .filter((file) => !EXEMPT.has(file))
      .flatMap((file) => findings(file, readFileSync(join(ROOT, file), 'utf8')));
    assert.deepEqual(found, []);
  });

  test('every Markdown link to a file lands on a tracked file or folder', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const file of tracked.filter((f) => f.endsWith('.md'))) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const [, target = ''] of text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue;
        checked++;
        const path = relative(ROOT, resolve(ROOT, dirname(file), decodeURI(target.replace(/[#?].*$/, ''))));
        if (path.startsWith('..') || !(trackedSet.has(path) || folders.has(path))) {
          broken.push(`${file}: ${target}`);
        }
      }
    }
    assert.ok(checked > 5, `only ${checked} links to files`);
    assert.deepEqual(broken, []);
  });
});
