#!/usr/bin/env bash
# Long property-based fuzzing runs on demand: the SigV4 verifier
# (test/unit/fuzz-sigv4.test.ts) and the four routes (test/integration/fuzz-routes.test.ts).
# CI runs the same files through scripts/test.sh with their bounded defaults and a fixed seed.
#
#   scripts/fuzz.sh                      both files, 20000 runs per property, a new seed
#   scripts/fuzz.sh sigv4 100000         one file (sigv4 or routes), that many runs per property
#   FUZZ_PATTERN=mutation scripts/fuzz.sh sigv4        only the properties whose name matches
#   FUZZ_SEED=<seed> FUZZ_PATH=<path> FUZZ_PATTERN=<property> scripts/fuzz.sh routes
#                                        replay the failure a report printed (seed, path, property)
#
# The files run as plain node scripts (node:test runs them the same way): one process each, the
# routes file's own SoftHSM tokens and local proxy included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

which=${1:-all}
export FUZZ_RUNS=${2:-${FUZZ_RUNS:-20000}}
# A seed of our own, so that it is printed before anything runs (fast-check prints it on failure too).
export FUZZ_SEED=${FUZZ_SEED:-$(( (RANDOM << 15) | RANDOM ))}

case "$which" in
  sigv4) files=(test/unit/fuzz-sigv4.test.ts) ;;
  routes) files=(test/integration/fuzz-routes.test.ts) ;;
  all) files=(test/unit/fuzz-sigv4.test.ts test/integration/fuzz-routes.test.ts) ;;
  *)
    echo "usage: scripts/fuzz.sh [sigv4|routes|all] [runs per property]" >&2
    exit 2
    ;;
esac

status=0
for file in "${files[@]}"; do
  echo "== $file: FUZZ_RUNS=$FUZZ_RUNS FUZZ_SEED=$FUZZ_SEED${FUZZ_PATH:+ FUZZ_PATH=$FUZZ_PATH}${FUZZ_PATTERN:+ FUZZ_PATTERN=$FUZZ_PATTERN}"
  started=$SECONDS
  node ${FUZZ_PATTERN:+"--test-name-pattern=$FUZZ_PATTERN"} "$file" || status=1
  echo "== $file: $((SECONDS - started)) s"
done
exit "$status"
