#!/usr/bin/env bash
# Palisade's whole test suite: the command README.md gives and CI (.ci/run) runs.
#
# 1. installs the system tools the end-to-end tests drive (apt-get, when missing);
# 2. checks formatting, lints and dependency hygiene;
# 3. builds the release binary once, and every end-to-end test reuses it;
# 4. runs all unit, property, integration and end-to-end tests;
# 5. compiles the fuzz targets.
#
# Any missing tool, warning or failing test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

# A clean CI build gains nothing from incremental state, and it is the biggest
# part of a debug target directory; keep the disk footprint small.
export CARGO_INCREMENTAL=0
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
disk() { printf 'disk: target %s, free %s\n' "$(du -sh "$TARGET_DIR" 2>/dev/null | cut -f1)" "$(df -h --output=avail "$PWD" | tail -1 | tr -d ' ')"; }

step "system tools"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "dependency hygiene (licenses, duplicate versions, sources)"
python3 scripts/check-deps.py

step "release build (reused by the end-to-end tests)"
cargo build --locked --release -p palisade
export PALISADE_BIN="$TARGET_DIR/release/palisade"
if [ "${PALISADE_TEST_LEAN_DISK:-0}" = 1 ]; then
    # CI: keep only the binary of the release build; its intermediates (about
    # 700 MB) are not needed by anything below.
    mkdir -p "$TARGET_DIR/e2e-bin"
    cp "$PALISADE_BIN" "$TARGET_DIR/e2e-bin/palisade"
    export PALISADE_BIN="$TARGET_DIR/e2e-bin/palisade"
    rm -rf "$TARGET_DIR/release"
fi
disk

step "clippy (all targets, warnings are errors)"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "tests (unit, property, integration, end-to-end)"
cargo test --locked --workspace
disk

step "fuzz targets compile"
# Same target directory as the workspace: the dependencies' metadata is reused.
CARGO_TARGET_DIR="$TARGET_DIR" cargo check --manifest-path fuzz/Cargo.toml
disk

printf '\n==> all checks passed in %ss\n' "$(( $(date +%s) - start ))"
