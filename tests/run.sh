#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit and integration test,
# and the checks on shipped configuration. This is the command the README
# gives and the one CI runs (.ci/run). It installs nothing it does not need.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets -- -D warnings

step "unit and integration tests"
cargo test --workspace

step "shipped configuration passes portcullis check"
for config in deploy/examples/*.toml; do
  cargo run -q -p portcullis -- check --config "$config"
done

step "policy tests"
cargo run -q -p portcullis -- policy test --config deploy/examples/portcullis.toml

step "SCIM compliance (scim2-tester against a running server)"
./tests/scim/compliance.sh

echo
echo "all checks passed"
