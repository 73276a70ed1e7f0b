#!/usr/bin/env bash
# Prepares the end-to-end harness used by tests/src/e2e.rs: installs Debian's
# `chromium` (if /usr/bin/chromium is missing) and this folder's npm packages
# (`npm ci`, when node_modules is missing or older than package-lock.json).
# Idempotent and quick when everything is already in place. It does not
# download any browser build of its own (playwright-core never does), does not
# touch anything outside this folder except the system package, and does not
# run the tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chromium="${PORTCULLIS_CHROMIUM:-/usr/bin/chromium}"

fail() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    sudo=()
fi

# 1. Browser.
if [ -x "$chromium" ]; then
    echo "setup.sh: chromium present: $chromium"
else
    if [ "$chromium" != /usr/bin/chromium ]; then
        fail "PORTCULLIS_CHROMIUM=$chromium is not an executable file"
    fi
    if [ "$(id -u)" -ne 0 ] && [ ${#sudo[@]} -eq 0 ]; then
        fail "chromium is missing and this is not root and has no sudo; install Debian's 'chromium' package"
    fi
    command -v apt-get >/dev/null 2>&1 || fail "chromium is missing and apt-get is not available; install a chromium and set PORTCULLIS_CHROMIUM"
    echo "setup.sh: installing Debian chromium (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y --no-install-recommends chromium; then
        echo "setup.sh: apt-get install failed; refreshing package lists and retrying ..."
        "${sudo[@]}" apt-get update || fail "apt-get update failed"
        "${sudo[@]}" apt-get install -y --no-install-recommends chromium || fail "apt-get install chromium failed"
    fi
    [ -x "$chromium" ] || fail "chromium was installed but $chromium is still missing"
    echo "setup.sh: installed $("$chromium" --version 2>/dev/null || echo chromium)"
fi

# 2. Node packages.
command -v node >/dev/null 2>&1 || fail "node is not on PATH (Node.js >= 20 is needed)"
command -v npm >/dev/null 2>&1 || fail "npm is not on PATH"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || fail "node $(node --version) is too old; oidc-provider needs >= 20"

modules="$here/node_modules"
marker="$modules/.package-lock.json" # written by npm at the end of every install
if [ -d "$modules" ] && [ -f "$marker" ] && [ ! "$here/package-lock.json" -nt "$marker" ]; then
    echo "setup.sh: node_modules up to date"
else
    echo "setup.sh: npm ci in $here ..."
    (cd "$here" && npm ci --no-audit --no-fund) || fail "npm ci failed"
    touch "$marker"
    echo "setup.sh: node packages installed"
fi

# 3. Quick sanity check that the packages resolve.
if ! check="$(cd "$here" && node --input-type=module -e 'await import("oidc-provider"); await import("playwright-core");' 2>&1)"; then
    echo "$check" >&2
    fail "node cannot load oidc-provider/playwright-core from $modules; delete it and run setup.sh again"
fi
echo "setup.sh: ready"
