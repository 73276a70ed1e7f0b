#!/usr/bin/env bash
# Proxy benchmark: Portcullis against its peers, on loopback.
#
#   upstream      nginx answering a fixed 200 "ok\n" (the ceiling)
#   nginx         nginx proxy_pass to the upstream, no authentication
#   floor         hyper-floor (tests/bench/floor): a bare pass-through proxy
#                 on hyper and tokio, laid out like Portcullis, doing nothing
#                 else; what Portcullis costs above it is its own work
#   apache        Apache (event MPM) + mod_auth_openidc validating an RS256
#                 bearer JWT against a JWKS and requiring a groups claim
#   portcullis    bearer JWT, user bound over SCIM, policy by SCIM group
#   audited       the same Portcullis with the audit trail recording every
#                 decision to a file (the audit target compares the two)
#   signed-in     Portcullis with browser sign-in: a session cookie from a
#                 real code flow against the development OpenID Provider
#   apache-session  Apache + mod_auth_openidc as an OpenID relying party,
#                 with its session cookie from the same provider
#
# A test identity provider for bearer tokens (an RSA key, a JWKS and a
# discovery document served by python3) is made with openssl and python3
# alone; the signed-in legs sign in, with python3's urllib, against the
# development provider (`dev-idp` of crates/devidp). Every process
# this script starts lives in a temporary directory and is stopped, by pid,
# on exit. See tests/bench/README.md for what is measured and the targets.
#
# Environment: DURATION (10s), WARMUP (2s), CONNECTIONS (64), THREADS (1),
# ROUNDS (3: every target is loaded once per round, in turn, and the report
# gives medians, with each ratio taken within a round, since this machine's
# speed drifts between runs),
# IDLE_CONNECTIONS (10000), IDLE_PEERS ("nginx portcullis"),
# PGO (1: build Portcullis with deploy/pgo/build.sh, profile-guided, as
# for release; 0: a plain `cargo build --release`),
# PORTCULLIS_BIN (skip the build and use this binary), DEV_IDP_BIN and
# FLOOR_BIN (the same for the development provider and hyper-floor),
# PORTCULLIS_LOG (warn),
# PORTCULLIS_WORKERS (1: Portcullis's `[server] workers`, as the nginx peer
# runs one worker process; 0 is one per CPU, Portcullis's default, which on
# these two cores shared with wrk and the upstream costs p99: see
# tests/bench/README.md),
# INSTRUCTIONS_S (8: seconds of the callgrind count of instructions per
# request at the end; 0 skips it),
# KEEP_WORKDIR=1 (keep the temporary directory and its logs), PERF=1 (with
# KEEP_WORKDIR=1: record a CPU profile of Portcullis during its load run;
# PERF_LEG=audited or signed-in profiles that leg instead; PERF_CALL_GRAPH=dwarf
# records whole stacks).
#
# Exit status: 0 when every leg ran (whether or not the targets are met),
# 1 when something failed to run; the table is printed either way.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_PEERS=${IDLE_PEERS:-nginx portcullis}
PORTCULLIS_LOG=${PORTCULLIS_LOG:-warn}
PORTCULLIS_WORKERS=${PORTCULLIS_WORKERS:-1}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
INSTRUCTIONS_S=${INSTRUCTIONS_S:-8}
PGO=${PGO:-1}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Seconds in a wrk duration ("10s", "2m", "1h" or a bare number).
seconds_of() {
  local value=$1
  case $value in
    *s) echo "${value%s}" ;;
    *m) echo $((${value%m} * 60)) ;;
    *h) echo $((${value%h} * 3600)) ;;
    *) echo "$value" ;;
  esac
}
duration_s=$(seconds_of "$DURATION")
warmup_s=$(seconds_of "$WARMUP")
[[ $duration_s =~ ^[0-9]+$ && $duration_s -gt 0 ]] || die "DURATION must look like 10s, 2m or 1h, not '$DURATION'"
[[ $warmup_s =~ ^[0-9]+$ ]] || die "WARMUP must look like 2s, not '$WARMUP'"
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -gt 0 ]] || die "CONNECTIONS must be a positive number"
[[ $THREADS =~ ^[0-9]+$ && $THREADS -gt 0 ]] || die "THREADS must be a positive number"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "ROUNDS must be a positive number"
[[ $IDLE_CONNECTIONS =~ ^[0-9]+$ ]] || die "IDLE_CONNECTIONS must be a number"
[[ $PORTCULLIS_WORKERS =~ ^[0-9]+$ ]] || die "PORTCULLIS_WORKERS must be a number"
[[ $INSTRUCTIONS_S =~ ^[0-9]+$ ]] || die "INSTRUCTIONS_S must be a number of seconds"

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
else
  SUDO=(sudo)
fi

packages=(nginx apache2 libapache2-mod-auth-openidc wrk openssl curl python3 valgrind)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  # The nginx and apache2 packages start system services on port 80 when
  # installed; this benchmark never uses them. Keep them from starting with
  # Debian's policy-rc.d mechanism, unless the machine already has one.
  policy_rc=/usr/sbin/policy-rc.d
  made_policy_rc=0
  if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy_rc" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy_rc"
    made_policy_rc=1
  fi
  install_rc=0
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || install_rc=$?
  if [ "$install_rc" -eq 0 ]; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || install_rc=$?
  fi
  if [ "$made_policy_rc" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy_rc"; fi
  [ "$install_rc" -eq 0 ] || die "apt-get failed (exit $install_rc)"
fi

apache_modules=/usr/lib/apache2/modules
for module in mod_mpm_event mod_authn_core mod_authz_core mod_proxy mod_proxy_http mod_auth_openidc; do
  [ -f "$apache_modules/$module.so" ] || die "missing Apache module $apache_modules/$module.so"
done
openidc_version=$(dpkg-query -W -f='${Version}' libapache2-mod-auth-openidc)

# Every idle connection is a file descriptor, in the client and in the
# server. Children (the servers, the client) inherit this limit.
want_nofile=$((IDLE_CONNECTIONS + 4096))
[ "$want_nofile" -ge 65536 ] || want_nofile=65536
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_nofile" ]; then
  ulimit -Hn "$want_nofile" 2>/dev/null || true
fi
if [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$want_nofile" ]; then
  ulimit -Sn "$want_nofile"
else
  ulimit -Sn "$(ulimit -Hn)"
fi
nofile=$(ulimit -Sn)
if [ "$IDLE_CONNECTIONS" -gt 0 ] && [ "$nofile" != unlimited ] && [ "$nofile" -lt $((IDLE_CONNECTIONS + 1024)) ]; then
  warn "open files limited to $nofile: $IDLE_CONNECTIONS idle connections may not all open"
fi

# ---------------------------------------------------------------------------
# Build Portcullis
# ---------------------------------------------------------------------------
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
if [ -n "${PORTCULLIS_BIN:-}" ]; then
  bin=$PORTCULLIS_BIN
  build="given (PORTCULLIS_BIN)"
elif [ "$PGO" = 1 ]; then
  say "building portcullis (release, profile-guided: deploy/pgo/build.sh)"
  bin=$(PGO_DIR=$target_dir/pgo "$repo/deploy/pgo/build.sh")
  build="release, profile-guided (deploy/pgo/build.sh)"
else
  say "building portcullis (release)"
  (cd "$repo" && cargo build --release -p portcullis)
  bin=$target_dir/release/portcullis
  build="release (PGO=0: not profile-guided)"
fi
[ -x "$bin" ] || die "no portcullis binary at $bin"
if [ -n "${DEV_IDP_BIN:-}" ]; then
  devidp_bin=$DEV_IDP_BIN
else
  say "building the development OpenID Provider (release)"
  (cd "$repo" && cargo build --release -p portcullis-devidp --bin dev-idp)
  devidp_bin=$target_dir/release/dev-idp
fi
[ -x "$devidp_bin" ] || die "no dev-idp binary at $devidp_bin"
if [ -n "${FLOOR_BIN:-}" ]; then
  floor_bin=$FLOOR_BIN
else
  say "building hyper-floor (release)"
  (cd "$repo" && cargo build --release -p portcullis-bench-floor --bin hyper-floor)
  floor_bin=$target_dir/release/hyper-floor
fi
[ -x "$floor_bin" ] || die "no hyper-floor binary at $floor_bin"

# ---------------------------------------------------------------------------
# Work directory, processes, cleanup
# ---------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
# nginx workers and Apache children drop root; they must reach their dirs.
chmod 755 "$work"
pids=()

stop_pid() {
  local pid=$1 child _
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    # Still there after 5 s: its own children first (nginx workers, Apache
    # children), then itself.
    for child in $(children_of "$pid"); do kill -KILL "$child" 2>/dev/null || true; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  if [ "$KEEP_WORKDIR" = 1 ]; then
    echo "work directory kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts a command in the background, recording its pid in $started.
started=""
spawn() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 </dev/null &
  started=$!
  pids+=("$started")
}

# HTTP status of a request, or 000 when there is no answer.
http_status() {
  local url=$1
  shift
  curl -s -o "$work/last-body" -w '%{http_code}' --max-time 5 "$@" "$url" 2>/dev/null || true
}

# Waits until URL answers with a status matching REGEX, for at most SECONDS,
# and fails early when PID has exited.
wait_http() {
  local url=$1 regex=$2 timeout=$3 pid=$4 deadline code
  deadline=$((SECONDS + timeout))
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
    [[ $code =~ $regex ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# Pids of the children of PID (nginx's worker, Apache's children).
children_of() {
  python3 - "$1" <<'PY'
import os, sys
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == sys.argv[1]:
            print(entry)
PY
}

# CPU time of a server in clock ticks, "USER SYSTEM": the process and its
# children (nginx's and Apache's workers). Compared per request, it is
# steadier than requests/s on a machine whose speed drifts, since it does
# not depend on what else got the cores; the user part is the server's own
# code, the system part mostly the loopback TCP both peers share.
cpu_ticks() {
  local user=0 system=0 p u s
  for p in "$1" $(children_of "$1"); do
    read -r u s < <(awk '{ sub(/.*\) /, ""); print $12, $13 }' "/proc/$p/stat" 2>/dev/null) || continue
    user=$((user + ${u:-0}))
    system=$((system + ${s:-0}))
  done
  echo "$user $system"
}
clock_ticks=$(getconf CLK_TCK)

# Resident set size of PID in kB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f MB", kb / 1024 }'; }

# Loopback ports chosen by the kernel, all held open until all are known so
# that none is handed out twice.
ports=$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(14)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
read -r port_idp port_idp_tls port_upstream port_nginx port_apache port_portcullis port_admin \
  port_audited port_audited_admin port_devidp port_session port_session_admin port_apache_session port_floor <<<"$ports"
[ -n "$port_floor" ] || die "could not pick free ports"

# Results, by leg, in the report's order.
legs=(upstream nginx floor portcullis signed-in audited apache apache-session)
# The order each round loads them in: nginx again after each Portcullis
# leg, so that every Portcullis figure sits between two nginx figures of
# the same round (see the medians below).
sequence=(upstream nginx portcullis nginx signed-in nginx audited nginx floor nginx apache apache-session)
declare -A label=(
  [upstream]="upstream (direct)"
  [nginx]="nginx proxy_pass"
  [floor]="hyper pass-through floor"
  [apache]="apache mod_auth_openidc"
  [portcullis]="portcullis"
  [audited]="portcullis + audit trail"
  [signed-in]="portcullis, session cookie"
  [apache-session]="apache oidc, session cookie"
)
declare -A failure=() rps=() p50=() p99=() socket_errors=() pid_of=()
fail_leg() {
  local leg=$1
  shift
  if [ -z "${failure[$leg]:-}" ]; then failure[$leg]="$*"; fi
  printf '    FAILED %s: %s\n' "$leg" "$*"
}
# Checks the status of one request; records a failure of LEG otherwise.
expect_status() {
  local leg=$1 what=$2 expected=$3 url=$4 code body
  shift 4
  code=$(http_status "$url" "$@")
  if [ "$code" = "$expected" ]; then
    printf '    ok  %-44s %s\n' "$what" "$code"
  else
    body=$(head -c 200 "$work/last-body" 2>/dev/null | tr -s '\r\n' '  ' || true)
    fail_leg "$leg" "$what: expected $expected, got $code ${body:+($body)}"
  fi
}
log_tail() {
  if [ -s "$1" ]; then tail -n "${2:-15}" "$1" | sed 's/^/    | /'; fi
  return 0
}

# ---------------------------------------------------------------------------
# Test identity provider
# ---------------------------------------------------------------------------
say "identity provider on 127.0.0.1:$port_idp (and TLS on 127.0.0.1:$port_idp_tls)"
issuer="http://127.0.0.1:$port_idp"
idp=$work/idp
mkdir -p "$idp/www/.well-known"
chmod 700 "$idp"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$idp/key.pem" 2>/dev/null
# A second key, under the same kid, for a token whose signature must fail.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$idp/other-key.pem" 2>/dev/null
modulus=$(openssl rsa -in "$idp/key.pem" -noout -modulus 2>/dev/null)
exponent=$(openssl rsa -in "$idp/key.pem" -noout -text 2>/dev/null | sed -n 's/^publicExponent: \([0-9]*\).*/\1/p')
kid=bench-1
# mod_auth_openidc 2.4 fetches a JWKS only over https: the same documents are
# also served with TLS, under a self-signed certificate.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$idp/tls-key.pem" -out "$idp/tls-cert.pem" \
  -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null

python3 - "$idp/www" "$issuer" "$modulus" "$exponent" "$kid" <<'PY'
import base64, json, os, sys

www, issuer, modulus, exponent, kid = sys.argv[1:]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


n = int(modulus.split("=", 1)[1], 16)
e = int(exponent)
jwks = {"keys": [{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                  "n": b64url(unsigned(n)), "e": b64url(unsigned(e))}]}
discovery = {
    "issuer": issuer,
    "jwks_uri": issuer + "/jwks.json",
    "authorization_endpoint": issuer + "/authorize",
    "token_endpoint": issuer + "/token",
    "response_types_supported": ["code"],
    "subject_types_supported": ["public"],
    "id_token_signing_alg_values_supported": ["RS256"],
}
with open(os.path.join(www, "jwks.json"), "w") as f:
    json.dump(jwks, f)
with open(os.path.join(www, ".well-known", "openid-configuration"), "w") as f:
    json.dump(discovery, f)
PY

cat >"$idp/server.py" <<'PY'
# Serves the JWKS and the discovery document as application/json, over
# plain HTTP on PORT and over TLS on TLS_PORT.
import http.server, os, ssl, sys, threading

www, port, tls_port, cert, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
files = {
    "/jwks.json": os.path.join(www, "jwks.json"),
    "/.well-known/openid-configuration": os.path.join(www, ".well-known", "openid-configuration"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = files.get(self.path.split("?", 1)[0])
        if path is None:
            body, status = b'{"error":"not found"}', 404
        else:
            with open(path, "rb") as f:
                body, status = f.read(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


plain = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
tls = http.server.ThreadingHTTPServer(("127.0.0.1", tls_port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
tls.socket = context.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
plain.serve_forever()
PY
spawn "$work/idp.log" python3 "$idp/server.py" "$idp/www" "$port_idp" "$port_idp_tls" "$idp/tls-cert.pem" "$idp/tls-key.pem"
pid_of[idp]=$started
wait_http "$issuer/.well-known/openid-configuration" '^200$' 10 "${pid_of[idp]}" ||
  { log_tail "$work/idp.log"; die "the identity provider did not start"; }
curl -sfk --max-time 5 -o /dev/null "https://127.0.0.1:$port_idp_tls/jwks.json" ||
  { log_tail "$work/idp.log"; die "the identity provider's TLS listener does not answer"; }

# mint KEY EMAIL GROUPS_JSON: an RS256 JWT from this issuer for audience
# "bench", valid for two hours.
mint() {
  local key=$1 email=$2 groups=$3 input
  input=$(python3 - "$issuer" "$kid" "$email" "$groups" <<'PY'
import base64, json, sys, time

issuer, kid, email, groups = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(value):
    return b64url(json.dumps(value, separators=(",", ":")).encode())


now = int(time.time())
header = {"alg": "RS256", "typ": "JWT", "kid": kid}
claims = {"iss": issuer, "aud": "bench", "sub": email.split("@")[0], "email": email,
          "groups": groups, "iat": now, "exp": now + 7200}
print(part(header) + "." + part(claims))
PY
  )
  printf '%s.%s' "$input" "$(printf '%s' "$input" | openssl dgst -sha256 -sign "$key" -binary |
    python3 -c 'import base64, sys; print(base64.urlsafe_b64encode(sys.stdin.buffer.read()).rstrip(b"=").decode())')"
}
token=$(mint "$idp/key.pem" alice@example.com '["bench-readers"]')
token_bob=$(mint "$idp/key.pem" bob@example.com '[]')
# Bob again, with a token that claims the group the directory does not give
# him: Portcullis authorizes from SCIM groups, never from token claims.
token_bob_claims=$(mint "$idp/key.pem" bob@example.com '["bench-readers"]')
token_forged=$(mint "$idp/other-key.pem" alice@example.com '["bench-readers"]')
auth=(-H "Authorization: Bearer $token")

# The development OpenID Provider for the signed-in legs: one confidential
# client whose redirect URIs are Portcullis's callback and Apache's.
say "development OpenID Provider on 127.0.0.1:$port_devidp"
devidp_secret=$(openssl rand -hex 24)
devidp_issuer="http://127.0.0.1:$port_devidp"
spawn "$work/devidp.log" "$devidp_bin" "127.0.0.1:$port_devidp" bench "$devidp_secret" \
  "http://127.0.0.1:$port_session/.portcullis/callback,http://127.0.0.1:$port_apache_session/redirect_uri" \
  alice:alice-pw:alice@example.com bob:bob-pw:bob@example.com
pid_of[devidp]=$started
wait_http "$devidp_issuer/.well-known/openid-configuration" '^200$' 10 "${pid_of[devidp]}" ||
  { log_tail "$work/devidp.log"; die "the development OpenID Provider did not start"; }

# signin START_URL USER PASSWORD COOKIE_NAME: signs in through a browser
# flow (redirect to the provider, its login form, the callback) with a
# cookie jar and prints "COOKIE_NAME=value" of the proxy's session cookie.
signin() { timeout 30 python3 "$repo/deploy/pgo/signin.py" "$@"; }

# ---------------------------------------------------------------------------
# Upstream and nginx
# ---------------------------------------------------------------------------
# nginx_conf DIR LISTEN_PORT WORKER_CONNECTIONS HTTP_EXTRA LOCATION_BODY
nginx_conf() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
  worker_connections $3;
}
http {
  access_log off;
  client_body_temp_path $dir/client_body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_timeout 75s;
  keepalive_requests 10000000;
$4
  server {
    listen 127.0.0.1:$2 backlog=4096;
    location / {
      $5
    }
  }
}
CONF
}
start_nginx() {
  local leg=$1 dir=$work/$1
  spawn "$dir/stdout.log" nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;'
  pid_of[$leg]=$started
}

say "upstream nginx on 127.0.0.1:$port_upstream, nginx proxy on 127.0.0.1:$port_nginx"
nginx_conf "$work/upstream" "$port_upstream" 4096 "" 'default_type text/plain; return 200 "ok\n";'
nginx_conf "$work/nginx" "$port_nginx" $((IDLE_CONNECTIONS + 4096)) "  upstream backend {
    server 127.0.0.1:$port_upstream;
    keepalive 64;
    keepalive_requests 10000000;
  }" 'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
start_nginx upstream
start_nginx nginx

# As many workers as Portcullis runs (0: one per CPU).
floor_workers=$PORTCULLIS_WORKERS
[ "$floor_workers" -gt 0 ] || floor_workers=$(nproc)
say "hyper-floor ($floor_workers workers) on 127.0.0.1:$port_floor"
spawn "$work/floor.log" "$floor_bin" "127.0.0.1:$port_floor" "127.0.0.1:$port_upstream" "$floor_workers"
pid_of[floor]=$started

# ---------------------------------------------------------------------------
# Apache with mod_auth_openidc
# ---------------------------------------------------------------------------
say "apache (mod_auth_openidc $openidc_version) on 127.0.0.1:$port_apache"
apache=$work/apache
mkdir -p "$apache/run" "$apache/htdocs"
apache_user=""
if [ "$(id -u)" -eq 0 ]; then
  # Apache refuses to serve as root; its children run as www-data.
  apache_user="User www-data
Group www-data"
  chown www-data "$apache/run"
fi
cat >"$apache/apache.conf" <<CONF
ServerRoot "$apache"
ServerName 127.0.0.1
Listen 127.0.0.1:$port_apache
PidFile "$apache/apache.pid"
DefaultRuntimeDir "$apache/run"
ErrorLog "$apache/error.log"
LogLevel warn
DocumentRoot "$apache/htdocs"
$apache_user

LoadModule mpm_event_module $apache_modules/mod_mpm_event.so
LoadModule authn_core_module $apache_modules/mod_authn_core.so
LoadModule authz_core_module $apache_modules/mod_authz_core.so
LoadModule proxy_module $apache_modules/mod_proxy.so
LoadModule proxy_http_module $apache_modules/mod_proxy_http.so
LoadModule auth_openidc_module $apache_modules/mod_auth_openidc.so

# Two processes of 64 threads: every benchmark connection gets a thread
# without process churn.
StartServers 2
ServerLimit 2
ThreadsPerChild 64
ThreadLimit 64
MaxRequestWorkers 128
MinSpareThreads 64
MaxSpareThreads 128
MaxConnectionsPerChild 0
ListenBacklog 4096
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 75
Timeout 30

# OAuth 2.0 resource server: validate the bearer JWT locally (RS256) with
# the keys published at the JWKS URI, and check the same claims as
# Portcullis (issuer, audience) plus the groups claim.
OIDCCryptoPassphrase "$(openssl rand -hex 16)"
# (2.4 accepts only an https JWKS URI; the test IdP's certificate is
# self-signed.)
OIDCOAuthVerifyJwksUri "https://127.0.0.1:$port_idp_tls/jwks.json"
OIDCOAuthSSLValidateServer Off
OIDCOAuthRemoteUserClaim email

ProxyRequests Off
# Backend connections are pooled and reused (keep-alive) per process.
ProxyPass "/" "http://127.0.0.1:$port_upstream/" max=64 ttl=60
<Location "/">
  AuthType oauth20
  <RequireAll>
    Require claim groups:bench-readers
    Require claim aud:bench
    Require claim "iss:$issuer"
  </RequireAll>
  AuthzSendForbiddenOnFailure On
</Location>
CONF
spawn "$apache/stdout.log" apache2 -d "$apache" -f "$apache/apache.conf" -DFOREGROUND
pid_of[apache]=$started

# The same Apache as an OpenID Connect relying party (browser sign-in with a
# server-side session), against the development provider.
apache_session=$work/apache-session
mkdir -p "$apache_session/run" "$apache_session/htdocs"
if [ "$(id -u)" -eq 0 ]; then chown www-data "$apache_session/run"; fi
sed -e "s|$apache|$apache_session|g" -e "s|^Listen 127.0.0.1:$port_apache\$|Listen 127.0.0.1:$port_apache_session|" \
  -e '/^# OAuth 2.0 resource server/,$d' "$apache/apache.conf" >"$apache_session/apache.conf"
cat >>"$apache_session/apache.conf" <<CONF
# OpenID Connect relying party: code flow with PKCE against the development
# provider; the session lives in Apache's shared-memory cache, the browser
# holds its cookie.
OIDCProviderMetadataURL "$devidp_issuer/.well-known/openid-configuration"
OIDCClientID bench
OIDCClientSecret "$devidp_secret"
OIDCRedirectURI "http://127.0.0.1:$port_apache_session/redirect_uri"
OIDCCryptoPassphrase "$(openssl rand -hex 16)"
OIDCScope "openid email"
OIDCPKCEMethod S256
OIDCRemoteUserClaim email
OIDCSessionInactivityTimeout 3600

ProxyRequests Off
ProxyPass "/redirect_uri" "!"
ProxyPass "/" "http://127.0.0.1:$port_upstream/" max=64 ttl=60
<Location "/">
  AuthType openid-connect
  Require claim email:alice@example.com
</Location>
CONF
spawn "$apache_session/stdout.log" apache2 -d "$apache_session" -f "$apache_session/apache.conf" -DFOREGROUND
pid_of[apache-session]=$started

for leg in upstream nginx; do
  wait_http "http://127.0.0.1:$([ "$leg" = upstream ] && echo "$port_upstream" || echo "$port_nginx")/" '^200$' 15 "${pid_of[$leg]}" ||
    { log_tail "$work/$leg/error.log"; log_tail "$work/$leg/stdout.log"; die "$leg nginx did not start"; }
done
if ! wait_http "http://127.0.0.1:$port_floor/" '^200$' 15 "${pid_of[floor]}"; then
  fail_leg floor "hyper-floor did not start"
  log_tail "$work/floor.log"
fi
if ! wait_http "http://127.0.0.1:$port_apache/" '^[1-5][0-9][0-9]$' 15 "${pid_of[apache]}"; then
  fail_leg apache "apache did not start"
  log_tail "$apache/error.log"
  log_tail "$apache/stdout.log"
fi
if ! wait_http "http://127.0.0.1:$port_apache_session/" '^[1-5][0-9][0-9]$' 15 "${pid_of[apache-session]}"; then
  fail_leg apache-session "apache (relying party) did not start"
  log_tail "$apache_session/error.log"
  log_tail "$apache_session/stdout.log"
fi

# ---------------------------------------------------------------------------
# Portcullis
# ---------------------------------------------------------------------------
# start_portcullis LEG PORT ADMIN_PORT EXTRA_TOML [OIDC_TOML]: a Portcullis
# in its own directory with its own store, alice and bob provisioned over
# SCIM. OIDC_TOML replaces the bearer-token issuer's [oidc] table.
start_portcullis() {
local leg=$1 port=$2 admin_port=$3 extra=$4
local oidc=${5:-"[oidc]
issuer = \"$issuer\"
audiences = [\"bench\"]"}
say "$leg on 127.0.0.1:$port (admin 127.0.0.1:$admin_port): $bin"
local pc=$work/$leg
mkdir -p "$pc/policies"
scim_token=$(openssl rand -hex 32)
scim_hash=$(printf %s "$scim_token" | sha256sum | cut -d' ' -f1)
cat >"$pc/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
workers = $PORTCULLIS_WORKERS

[admin]
listen = "127.0.0.1:$admin_port"

[store]
path = "$pc/store"

[policy]
dir = "$pc/policies"

[scim]
path = "/scim/v2"

[[scim.clients]]
name = "bench"
token_sha256 = "$scim_hash"

$oidc

[identity]
claim = "email"
attribute = "userName"
$extra
[[routes]]
name = "bench"
upstream = "http://127.0.0.1:$port_upstream"
TOML
cat >"$pc/policies/bench.toml" <<'TOML'
# Members of the SCIM group "bench-readers" may GET anything on route "bench".
[roles.reader]
allow = [{ route = "bench", methods = ["GET"], paths = ["/**"] }]

[groups]
"bench-readers" = ["reader"]
TOML

if "$bin" check --config "$pc/portcullis.toml" >"$pc/check.log" 2>&1; then
  echo "    portcullis check: ok"
else
  echo "    portcullis check reported problems:"
  log_tail "$pc/check.log" 20
fi

portcullis_url="http://127.0.0.1:$port"
spawn "$pc/portcullis.log" env PORTCULLIS_LOG="$PORTCULLIS_LOG" "$bin" serve --config "$pc/portcullis.toml"
pid_of[$leg]=$started
if ! wait_http "http://127.0.0.1:$admin_port/readyz" '^200$' 30 "${pid_of[$leg]}"; then
  if kill -0 "${pid_of[$leg]}" 2>/dev/null; then
    fail_leg "$leg" "/readyz did not answer 200 within 30 s"
  else
    wait "${pid_of[$leg]}" 2>/dev/null && exit_code=0 || exit_code=$?
    fail_leg "$leg" "portcullis serve exited with status $exit_code"
  fi
  log_tail "$pc/portcullis.log"
else
  echo "    ready; provisioning alice and bob over SCIM"
  user_doc='{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s","active":true}'
  # shellcheck disable=SC2059
  code=$(scim POST /Users "$(printf "$user_doc" alice@example.com)")
  if [ "$code" = 201 ]; then
    alice_id=$(json_id)
    # shellcheck disable=SC2059
    code=$(scim POST /Users "$(printf "$user_doc" bob@example.com)")
  fi
  if [ "$code" = 201 ]; then
    code=$(scim POST /Groups "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:Group\"],\"displayName\":\"bench-readers\",\"members\":[{\"value\":\"$alice_id\"}]}")
  fi
  if [ "$code" != 201 ]; then
    fail_leg "$leg" "SCIM provisioning answered $code: $(head -c 200 "$work/scim-body" 2>/dev/null || true)"
  fi
fi
}
scim() { # METHOD PATH JSON -> body in $work/scim-body, status on stdout
  curl -s -o "$work/scim-body" -w '%{http_code}' --max-time 10 -X "$1" \
    -H "Authorization: Bearer $scim_token" -H 'Content-Type: application/scim+json' \
    --data "$3" "$portcullis_url/scim/v2$2" 2>/dev/null || true
}
json_id() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$work/scim-body"; }

start_portcullis audited "$port_audited" "$port_audited_admin" "
[audit]
path = \"$work/audited/audit/audit.log\"
"
start_portcullis signed-in "$port_session" "$port_session_admin" "" "[oidc]
issuer = \"$devidp_issuer\"
client_id = \"bench\"
client_secret = \"$devidp_secret\"
scopes = [\"openid\", \"email\"]"
start_portcullis portcullis "$port_portcullis" "$port_admin" ""
pc=$work/portcullis

# Session cookies, from real sign-ins.
declare -A header_of=(
  [upstream]="Authorization: Bearer $token"
  [nginx]="Authorization: Bearer $token"
  [floor]="Authorization: Bearer $token"
  [apache]="Authorization: Bearer $token"
  [portcullis]="Authorization: Bearer $token"
  [audited]="Authorization: Bearer $token"
)
if [ -z "${failure[signed-in]:-}" ]; then
  if cookie=$(signin "http://127.0.0.1:$port_session/" alice alice-pw _portcullis 2>"$work/signin-alice.log"); then
    header_of[signed-in]="Cookie: $cookie"
  else
    fail_leg signed-in "alice's sign-in failed: $(tail -n 2 "$work/signin-alice.log" | tr '\n' ' ')"
  fi
  if cookie=$(signin "http://127.0.0.1:$port_session/" bob bob-pw _portcullis 2>"$work/signin-bob.log"); then
    bob_session="Cookie: $cookie"
  else
    fail_leg signed-in "bob's sign-in failed: $(tail -n 2 "$work/signin-bob.log" | tr '\n' ' ')"
  fi
fi
if [ -z "${failure[apache-session]:-}" ]; then
  if cookie=$(signin "http://127.0.0.1:$port_apache_session/" alice alice-pw mod_auth_openidc_session 2>"$work/signin-apache.log"); then
    header_of[apache-session]="Cookie: $cookie"
  else
    fail_leg apache-session "alice's sign-in failed: $(tail -n 2 "$work/signin-apache.log" | tr '\n' ' ')"
    log_tail "$apache_session/error.log"
  fi
fi

# ---------------------------------------------------------------------------
# Checks, then load
# ---------------------------------------------------------------------------
declare -A url_of=(
  [upstream]="http://127.0.0.1:$port_upstream/"
  [nginx]="http://127.0.0.1:$port_nginx/"
  [floor]="http://127.0.0.1:$port_floor/"
  [apache]="http://127.0.0.1:$port_apache/"
  [portcullis]="http://127.0.0.1:$port_portcullis/"
  [audited]="http://127.0.0.1:$port_audited/"
  [signed-in]="http://127.0.0.1:$port_session/"
  [apache-session]="http://127.0.0.1:$port_apache_session/"
)

say "checks"
for leg in "${legs[@]}"; do
  [ -z "${failure[$leg]:-}" ] || continue
  echo "  ${label[$leg]} (${url_of[$leg]})"
  case $leg in
    signed-in | apache-session)
      expect_status "$leg" "alice's session cookie" 200 "${url_of[$leg]}" -H "${header_of[$leg]:-}"
      expect_status "$leg" "a browser without a session" 302 "${url_of[$leg]}" -H "Accept: text/html"
      if [ "$leg" = signed-in ]; then
        expect_status "$leg" "bob's session cookie (not in the group)" 403 "${url_of[$leg]}" -H "${bob_session:-}"
        expect_status "$leg" "a forged session cookie" 302 "${url_of[$leg]}" -H "Accept: text/html" \
          -H "Cookie: _portcullis=$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=')"
      fi
      continue
      ;;
  esac
  expect_status "$leg" "alice's token" 200 "${url_of[$leg]}" "${auth[@]}"
  case $leg in
    apache | portcullis | audited)
      expect_status "$leg" "no token" 401 "${url_of[$leg]}"
      expect_status "$leg" "alice's token signed by another key" 401 "${url_of[$leg]}" -H "Authorization: Bearer $token_forged"
      expect_status "$leg" "bob's token (not in the group)" 403 "${url_of[$leg]}" -H "Authorization: Bearer $token_bob"
      ;;
  esac
  if [ "$leg" = portcullis ] || [ "$leg" = audited ]; then
    expect_status "$leg" "bob's token claiming bench-readers" 403 "${url_of[$leg]}" -H "Authorization: Bearer $token_bob_claims"
  fi
done

cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%.0f duration_us=%.0f p50_us=%.0f p99_us=%.0f non2xx=%.0f socket_errors=%.0f\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

say "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up), one target at a time, $ROUNDS round(s)"
# Results of each load run, by LEG:ROUND; nginx, loaded several times a
# round, by nginx:ROUND:N. nginx_runs[ROUND] counts them, and
# after_nginx[LEG:ROUND] says how many had run before LEG did.
declare -A rps_r=() p50_r=() p99_r=() cpu_r=() user_r=() nginx_runs=() after_nginx=()
for round in $(seq 1 "$ROUNDS"); do
nginx_runs[$round]=0
for leg in "${sequence[@]}"; do
  if [ -n "${failure[$leg]:-}" ]; then
    echo "  ${label[$leg]}: skipped (failed above)"
    continue
  fi
  out=$work/wrk-$leg.txt
  if [ "$warmup_s" -gt 0 ]; then
    timeout $((warmup_s + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" --timeout 5s -H "${header_of[$leg]}" "${url_of[$leg]}" >/dev/null 2>&1 || true
  fi
  perf_pid=
  if [ "${PERF:-0}" = 1 ] && [ "$leg" = "${PERF_LEG:-portcullis}" ] && [ -z "${perf_done:-}" ] && command -v perf >/dev/null; then
    # A CPU profile of Portcullis under load, for `perf report -i`.
    # PERF_CALL_GRAPH=dwarf gives whole stacks of a build without frame
    # pointers (larger files).
    perf record -q -F 999 --call-graph "${PERF_CALL_GRAPH:-fp}" -e cpu-clock -p "${pid_of[$leg]}" -o "$work/perf.data" \
      -- sleep "$duration_s" >/dev/null 2>&1 &
    perf_pid=$!
    perf_done=1
  fi
  read -r user_before system_before < <(cpu_ticks "${pid_of[$leg]}")
  if ! timeout $((duration_s + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency \
    -s "$work/report.lua" -H "${header_of[$leg]}" "${url_of[$leg]}" >"$out" 2>&1; then
    fail_leg "$leg" "wrk failed: $(tail -n 3 "$out" | tr '\n' ' ')"
    continue
  fi
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    echo "  cpu profile of $leg: perf report -i $work/perf.data"
  fi
  line=$(grep '^BENCH ' "$out" || true)
  if [ -z "$line" ]; then
    fail_leg "$leg" "no result from wrk: $(tail -n 3 "$out" | tr '\n' ' ')"
    continue
  fi
  declare -A r=()
  for field in ${line#BENCH }; do r[${field%%=*}]=${field#*=}; done
  if [ "${r[requests]}" -eq 0 ]; then
    fail_leg "$leg" "no request completed"
    continue
  fi
  if [ "$leg" = nginx ]; then
    nginx_runs[$round]=$((nginx_runs[$round] + 1))
    key=nginx:$round:${nginx_runs[$round]}
  else
    after_nginx[$leg:$round]=${nginx_runs[$round]}
    key=$leg:$round
  fi
  read -r user_after system_after < <(cpu_ticks "${pid_of[$leg]}")
  user_ticks=$((user_after - user_before))
  ticks=$((user_ticks + system_after - system_before))
  cpu_r[$key]=$(awk -v t="$ticks" -v hz="$clock_ticks" -v n="${r[requests]}" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  user_r[$key]=$(awk -v t="$user_ticks" -v hz="$clock_ticks" -v n="${r[requests]}" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  rps_r[$key]=$(awk -v n="${r[requests]}" -v us="${r[duration_us]}" 'BEGIN { printf "%.0f", n / (us / 1e6) }')
  p50_r[$key]=$(awk -v us="${r[p50_us]}" 'BEGIN { printf "%.3f", us / 1000 }')
  p99_r[$key]=$(awk -v us="${r[p99_us]}" 'BEGIN { printf "%.3f", us / 1000 }')
  socket_errors[$leg]=$(( ${socket_errors[$leg]:-0} + r[socket_errors] ))
  printf '  round %s  %-26s %9s req/s  p50 %s ms  p99 %s ms  cpu %s us/req (user %s)\n' "$round" "${label[$leg]}" "${rps_r[$key]}" \
    "${p50_r[$key]}" "${p99_r[$key]}" "${cpu_r[$key]}" "${user_r[$key]}"
  if [ "${r[non2xx]}" -gt 0 ]; then
    fail_leg "$leg" "${r[non2xx]} of ${r[requests]} responses under load were not 2xx"
  fi
  unset r
done
done

# Medians over the rounds. A target's ratio to nginx (and its p99
# difference) is taken within its round first, against the mean of the
# nginx runs just before and just after it (the one there is, at either
# end), and then the median of those: the machine's speed drifts during a
# round, and a comparison with a run minutes away would mostly measure the
# drift.
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# around_nginx FIELD LEG ROUND: the mean of FIELD (rps_r or p99_r) over the
# nginx runs next to LEG in ROUND; nothing when there is none.
around_nginx() {
  local -n field=$1
  local k=${after_nginx[$2:$3]:-} n=${nginx_runs[$3]:-0} values=()
  [ -n "$k" ] || return 0
  if [ "$k" -gt 0 ] && [ -n "${field[nginx:$3:$k]:-}" ]; then values+=("${field[nginx:$3:$k]}"); fi
  if [ "$k" -lt "$n" ] && [ -n "${field[nginx:$3:$((k + 1))]:-}" ]; then values+=("${field[nginx:$3:$((k + 1))]}"); fi
  [ "${#values[@]}" -gt 0 ] || return 0
  printf '%s\n' "${values[@]}" | awk '{ s += $1 } END { printf "%.3f", s / NR }'
}
declare -A ratio_of=() delta_of=() cpu=() user=() ratio_r=()
for leg in "${legs[@]}"; do
  values=() fast=() slow=() ratios=() deltas=() cpus=() users=()
  for round in $(seq 1 "$ROUNDS"); do
    if [ "$leg" = nginx ]; then
      for k in $(seq 1 "${nginx_runs[$round]:-0}"); do
        values+=("${rps_r[nginx:$round:$k]}")
        cpus+=("${cpu_r[nginx:$round:$k]}")
        users+=("${user_r[nginx:$round:$k]}")
        fast+=("${p50_r[nginx:$round:$k]}")
        slow+=("${p99_r[nginx:$round:$k]}")
      done
      continue
    fi
    [ -n "${rps_r[$leg:$round]:-}" ] || continue
    values+=("${rps_r[$leg:$round]}")
    cpus+=("${cpu_r[$leg:$round]}")
    users+=("${user_r[$leg:$round]}")
    fast+=("${p50_r[$leg:$round]}")
    slow+=("${p99_r[$leg:$round]}")
    ref_rps=$(around_nginx rps_r "$leg" "$round")
    ref_p99=$(around_nginx p99_r "$leg" "$round")
    if [ -n "$ref_rps" ]; then
      ratio_r[$leg:$round]=$(awk -v a="${rps_r[$leg:$round]}" -v b="$ref_rps" 'BEGIN { printf "%.3f", a / b }')
      ratios+=("${ratio_r[$leg:$round]}")
      deltas+=("$(awk -v a="${p99_r[$leg:$round]}" -v b="$ref_p99" 'BEGIN { printf "%.3f", a - b }')")
    fi
  done
  [ "${#values[@]}" -gt 0 ] || continue
  rps[$leg]=$(median "${values[@]}" | awk '{ printf "%.0f", $1 }')
  p50[$leg]=$(median "${fast[@]}")
  p99[$leg]=$(median "${slow[@]}")
  cpu[$leg]=$(median "${cpus[@]}" | awk '{ printf "%.1f", $1 }')
  user[$leg]=$(median "${users[@]}" | awk '{ printf "%.1f", $1 }')
  if [ "$leg" = nginx ]; then
    ratio_of[nginx]=1
    delta_of[nginx]=0
  elif [ "${#ratios[@]}" -gt 0 ]; then
    ratio_of[$leg]=$(median "${ratios[@]}")
    delta_of[$leg]=$(median "${deltas[@]}")
  fi
done

# ---------------------------------------------------------------------------
# Idle keep-alive connections
# ---------------------------------------------------------------------------
cat >"$work/idle.py" <<'PY'
# Opens N keep-alive connections, sends one authorized GET on each, reads the
# answer and keeps the connection open; prints "READY ...", holds them for
# HOLD seconds, then prints how many the server kept open.
import asyncio, sys, time

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, hold, deadline_s = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
request = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()


async def open_one(sem, conns, stats):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except Exception:
            stats["connect_failed"] += 1
            return
        conns.append(writer)
        try:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
            if "content-length" in headers:
                await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
            stats["ok" if status == 200 else "not_200"] += 1
        except Exception:
            stats["request_failed"] += 1
        writer.reader = reader


async def main():
    stats = {"ok": 0, "not_200": 0, "request_failed": 0, "connect_failed": 0}
    conns = []
    sem = asyncio.Semaphore(256)
    start = time.monotonic()
    tasks = [asyncio.ensure_future(open_one(sem, conns, stats)) for _ in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in pending:
        task.cancel()
    print(f"READY opened={len(conns)} ok={stats['ok']} not_200={stats['not_200']} "
          f"request_failed={stats['request_failed']} connect_failed={stats['connect_failed']} "
          f"unfinished={len(pending)} seconds={time.monotonic() - start:.1f}", flush=True)
    await asyncio.sleep(hold)
    still_open = sum(1 for w in conns if hasattr(w, "reader") and not w.reader.at_eof() and not w.is_closing())
    print(f"HELD still_open={still_open}", flush=True)
    for w in conns:
        w.close()


asyncio.run(main())
PY

declare -A idle_result=()
# idle_test LEG PORT PID_TO_MEASURE
idle_test() {
  local leg=$1 port=$2 pid=$3 out=$work/idle-$1.txt before with ready held client deadline
  before=$(rss_kb "$pid")
  # At most 20 s to open the connections, then 5 s held: the client ends
  # by itself within 30 s, and is stopped if it does not.
  spawn "$out" timeout 40 python3 "$work/idle.py" 127.0.0.1 "$port" "$token" "$IDLE_CONNECTIONS" 5 20
  client=$started
  deadline=$((SECONDS + 25))
  until grep -q '^READY' "$out" 2>/dev/null; do
    if ! kill -0 "$client" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.2
  done
  ready=$(grep '^READY' "$out" || true)
  if [ -z "$ready" ]; then
    stop_pid "$client"
    idle_result[$leg]="FAILED: the client did not open its connections ($(tail -n 2 "$out" | tr '\n' ' '))"
    return
  fi
  sleep 2
  with=$(rss_kb "$pid")
  deadline=$((SECONDS + 10))
  while kill -0 "$client" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  stop_pid "$client"
  held=$(grep '^HELD' "$out" | sed 's/^HELD //' || true)
  idle_result[$leg]="before $(mb "$before"), with idle connections $(mb "$with") (+$(awk -v a="$before" -v b="$with" -v n="$IDLE_CONNECTIONS" 'BEGIN { printf "%.1f KB per connection", (b - a) / (n ? n : 1) }'))
      client: ${ready#READY } ${held:-still_open=?}"
  idle_kb[$leg]=$with
  idle_ok[$leg]=$(grep -q "ok=$IDLE_CONNECTIONS " <<<"$ready" && echo 1 || echo 0)
}
declare -A idle_kb=() idle_ok=()

if [ "$IDLE_CONNECTIONS" -gt 0 ]; then
  say "idle: $IDLE_CONNECTIONS keep-alive connections, one authorized GET each (fd limit $nofile)"
  for leg in $IDLE_PEERS; do
    case $leg in
      nginx)
        # The nginx leg's single worker holds the connections.
        worker=$(children_of "${pid_of[nginx]}" | head -n 1)
        if [ -n "${failure[nginx]:-}" ] || [ -z "$worker" ]; then
          idle_result[nginx]="not run: the nginx leg failed"
        else
          idle_test nginx "$port_nginx" "$worker"
        fi
        ;;
      portcullis)
        if [ -n "${failure[portcullis]:-}" ]; then
          idle_result[portcullis]="not run: the portcullis leg failed"
        else
          idle_test portcullis "$port_portcullis" "${pid_of[portcullis]}"
        fi
        ;;
      *) warn "IDLE_PEERS: unknown peer '$leg' (nginx, portcullis)" ;;
    esac
    printf '  %-12s %s\n' "$leg" "${idle_result[$leg]:-not run}"
  done
fi

# ---------------------------------------------------------------------------
# Instructions per request
# ---------------------------------------------------------------------------
# The one figure this machine's drifting speed cannot move: the user-space
# instructions a server executes per proxied request, counted by callgrind
# (valgrind) while wrk keeps 8 connections busy, after a warm-up. Repeated
# runs agree within a few tenths of a per cent, so it shows what a code
# change did when requests/s cannot. It leaves out the kernel (about half
# of either server's CPU time here), and instructions are not time.
# Each server is restarted under valgrind for this, with the same
# configuration (nginx as one process).
declare -A instr=()
# instructions_of LEG LOG CMD...: runs CMD under callgrind, loads it, sets
# instr[LEG]; the server is stopped afterwards.
instructions_of() {
  local leg=$1 log=$2 out pid deadline code line requests total
  shift 2
  out=$work/callgrind-$leg
  spawn "$log" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.%p" "$@"
  pid=$started
  # Under valgrind a server starts in seconds, not milliseconds.
  deadline=$((SECONDS + 90))
  code=000
  while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "${header_of[$leg]}" "${url_of[$leg]}" 2>/dev/null || true)
    [ "$code" = 200 ] && break
    sleep 0.5
  done
  if [ "$code" != 200 ]; then
    warn "instructions: $leg did not answer 200 under valgrind (last status $code)"
    log_tail "$log"
    stop_pid "$pid"
    return
  fi
  timeout 60 wrk -t1 -c8 -d2s --timeout 5s -H "${header_of[$leg]}" "${url_of[$leg]}" >/dev/null 2>&1 || true
  callgrind_control -i on "$pid" >/dev/null 2>&1 || true
  line=$(timeout $((INSTRUCTIONS_S + 60)) wrk -t1 -c8 -d"${INSTRUCTIONS_S}s" --timeout 5s -s "$work/report.lua" \
    -H "${header_of[$leg]}" "${url_of[$leg]}" 2>&1 | grep '^BENCH ' || true)
  callgrind_control -d "$pid" >/dev/null 2>&1 || true
  deadline=$((SECONDS + 30))
  until grep -qs '^summary:' "$out.$pid.1" || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.5; done
  stop_pid "$pid"
  requests=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
  total=$(sed -n 's/^summary: //p' "$out.$pid.1" 2>/dev/null | head -n 1 || true)
  if [ -z "$requests" ] || [ "$requests" -eq 0 ] || [ -z "$total" ] || ! grep -q ' non2xx=0 ' <<<"$line"; then
    warn "instructions: no count for $leg (${line:-wrk reported nothing})"
    return
  fi
  instr[$leg]=$((total / requests))
  printf '  %-26s %9s instructions per request (%s requests)\n' "${label[$leg]}" "${instr[$leg]}" "$requests"
  case $leg in nginx | floor) ;; *) instruction_parts "$out.$pid.1" "$requests" ;; esac
}

# instruction_parts FILE REQUESTS: where a Portcullis request's
# instructions go, from callgrind's inclusive counts of the tasks' entry
# points (see docs/benchmarks.md); a part whose function was renamed shows
# as "?".
instruction_parts() {
  local file=$1 requests=$2 annotated serve handle client
  annotated=$(callgrind_annotate --inclusive=yes --threshold=100 "$file" 2>/dev/null || true)
  # part SYMBOL: the inclusive count per request of the function, the
  # largest of the lines naming it (a whole-program optimized build also
  # lists pieces of it inlined elsewhere under the same name).
  # The name ends the line or is followed by " [object]", depending on how
  # callgrind_annotate prints the line; a longer name that starts with it
  # (a closure inside it) does not count.
  part() {
    awk -v sym="$1" -v n="$requests" '
      $1 ~ /^[0-9,]+$/ && (index($0, sym " [") || substr($0, length($0) - length(sym) + 1) == sym) {
        gsub(",", "", $1); if ($1 + 0 > max) max = $1 + 0; found = 1 }
      END { if (found) printf "%.0f", max / n; else printf "?" }' <<<"$annotated"
  }
  serve=$(part 'portcullis::web::conn::Connection::serve::{{closure}}')
  handle=$(part 'portcullis::proxy::Proxy::handle::{{closure}}')
  client=$(part 'portcullis::proxy::upstream::handshake_h1::{{closure}}::{{closure}}')
  # Inlining can leave an entry point listed only by its pieces; a split
  # that does not add up is not printed as if it did.
  if [[ $serve =~ ^[0-9]+$ && $handle =~ ^[0-9]+$ && $client =~ ^[0-9]+$ ]] &&
    [ "$serve" -gt "$handle" ] && [ "$client" -gt 1000 ]; then
    printf '      hyper server side %s, Proxy::handle %s, upstream connection task %s\n' \
      "$((serve - handle))" "$handle" "$client"
  else
    printf '      parts: not found whole in this profile (serve %s, Proxy::handle %s, upstream connection task %s)\n' \
      "$serve" "$handle" "$client"
  fi
}

if [ "$INSTRUCTIONS_S" -gt 0 ]; then
  say "instructions per request: callgrind, wrk -t1 -c8 -d${INSTRUCTIONS_S}s after a 2s warm-up"
  if [ -z "${failure[nginx]:-}" ]; then
    stop_pid "${pid_of[nginx]}"
    instructions_of nginx "$work/nginx/callgrind.log" nginx -p "$work/nginx/" -c "$work/nginx/nginx.conf" \
      -e "$work/nginx/error.log" -g 'daemon off; master_process off;'
  fi
  if [ -z "${failure[floor]:-}" ]; then
    stop_pid "${pid_of[floor]}"
    instructions_of floor "$work/floor-callgrind.log" "$floor_bin" "127.0.0.1:$port_floor" \
      "127.0.0.1:$port_upstream" "$floor_workers"
  fi
  for leg in portcullis signed-in; do
    [ -z "${failure[$leg]:-}" ] || continue
    stop_pid "${pid_of[$leg]}"
    # Not through env(1): valgrind would count env, not what it runs.
    PORTCULLIS_LOG="$PORTCULLIS_LOG" instructions_of "$leg" "$work/$leg/callgrind.log" "$bin" serve \
      --config "$work/$leg/portcullis.toml"
  done
fi

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
echo
echo "Proxy benchmark: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, medians of $ROUNDS round(s), $(nproc) cores, loopback; portcullis workers $PORTCULLIS_WORKERS (0: one per CPU); mod_auth_openidc $openidc_version"
echo "Portcullis build: $build"
printf '%-26s %10s %9s %9s %9s %12s %12s %10s %7s\n' target req/s "p50 ms" "p99 ms" "x nginx" "p99-nginx" "cpu us/req" "user us" errors
for leg in "${legs[@]}"; do
  if [ -z "${rps[$leg]:-}" ]; then
    printf '%-26s FAILED: %s\n' "${label[$leg]}" "${failure[$leg]:-not measured}"
    continue
  fi
  ratio=-
  delta=-
  if [ -n "${ratio_of[$leg]:-}" ]; then
    ratio=$(awk -v v="${ratio_of[$leg]}" 'BEGIN { printf "%.2fx", v }')
    delta=$(awk -v v="${delta_of[$leg]}" 'BEGIN { printf "%+.3f ms", v }')
  fi
  printf '%-26s %10s %9s %9s %9s %12s %12s %10s %7s\n' "${label[$leg]}" "${rps[$leg]}" "${p50[$leg]}" "${p99[$leg]}" "$ratio" "$delta" "${cpu[$leg]}" "${user[$leg]}" "${socket_errors[$leg]}"
  if [ -n "${failure[$leg]:-}" ]; then printf '%-26s   but FAILED: %s\n' "" "${failure[$leg]}"; fi
done

echo "cpu us/req: the server's own CPU time (user and system, its worker processes included) per request, medians; user us: its user-space part."
if [ -n "${cpu[portcullis]:-}" ] && [ -n "${cpu[nginx]:-}" ]; then
  echo "CPU per request against nginx: portcullis $(awk -v a="${cpu[portcullis]}" -v b="${cpu[nginx]}" 'BEGIN { printf "%.2fx", a / b }')${cpu[signed-in]:+, signed-in $(awk -v a="${cpu[signed-in]}" -v b="${cpu[nginx]}" 'BEGIN { printf "%.2fx", a / b }')}"
fi

if [ -n "${cpu[portcullis]:-}" ] && [ -n "${user[floor]:-}" ]; then
  echo "user-space CPU per request above the hyper floor: portcullis +$(awk -v a="${user[portcullis]}" -v b="${user[floor]}" 'BEGIN { printf "%.1f", a - b }') us${user[signed-in]:+, signed-in +$(awk -v a="${user[signed-in]}" -v b="${user[floor]}" 'BEGIN { printf "%.1f", a - b }') us}"
fi

if [ -n "${instr[nginx]:-}" ]; then
  for leg in floor portcullis signed-in; do
    [ -n "${instr[$leg]:-}" ] || continue
    echo "user-space instructions per request (callgrind): ${label[$leg]} ${instr[$leg]}, nginx ${instr[nginx]}: $(awk -v a="${instr[$leg]}" -v b="${instr[nginx]}" 'BEGIN { printf "%.2fx", a / b }')"
  done
fi

echo
echo "Targets:"
target() { # DESCRIPTION VERDICT DETAIL
  printf '  %-62s %s  %s\n' "$1" "$2" "$3"
}
measured() { [ -n "${rps[$1]:-}" ] && [ -z "${failure[$1]:-}" ]; }
if measured portcullis && measured nginx; then
  value=$(awk -v v="${ratio_of[portcullis]}" 'BEGIN { printf "%.2f", v }')
  target "portcullis req/s >= 0.9x nginx" "$(awk -v v="$value" 'BEGIN { print (v >= 0.9) ? "PASS" : "FAIL" }')" "${value}x"
  value=$(awk -v v="${delta_of[portcullis]}" 'BEGIN { printf "%.3f", v }')
  target "portcullis p99 <= nginx p99 + 1 ms" "$(awk -v v="$value" 'BEGIN { print (v <= 1) ? "PASS" : "FAIL" }')" "${value} ms"
else
  target "portcullis req/s >= 0.9x nginx" FAIL "not measured"
  target "portcullis p99 <= nginx p99 + 1 ms" FAIL "not measured"
fi
if measured portcullis && measured audited; then
  # Within each round, each leg against the nginx runs around it.
  costs=()
  for round in $(seq 1 "$ROUNDS"); do
    if [ -n "${ratio_r[portcullis:$round]:-}" ] && [ -n "${ratio_r[audited:$round]:-}" ]; then
      costs+=("$(awk -v a="${ratio_r[audited:$round]}" -v b="${ratio_r[portcullis:$round]}" 'BEGIN { printf "%.2f", (1 - a / b) * 100 }')")
    fi
  done
  value=$(median "${costs[@]}")
  records=$(wc -l <"$work/audited/audit/audit.log" 2>/dev/null || echo 0)
  target "audit trail costs < 10% of portcullis req/s" "$(awk -v v="$value" 'BEGIN { print (v < 10) ? "PASS" : "FAIL" }')" \
    "${value}% (records written: $records; rotated files: $(ls "$work/audited/audit" | grep -c 'audit.log.0' || true))"
else
  target "audit trail costs < 10% of portcullis req/s" FAIL "not measured"
fi
if measured portcullis && measured apache; then
  value=$(awk -v a="${rps[portcullis]}" -v b="${rps[apache]}" 'BEGIN { printf "%.2f", a / b }')
  target "portcullis req/s >= 2x apache mod_auth_openidc" "$(awk -v v="$value" 'BEGIN { print (v >= 2) ? "PASS" : "FAIL" }')" "${value}x"
else
  target "portcullis req/s >= 2x apache mod_auth_openidc" FAIL "not measured"
fi
if measured signed-in && measured nginx; then
  value=$(awk -v v="${ratio_of[signed-in]}" 'BEGIN { printf "%.2f", v }')
  target "signed-in req/s >= 0.9x nginx" "$(awk -v v="$value" 'BEGIN { print (v >= 0.9) ? "PASS" : "FAIL" }')" "${value}x"
  value=$(awk -v v="${delta_of[signed-in]}" 'BEGIN { printf "%.3f", v }')
  target "signed-in p99 <= nginx p99 + 1 ms" "$(awk -v v="$value" 'BEGIN { print (v <= 1) ? "PASS" : "FAIL" }')" "${value} ms"
else
  target "signed-in req/s >= 0.9x nginx" FAIL "not measured"
  target "signed-in p99 <= nginx p99 + 1 ms" FAIL "not measured"
fi
if measured signed-in && measured apache-session; then
  value=$(awk -v a="${rps[signed-in]}" -v b="${rps[apache-session]}" 'BEGIN { printf "%.2f", a / b }')
  target "signed-in req/s >= 2x apache mod_auth_openidc with a session" "$(awk -v v="$value" 'BEGIN { print (v >= 2) ? "PASS" : "FAIL" }')" "${value}x"
else
  target "signed-in req/s >= 2x apache mod_auth_openidc with a session" FAIL "not measured"
fi
if [ -n "${idle_kb[portcullis]:-}" ] && [ "${idle_ok[portcullis]:-0}" = 1 ]; then
  target "portcullis RSS with $IDLE_CONNECTIONS idle connections < 200 MB" \
    "$(awk -v kb="${idle_kb[portcullis]}" 'BEGIN { print (kb < 200 * 1024) ? "PASS" : "FAIL" }')" "$(mb "${idle_kb[portcullis]}")"
else
  target "portcullis RSS with $IDLE_CONNECTIONS idle connections < 200 MB" FAIL "not measured${idle_kb[portcullis]:+ (not every connection got a 200)}"
fi

failed=()
for leg in "${legs[@]}"; do
  if [ -n "${failure[$leg]:-}" ]; then failed+=("$leg"); fi
done
for leg in $IDLE_PEERS; do
  case ${idle_result[$leg]:-} in FAILED*) failed+=("idle:$leg") ;; esac
done
echo
if [ "${#failed[@]}" -gt 0 ]; then
  echo "did not run completely: ${failed[*]} (logs: set KEEP_WORKDIR=1 and look in the work directory)"
  exit 1
fi
echo "all legs ran"
