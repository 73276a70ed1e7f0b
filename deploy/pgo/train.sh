#!/usr/bin/env bash
# The training run of a profile-guided (PGO) build: drives a representative
# workload through an instrumented `portcullis` binary so that the compiler
# learns which paths are hot. Called by deploy/pgo/build.sh; usage:
#
#   deploy/pgo/train.sh INSTRUMENTED_BINARY
#
# with LLVM_PROFILE_FILE set to where the profiles go. Everything runs on
# loopback on ports the kernel picks, from Portcullis's own parts: the
# demo (`portcullis demo`: the proxy, the development OpenID Provider, the
# sample app, users provisioned over SCIM) and a second Portcullis with TLS.
#
# What it drives, each bounded in time: bearer-token requests, a signed-in
# browser session, denials (403), unauthenticated API and browser requests
# (401 and the redirect to sign in), public paths, uploads, SCIM
# deprovisioning and reactivation, /.portcullis/me and jwks.json; then TLS
# with HTTP/1.1 and HTTP/2 (ALPN), bearer requests and 401s, with the audit
# trail on.
# Not driven: upstream TLS and WebSocket tunnels (their code is compiled
# without profile data, as cold code).
#
# Each step first checks the status it expects (200, 302, 401, 403), so the
# run drives the paths it says it does; CI runs it against the debug binary
# (tests/run.sh). It installs what it needs (wrk, h2load, curl, openssl,
# python3) with apt-get.
#
# It is not the benchmark: its configuration, policy, upstream and request
# mix are the demo's, not tests/bench/proxy.sh's.
set -euo pipefail

bin=$(realpath "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Seconds of load in each main step (1 in CI); the others take 1.
SECONDS_PER_STEP=${SECONDS_PER_STEP:-3}

work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-pgo.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '  train: %s\n' "$*"; }
die() {
  printf 'train: %s\n' "$*" >&2
  local log
  for log in "$work/demo.err" "$work/tls.log"; do
    [ -s "$log" ] || continue
    printf -- '--- last lines of %s:\n' "${log##*/}" >&2
    tail -n 15 "$log" >&2
  done
  exit 1
}

missing=()
for pair in wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl python3:python3; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi

# free_port: a port the kernel hands out for 127.0.0.1:0, released at once.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# load SECONDS STATUS URL [HEADER...]: a bounded wrk run (a POST of 16 KiB
# when UPLOAD=1), after one request with curl, the same headers, that must
# answer STATUS, so that the training drives the paths it says it does. A
# denial is a status, not a failure. Only the request count is shown, never
# the headers: they hold tokens and cookies.
load() {
  local secs=$1 want=$2 url=$3 h n status method=GET
  shift 3
  local headers=() curl_body=() wrk_script=()
  for h in "$@"; do headers+=(-H "$h"); done
  if [ "${UPLOAD:-0}" = 1 ]; then
    method=POST curl_body=(--data-binary "@$work/upload.bin") wrk_script=(-s "$work/upload.lua")
  fi
  status=$(curl -s -k -o /dev/null -w '%{http_code}' -X "$method" "${curl_body[@]}" "${headers[@]}" "$url") ||
    status=none
  [ "$status" = "$want" ] || die "$method $url answered $status, not $want"
  n=$(timeout $((secs + 20)) wrk -t1 -c16 -d"${secs}s" --timeout 5s "${wrk_script[@]}" "${headers[@]}" "$url" 2>&1 |
    awk '/requests in/ {print $1}')
  say "$(printf '%7s' "${n:-0}") requests ($want): HTTP/1.1 $method $url"
}

# ---------------------------------------------------------------------------
# 1. The demo: HTTP/1.1, bearer tokens, sessions, SCIM
# ---------------------------------------------------------------------------
port=$(free_port) idp_port=$(free_port) admin_port=$(free_port)
state=$work/demo-state.json
"$bin" demo --listen "127.0.0.1:$port" --idp-listen "127.0.0.1:$idp_port" \
  --admin-listen "127.0.0.1:$admin_port" --state-file "$state" >"$work/demo.out" 2>"$work/demo.err" &
demo=$!
pids+=("$demo")
for _ in $(seq 300); do
  grep -q "Portcullis demo is running" "$work/demo.out" && break
  kill -0 "$demo" 2>/dev/null || die "the demo stopped"
  sleep 0.2
done
grep -q "Portcullis demo is running" "$work/demo.out" || die "the demo did not start within 60 s"
base=http://127.0.0.1:$port
issuer=$(awk '/Dev IdP/ {print $3}' "$work/demo.out")
token=$(sed -n "s/.*Authorization: Bearer \([^']*\)'.*/\1/p" "$work/demo.out" | head -n 1)
[ -n "$token" ] && [ -n "$issuer" ] || die "no token or issuer in the demo's banner"
say "demo on $base"

cookie=$(timeout 30 python3 "$here/signin.py" "$base/reports/q3" bob bob _portcullis) ||
  die "signing in as bob failed"

cat >"$work/upload.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
head -c 16384 /dev/zero | tr '\0' x >"$work/upload.bin"

json="Accept: application/json" html="Accept: text/html"
load "$SECONDS_PER_STEP" 200 "$base/reports/q3" "Authorization: Bearer $token" "$json"
load "$SECONDS_PER_STEP" 200 "$base/reports/q3" "Cookie: $cookie" "$html"
load 1 403 "$base/admin/users" "Cookie: $cookie" "$json"
load 1 401 "$base/reports/q3" "$json"
load 1 200 "$base/public/status" "$json"
load 1 401 "$base/reports/q3" "Authorization: Bearer not.a.token" "$json"
UPLOAD=1 load 1 200 "$base/admin/upload" "Authorization: Bearer $token"
for _ in 1 2 3; do
  "$bin" demo deprovision bob --state-file "$state" >/dev/null
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$base/reports/q3")
  [ "$status" != 200 ] || die "bob still reached the app after being deprovisioned"
  "$bin" demo reactivate bob --state-file "$state" >/dev/null
done
for path in /.portcullis/me /.portcullis/jwks.json; do
  curl -s -o /dev/null -H "Authorization: Bearer $token" "$base$path"
done
# bob's session ended when he was deprovisioned: sign in again.
cookie=$(timeout 30 python3 "$here/signin.py" "$base/reports/q3" bob bob _portcullis) ||
  die "signing in as bob again failed"
load 1 200 "$base/reports/q3" "Cookie: $cookie" "$html"
# Last, since each redirect to sign in starts one: past 50,000 started and
# not finished, Portcullis answers 503 to new sign-ins for a while.
load 1 302 "$base/reports/q3" "$html"

# ---------------------------------------------------------------------------
# 2. TLS, HTTP/1.1 and HTTP/2: a second Portcullis in front of the demo's IdP
# ---------------------------------------------------------------------------
tls_port=$(free_port) tls_admin=$(free_port)
mkdir -p "$work/tls/policies"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
scim_token=$(openssl rand -hex 24)
cat >"$work/tls/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:$tls_port"
public_url = "https://127.0.0.1:$tls_port"
[server.tls]
cert = "$work/tls/cert.pem"
key = "$work/tls/key.pem"
[admin]
listen = "127.0.0.1:$tls_admin"
[store]
path = "$work/tls/store"
[audit]
path = "$work/tls/audit.log"
[policy]
dir = "$work/tls/policies"
[[scim.clients]]
name = "train"
token_sha256 = "$(printf %s "$scim_token" | sha256sum | cut -d' ' -f1)"
[oidc]
issuer = "$issuer"
audiences = ["portcullis-demo"]
[identity]
claim = "email"
attribute = "userName"
[[routes]]
name = "idp"
upstream = "$issuer"
TOML
cat >"$work/tls/policies/train.toml" <<'TOML'
[roles.reader]
allow = [{ route = "idp", methods = ["GET"], paths = ["/**"] }]
[groups]
"readers" = ["reader"]
TOML
"$bin" serve --config "$work/tls/portcullis.toml" >"$work/tls.log" 2>&1 &
tls=$!
pids+=("$tls")
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$tls_admin/readyz")" = 200 ]; }
for _ in $(seq 150); do
  ready && break
  kill -0 "$tls" 2>/dev/null || die "the TLS instance stopped"
  sleep 0.2
done
ready || die "the TLS instance was not ready within 30 s"
tbase=https://127.0.0.1:$tls_port
scim=(-s -k -H "Authorization: Bearer $scim_token" -H "Content-Type: application/scim+json")
user_id=$(curl "${scim[@]}" -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","active":true}' \
  "$tbase/scim/v2/Users" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') ||
  die "provisioning alice on the TLS instance failed"
curl "${scim[@]}" -o /dev/null -d "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:Group\"],\"displayName\":\"readers\",\"members\":[{\"value\":\"$user_id\"}]}" \
  "$tbase/scim/v2/Groups"
say "TLS instance on $tbase"

load "$SECONDS_PER_STEP" 200 "$tbase/jwks.json" "Authorization: Bearer $token"
load 1 401 "$tbase/jwks.json" "$json"
# h2 SECONDS STATUS [h2load arguments...] URL: the same over HTTP/2 (ALPN);
# every answer must have STATUS's class (h2load counts 2xx, 4xx).
h2() {
  local secs=$1 want=$2 out done class
  shift 2
  out=$(timeout $((secs + 30)) h2load -D "$secs" -c 8 -m 4 "$@" 2>&1) || true
  done=$(awk '/^requests:/ {print $6}' <<<"$out")
  class=$(awk -v c="${want:0:1}xx" '/^status codes:/ {for (i = 3; i <= NF; i++) if ($(i) == c",") print $(i - 1)}' <<<"$out")
  [ -n "$done" ] && [ "$done" -gt 0 ] && [ "${class:-0}" = "$done" ] ||
    die "HTTP/2 ${*: -1}: $done requests done, ${class:-0} of them ${want:0:1}xx"
  say "$(printf '%7s' "$done") requests ($want): HTTP/2 ${*: -1}"
}
h2 "$SECONDS_PER_STEP" 200 -H "Authorization: Bearer $token" "$tbase/jwks.json"
h2 1 401 "$tbase/.well-known/openid-configuration"

# ---------------------------------------------------------------------------
# Stop both gracefully: the profile is written when a process exits.
# ---------------------------------------------------------------------------
kill -TERM "$tls"
kill -INT "$demo"
wait "$tls" || die "the TLS instance exited with $?"
wait "$demo" || die "the demo exited with $?"
pids=()
say "done"
