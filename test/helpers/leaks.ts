// Scans what the proxy printed for anything that must never be logged (spec: Logging): PINs, SigV4
// secrets, plaintexts, AAD. The failure message never repeats the secret it found.
import assert from 'node:assert/strict';

export function assertNoLeaks(
  output: string,
  secrets: readonly string[],
  sensitive: readonly Buffer[],
): void {
  assert.ok(output.length > 0, 'the proxy printed nothing: the scan would prove nothing');
  secrets.forEach((secret, i) => {
    assert.ok(!output.includes(secret), `secret #${i} (PIN or SigV4 secret) appears in the proxy output`);
  });
  sensitive.forEach((bytes, i) => {
    for (const [form, text] of [
      ['base64', bytes.toString('base64')],
      ['hex', bytes.toString('hex')],
      ['utf8', bytes.toString('utf8')],
    ] as const) {
      if (text.length < 12) continue; // too short to tell apart from other text
      assert.ok(!output.includes(text), `sensitive value #${i} appears in the proxy output (${form})`);
    }
  });
}
