#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit and integration test,
# the README's demo command, and the checks on shipped configuration. This is the command the README
# gives and the one CI runs (.ci/run). It installs nothing it does not need.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's wall time is printed at the end, so a slow CI run shows where
# its time went.
timings=()
current=
started=$SECONDS
step() {
  finish_step
  current=$*
  started=$SECONDS
  printf '\n==> %s\n' "$current"
}
finish_step() {
  if [ -n "$current" ]; then
    timings+=("$(printf '%5ds  %s' $((SECONDS - started)) "$current")")
    current=
  fi
}
print_timings() {
  finish_step
  echo
  printf '%s\n' "${timings[@]}"
  printf '%5ds  total\n' "$SECONDS"
}
# Printed on failure too.
trap print_timings EXIT

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets -- -D warnings

step "documentation (rustdoc: every intra-doc link resolves, private items included)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --quiet

step "browser test harness (chromium, oidc-provider, playwright-core)"
./tests/e2e/setup.sh

step "unit and integration tests"
# The real-browser sign-in tests must run here, not skip.
PORTCULLIS_E2E=require cargo test --workspace

step "the README's first command, as written (builds the binary and runs the demo)"
./tests/readme.sh

step "deployment files: portcullis check and policy tests on every shipped configuration, manifests"
# Both scripts run `cargo build -p portcullis`, which the README's command
# above has just done: no rebuild.
./tests/deploy/check.sh

step "the profile-guided build's training run (deploy/pgo/train.sh, against the debug binary, 1 s per step)"
# The release build (deploy/pgo/build.sh) trains on this workload; each of
# its steps checks the status it expects, so a change that makes it drive
# other paths than it says fails here rather than quietly training on them.
SECONDS_PER_STEP=1 ./deploy/pgo/train.sh target/debug/portcullis

step "SCIM compliance (scim2-tester against a running server)"
./tests/scim/compliance.sh

step "fuzzing the SCIM filter parser and PATCH engine (bounded)"
# cargo-fuzz needs a nightly toolchain; the deterministic fuzz smoke tests in
# the unit tests above run everywhere, this runs where nightly is installed.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz
  for target in filter patch; do
    # From the hand-written seeds, with the grammar's dictionary; bounded in
    # time per input too (a hang is a failure).
    (cd crates/scim/fuzz && mkdir -p "corpus/$target" &&
      cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -dict=filter.dict -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 -seed=1 2>&1 | tail -n 3)
  done
else
  echo "skipped: no nightly toolchain for cargo-fuzz (the fuzz smoke tests ran with the unit tests)"
fi

echo
echo "all checks passed"
