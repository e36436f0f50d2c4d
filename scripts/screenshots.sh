#!/usr/bin/env bash
# Takes the README's pictures of the console (docs/screenshots/*.png): the same browser harness
# as the tests (tests/common/browser.rs, headless Chromium through chromedriver) against the
# shipped routes.yaml, run by the ignored test `screenshots` of tests/console_browser.rs.
# Tests never write tracked files; this script does, on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
export HERALD_SCREENSHOTS="$PWD/docs/screenshots"
export HERALD_LISTEN=127.0.0.1:0 HERALD_ADMIN_LISTEN=127.0.0.1:0
HERALD_ADMIN_TOKEN="screenshot-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export HERALD_ADMIN_TOKEN
cargo nextest run --locked --test console_browser --run-ignored ignored-only screenshots
echo "wrote $(ls "$HERALD_SCREENSHOTS"/*.png | wc -l) screenshots to docs/screenshots/"
