// The run configuration both fuzzing files share: bounded runs with a fixed
// seed in CI, long runs on demand (scripts/fuzz.sh: FUZZ_RUNS, FUZZ_SEED, FUZZ_PATH), and a
// failure report that says how to replay it and never prints what it must not.
import type fc from 'fast-check';

export function positiveInt(text: string | undefined): number | undefined {
  const n = Number(text);
  return text !== undefined && Number.isInteger(n) && n > 0 ? n : undefined;
}

/** FUZZ_SEED: a number, 'random', or the CI seed 0x5eed. */
export function seedOf(text: string | undefined): number {
  if (text === 'random') return (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
  const n = Number(text);
  return text !== undefined && Number.isInteger(n) ? n : 0x5eed;
}

export const SEED = seedOf(process.env.FUZZ_SEED);

/**
 * fast-check parameters for the property `name` of `file`: on failure, the replay command and the
 * counterexample as `redact` renders it.
 */
export function fuzzParameters<T>(
  file: string,
  name: string,
  numRuns: number,
  redact: (value: unknown) => string,
): fc.Parameters<T> {
  return {
    numRuns,
    seed: SEED,
    ...(process.env.FUZZ_PATH ? { path: process.env.FUZZ_PATH } : {}),
    reporter: (details) => {
      if (!details.failed) return;
      const cause =
        details.errorInstance instanceof Error ? details.errorInstance.message : details.errorInstance;
      throw new Error(
        [
          `property '${name}' failed after ${details.numRuns} runs (${details.numShrinks} shrinks)`,
          `replay: FUZZ_SEED=${details.seed} FUZZ_PATH='${details.counterexamplePath}' ` +
            `node --test-name-pattern='${name}' ${file}`,
          `counterexample: ${redact(details.counterexample)}`,
          String(cause),
        ].join('\n'),
      );
    },
  };
}
