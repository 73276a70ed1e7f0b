#!/usr/bin/env bash
# SCIM compliance: starts a real `portcullis serve` on loopback with a fresh
# store and a random SCIM token, runs the scim2-tester checks (installed from
# PyPI into a virtual environment under target/) against it, and stops it.
# Uses $PORTCULLIS_BIN if set, else builds the debug binary. Exits non-zero
# if any check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/scim-venv
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian ships venv separately.
    if command -v apt-get >/dev/null; then
      apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/pip" install -q --disable-pip-version-check "scim2-tester==0.5.2" "httpx2==2.16.2"

if [ -n "${PORTCULLIS_BIN:-}" ]; then
  bin=$(realpath "$PORTCULLIS_BIN")
else
  cargo build -q -p portcullis
  bin=$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/portcullis
fi
[ -x "$bin" ] || { echo "no portcullis binary at $bin" >&2; exit 1; }

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

token=$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')
hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
mkdir "$tmp/policies"
cat > "$tmp/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = "data"
[[scim.clients]]
name = "compliance"
token_sha256 = "$hash"
TOML

"$bin" --log-format json serve --config "$tmp/portcullis.toml" 2> "$tmp/log" &
pid=$!
addr=""
for _ in $(seq 1 200); do
  addr=$("$venv/bin/python" - "$tmp/log" <<'PY' || true
import json, sys
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "listening":
        print(event["server"])
        break
PY
)
  [ -n "$addr" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then cat "$tmp/log"; echo "portcullis exited early" >&2; exit 1; fi
  sleep 0.05
done
[ -n "$addr" ] || { cat "$tmp/log"; echo "portcullis did not start" >&2; exit 1; }

"$venv/bin/python" tests/scim/compliance.py "http://$addr/scim/v2" "$token"
