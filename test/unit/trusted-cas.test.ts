// The root CAs `xks-proxy preflight` accepts (bin/preflight/trusted-cas.json) must be exactly those of
// the spec's TrustedCertificateAuthorities table (spec: Authentication), as the repository's copy
// (data/aws-kms-xksproxy-api-spec/) has it, with that copy's source and date.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { TRUSTED_CAS } from '../../bin/preflight/tls.ts';
import {
  COPY,
  COPY_README,
  generate,
  normalizeFingerprint,
  OUTPUT,
  parseProvenance,
  parseTrustedCas,
  renderJson,
  trustedCaList,
} from '../../scripts/trusted-cas.ts';
import { ROOT } from '../helpers/proxy.ts';

/** An independent reading of the table: alias lines and SHA256 lines, paired in order. */
function independentReading(text: string): Map<string, string> {
  const aliases = [...text.matchAll(/^Alias name: (.+)$/gm)].map((m) => (m[1] as string).trim());
  const fingerprints = [...text.matchAll(/SHA256: ([0-9A-F:]{95})/g)].map((m) =>
    (m[1] as string).split(':').join('').toLowerCase(),
  );
  assert.equal(aliases.length, fingerprints.length, 'one SHA256 line per alias');
  return new Map(aliases.map((alias, i) => [alias, fingerprints[i] as string]));
}

describe('trusted root CAs', () => {
  test('the shipped list is well formed', () => {
    assert.ok(TRUSTED_CAS.length > 100);
    for (const ca of TRUSTED_CAS) {
      assert.match(ca.sha256, /^[0-9a-f]{64}$/, ca.alias);
      assert.match(ca.alias, /^\S+$/);
      assert.ok(ca.owner.length > 0, ca.alias);
    }
    assert.equal(new Set(TRUSTED_CAS.map((ca) => ca.sha256)).size, TRUSTED_CAS.length);
    assert.equal(new Set(TRUSTED_CAS.map((ca) => ca.alias)).size, TRUSTED_CAS.length);
    // Amazon's roots, which KMS's own endpoints chain to, are there.
    const amazon = TRUSTED_CAS.find((ca) => ca.alias === 'amazonrootca1');
    assert.equal(amazon?.sha256, '8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e');
  });

  test("it equals the repository's copy of the table", () => {
    const text = readFileSync(join(ROOT, COPY), 'utf8');
    const expected = independentReading(text);
    assert.ok(expected.size > 100, `only ${expected.size} entries in ${COPY}`);
    const shipped = new Map(TRUSTED_CAS.map((ca) => [ca.alias, ca.sha256]));
    assert.deepEqual(shipped, expected);
    // And the generator, run now, would write the same file, byte for byte (alias, owner,
    // fingerprint, order; source and date).
    assert.equal(readFileSync(join(ROOT, OUTPUT), 'utf8'), renderJson(generate()));
  });

  test('the shipped file names its public source, the date of the copy and the licence', () => {
    const shipped = JSON.parse(readFileSync(join(ROOT, OUTPUT), 'utf8'));
    assert.equal(
      shipped.source,
      'https://github.com/aws/aws-kms-xksproxy-api-spec/blob/main/TrustedCertificateAuthorities',
    );
    assert.match(shipped.copied, /^\d{4}-\d{2}-\d{2}$/);
    assert.ok(!Number.isNaN(Date.parse(shipped.copied)));
    assert.deepEqual(parseProvenance(readFileSync(join(ROOT, COPY_README), 'utf8')), {
      source: shipped.source,
      copied: shipped.copied,
    });
    assert.equal(shipped.copy, COPY);
    assert.match(shipped.licence, /CC BY-SA 4\.0/);
    const licence = readFileSync(join(ROOT, 'data/aws-kms-xksproxy-api-spec/LICENSE-CC-BY-SA-4.0'), 'utf8');
    assert.match(licence, /^Creative Commons Attribution-ShareAlike 4\.0 International Public License/);
  });

  test('the generator handles the quirks of the table', () => {
    const text = [
      'Alias name: first',
      'Owner: CN=First, O=Example',
      'Issuer: CN=First, O=Example',
      'Certificate fingerprints:',
      '\t SHA1: 93:05:7A:88:15:C6:4F:CE:88:2F:FA:91:16:52:28:78:BC:53:64:17',
      `\t SHA256: ${'AB:'.repeat(31)}CD                                             .7`,
      '  RFC822Name: someone@example.com',
      '*'.repeat(86),
      'Alias name: second',
      'Owner: CN=Second',
      `\t SHA256: ${'01:'.repeat(31)}EF`,
    ].join('\n');
    const entries = parseTrustedCas(text);
    assert.deepEqual(entries, [
      { alias: 'first', owner: 'CN=First, O=Example', sha256: `${'ab'.repeat(31)}cd` },
      { alias: 'second', owner: 'CN=Second', sha256: `${'01'.repeat(31)}ef` },
    ]);
    const readme = '- Source: https://example.com/list\n- Copied: 2026-01-31, unmodified\n';
    const list = trustedCaList(text, readme);
    assert.equal(list.source, 'https://example.com/list');
    assert.equal(list.copied, '2026-01-31');
    assert.deepEqual(list.trustedCas, entries);
    assert.deepEqual(JSON.parse(renderJson(list)), list);
    assert.throws(() => parseProvenance('- Source: https://example.com/list\n'), /Copied/);
    assert.throws(() => parseTrustedCas('Alias name: x\nOwner: CN=x\n'), /no SHA256/);
    assert.throws(() => parseTrustedCas(`${text}\n${text}`), /appears twice/);
    assert.equal(normalizeFingerprint('AB:cd:EF'), 'abcdef');
  });
});
