#!/usr/bin/env bash
# Runs the README's two commands as written (issue: "the README's two
# commands are run by CI as written"):
# - the second must be the command CI is running (tests/run.sh, called by
#   .ci/run), so it is checked, not run again;
# - the first (the demo) is run exactly as the README
#   gives it, plus ports chosen by the kernel instead of 8080/8081/9090
#   (tests never take fixed ports) and a state file in a temporary
#   directory. Its printed curl line must reach the sample app (200), the
#   banner's deprovision command, run the same way, must end that access
#   (403), and Ctrl-C (SIGINT) must stop it with exit 0 within 10 s.
# Every process it starts is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

mapfile -t commands < <(awk '/^```sh$/ { inside = 1; next } /^```$/ { if (inside) exit } inside && !/^#/ && NF' README.md)
[ "${#commands[@]}" -eq 2 ] || fail "README.md: expected two commands in its first sh block, found ${#commands[@]}"
demo=${commands[0]}
suite=${commands[1]}
[ "$suite" = "./tests/run.sh" ] || fail "README.md: the second command is '$suite', not ./tests/run.sh"
grep -q '^exec ./tests/run.sh$' .ci/run || fail ".ci/run does not run ./tests/run.sh"
case $demo in
  "cargo run -p portcullis -- demo") ;;
  *) fail "README.md: the first command '$demo' is not the one this script knows how to check" ;;
esac

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "building and starting: $demo"
# `cargo run` replaces itself with the program on Unix, so $! is the demo.
$demo --listen 127.0.0.1:0 --idp-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --state-file "$tmp/demo.json" >"$tmp/out.log" 2>"$tmp/err.log" &
pid=$!
# Building from a clean checkout takes minutes.
deadline=$((SECONDS + 900))
until grep -q 'Ctrl-C stops the demo' "$tmp/out.log"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$tmp/err.log" >&2
    fail "the demo exited before printing its banner"
  fi
  [ "$SECONDS" -lt "$deadline" ] || fail "no banner within 15 minutes"
  sleep 1
done

curl_line=$(grep -m1 "curl -H 'Authorization: Bearer " "$tmp/out.log" | sed 's/^ *//')
url=${curl_line##* }
token=$(sed -n "s/.*Authorization: Bearer \([^']*\)'.*/\1/p" <<<"$curl_line")
[ -n "$token" ] && [ -n "$url" ] || fail "no curl line in the banner"
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $token" "$url")
[ "$status" = 200 ] || fail "the banner's curl line got $status, not 200"
echo "ok: the banner's curl line reaches the sample app (200)"

$demo deprovision alice --state-file "$tmp/demo.json" >/dev/null 2>"$tmp/deprovision.log" ||
  { cat "$tmp/deprovision.log" >&2; fail "demo deprovision alice failed"; }
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $token" "$url")
[ "$status" = 403 ] || fail "after deprovisioning alice the same curl line got $status, not 403"
echo "ok: after 'demo deprovision alice' the same token is refused (403)"

kill -INT "$pid"
stopped=$SECONDS
code=0
wait "$pid" || code=$?
pid=
[ "$code" -eq 0 ] || fail "the demo exited with $code after Ctrl-C"
[ $((SECONDS - stopped)) -le 10 ] || fail "the demo took $((SECONDS - stopped)) s to stop"
[ ! -e "$tmp/demo.json" ] || fail "the demo left its state file behind"
echo "ok: Ctrl-C stops the demo with exit 0"
