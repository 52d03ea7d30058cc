// The root CAs `xks-proxy preflight` accepts (bin/trusted-cas.ts) must be exactly those of the spec's
// TrustedCertificateAuthorities table (spec: Authentication). The reference folder is a sibling of the
// clone (../shared/reference); without it the comparison is skipped, with the reason.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, test } from 'node:test';
import { TRUSTED_CAS } from '../../bin/trusted-cas.ts';
import { normalizeFingerprint, parseTrustedCas, renderModule } from '../../scripts/trusted-cas.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const REFERENCE = resolve(ROOT, '../shared/reference/TrustedCertificateAuthorities');
const skip = existsSync(REFERENCE) ? false : `reference file not found at ${REFERENCE}`;

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

  test('it equals the reference table', { skip }, () => {
    const text = readFileSync(REFERENCE, 'utf8');
    const expected = independentReading(text);
    const shipped = new Map(TRUSTED_CAS.map((ca) => [ca.alias, ca.sha256]));
    assert.deepEqual(shipped, expected);
    // And the generator, run now, would write the same entries (alias, owner, fingerprint, order).
    assert.deepEqual(parseTrustedCas(text), TRUSTED_CAS);
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
    assert.match(renderModule(entries), /alias: 'second',\n {4}owner: 'CN=Second',/);
    assert.throws(() => parseTrustedCas('Alias name: x\nOwner: CN=x\n'), /no SHA256/);
    assert.throws(() => parseTrustedCas(`${text}\n${text}`), /appears twice/);
    assert.equal(normalizeFingerprint('AB:cd:EF'), 'abcdef');
  });
});
