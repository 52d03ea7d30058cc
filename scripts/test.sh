#!/usr/bin/env bash
# Every check and every test, in the order a failure is cheapest to find. Run through
# `npm test`, which first brings the machine up to date (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== lint (biome)"
npx biome check .
echo "== typecheck (tsc)"
npx tsc --noEmit
echo "== bundles (esbuild)"
node scripts/build.ts
echo "== benchmark smoke (the suite runs; no targets asserted)"
node bench/run.ts --smoke
echo "== tests (node:test)"
# One process per test file; each integration file starts its own proxy on its own SoftHSM token.
# Last, so that the test runners' summaries close the output. A test that hangs fails by name after
# 2 minutes (the longest takes ~5 s) instead of stalling CI. Not --test-force-exit: it can end a
# file before all its suites have run, and say nothing.
node --test --test-concurrency=2 --test-timeout=120000 'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts'
echo "== the HSM tests again, on NSS softoken (a second PKCS#11 implementation; test/helpers/proxy.ts)"
# Every route and every HSM error mapping, token identity, key rotation and the keys CLI, faults.
XKS_TEST_HSM=nss node --test --test-concurrency=2 --test-timeout=120000 \
  test/integration/{routes,crypto,handlers,key-rotation,key-facts,new-hsm,hsm-identity,hsm-faults,hsm-unavailable,fault-module,pkcs11-layer,vendor-profiles}.test.ts
echo "== the route, SigV4 and mTLS suites again, behind an ALB (ALB events; test/helpers/proxy.ts)"
XKS_TEST_FRONT_DOOR=alb node --test --test-concurrency=2 --test-timeout=120000 \
  test/integration/{routes,auth,access-control}.test.ts
