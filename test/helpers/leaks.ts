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

/**
 * Captures the JSON log lines (Powertools) the handlers write to stdout and stderr in this process,
 * keeping them out of the test report. Everything else goes through untouched: node:test sends its
 * results from a test file's process through stdout.
 */
export function captureLogs(): { text(): string; clear(): void; restore(): void } {
  let captured = '';
  const original = {
    out: process.stdout.write.bind(process.stdout),
    err: process.stderr.write.bind(process.stderr),
  };
  const tap = (write: typeof process.stdout.write) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      if (text.startsWith('{')) {
        captured += text;
        return true;
      }
      return (write as (...args: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write;
  process.stdout.write = tap(original.out);
  process.stderr.write = tap(original.err);
  return {
    text: () => captured,
    clear: () => {
      captured = '';
    },
    restore: () => {
      process.stdout.write = original.out;
      process.stderr.write = original.err;
    },
  };
}
