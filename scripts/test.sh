#!/usr/bin/env bash
# Runs every check and test of the project. Installs what is missing on a fresh machine, so a
# clean clone needs nothing else. Used by CI (.ci/run) and by developers alike.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

# cargo-nextest runs the tests (one process per test, clear output).
if ! need cargo-nextest; then
  cargo install cargo-nextest --locked
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
