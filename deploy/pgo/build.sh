#!/usr/bin/env bash
# Profile-guided release build of `portcullis`: build an instrumented
# binary, run it through a representative workload (deploy/pgo/train.sh),
# and build again with what the compiler learned. The result executes about
# a quarter fewer instructions per proxied request than the plain release
# build (docs/benchmarks.md); behaviour is the same, only code layout,
# inlining and branch order change.
#
#   deploy/pgo/build.sh            # prints the binary's path last
#
# Environment: PGO_DIR (target/pgo: build directories, profiles, result).
# Needs the toolchain's `llvm-profdata` (rustup's llvm-tools component,
# added here if missing); the training run installs what it needs (wrk,
# h2load, curl, openssl, python3) with apt-get. The two builds and the
# training take about four times a plain release build's time (15 minutes
# on two cores).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${PGO_DIR:-$repo/target/pgo}
say() { printf '==> pgo: %s\n' "$*" >&2; }
die() {
  printf 'pgo: %s\n' "$*" >&2
  exit 1
}

# Tools --------------------------------------------------------------------
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$sysroot/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  say "adding the toolchain's llvm-tools component (for llvm-profdata)"
  rustup component add llvm-tools >&2 || die "cannot add llvm-tools: install it, or build without PGO (cargo build --release)"
fi
[ -x "$profdata" ] || die "no llvm-profdata at $profdata"

# Instrumented build, training, optimized build --------------------------------
# Each build has its own target directory: the two differ in RUSTFLAGS, so
# sharing one would rebuild every crate each time.
profiles=$dir/profiles
say "instrumented build"
(cd "$repo" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$profiles" CARGO_TARGET_DIR=$dir/instrumented \
  cargo build --release --locked -p portcullis >&2)
# Build scripts and proc macros ran instrumented too: only the training's
# profiles count.
rm -rf "$profiles"
mkdir -p "$profiles"

say "training run (deploy/pgo/train.sh)"
LLVM_PROFILE_FILE="$profiles/portcullis-%p-%m.profraw" \
  "$repo/deploy/pgo/train.sh" "$dir/instrumented/release/portcullis" >&2
"$profdata" merge -o "$dir/merged.profdata" "$profiles"/*.profraw
# Cargo does not watch the profile's content, only RUSTFLAGS: naming the
# profile by its hash makes a new profile rebuild what it should.
profile=$dir/portcullis-$(sha256sum "$dir/merged.profdata" | cut -c1-16).profdata
rm -f "$dir"/portcullis-*.profdata
mv "$dir/merged.profdata" "$profile"

say "optimized build"
(cd "$repo" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile" CARGO_TARGET_DIR=$dir/optimized \
  cargo build --release --locked -p portcullis >&2)
install -m 0755 "$dir/optimized/release/portcullis" "$dir/portcullis"
say "built $dir/portcullis"
echo "$dir/portcullis"
