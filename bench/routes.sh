#!/usr/bin/env bash
# Routing at scale (issue 18, point 6): a vendor serving many schools writes a route per
# school. Two gateways side by side, loaded in turns with the same Directory POSTs as
# bench/run.sh (wrk -t2 -c64, every event fsync'd and delivered to a file sink):
#   A: 10 per-school routes, then the catch-all;
#   B: 10,000 per-school routes, then the catch-all.
# Each school route is `match: { type: directory.users.add, data.primaryEmail: { suffix:
# "@schoolN.example.org" } }` (SHAPE=domain: `meta.domain: schoolN.example.org`); the load's
# addresses are @example.edu, so every event is tried against every school route a linear
# matcher would walk, and ends at the catch-all. Reports B ÷ A requests/s per round and the
# median (the target is ≥ 0.8). Not a test.
#
#   bench/routes.sh [SECONDS] [ROUNDS] [ROUTES]   (default 8 s, 5 rounds, 10000 routes;
#                                                  needs wrk; SHAPE=suffix|domain)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
rounds=${2:-5}
many=${3:-10000}
shape=${SHAPE:-suffix}
target=${CARGO_TARGET_DIR:-target}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p herald >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
. bench/lib.sh

# DIR N → a routes.yaml with N school routes before the catch-all.
config() {
  mkdir -p "$1"
  {
    sed '/^routes:/,$d' bench/routes.yaml
    echo "routes:"
    for i in $(seq "$2"); do
      if [ "$shape" = domain ]; then
        echo "  - { name: school$i, match: { meta.domain: school$i.example.org }, to: [audit] }"
      else
        echo "  - { name: school$i, match: { type: directory.users.add, data.primaryEmail: { suffix: \"@school$i.example.org\" } }, to: [audit] }"
      fi
    done
    echo "  - { name: all, to: [audit] }"
  } >"$1/routes.yaml"
}
start() { # DIR → starts herald on DIR/routes.yaml (its paths are relative to the file)
  RUST_LOG=warn "$target/release/herald" run -c "$1/routes.yaml" 2>"$1/herald.log" &
}
listen_of() { # DIR → the listen address, once the gateway is up
  for _ in $(seq 300); do [ -f "$1/data/gateway.json" ] && break; sleep 0.1; done
  [ -f "$1/data/gateway.json" ] || { echo "herald did not start in $1:" >&2; cat "$1/herald.log" >&2; exit 1; }
  sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$1/data/gateway.json"
}
rps() { # URL ROUND
  wrk -t2 -c64 -d"${secs}s" -s bench/directory.lua "http://$1" -- "$(($2 * 1000000000))" |
    sed -nE 's/.*rps=([0-9.]+).*/\1/p' | head -1
}

config "$work/few" 10
config "$work/many" "$many"
start "$work/few"
start "$work/many"
few=$(listen_of "$work/few")
lots=$(listen_of "$work/many")
echo "| round | 10 routes req/s | $many routes req/s | ratio |"
echo "|---|---|---|---|"
ratios=()
for round in $(seq "$rounds"); do
  a=$(rps "$few" "$round")
  b=$(rps "$lots" "$round")
  ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }')")
  echo "| $round | $a | $b | ${ratios[-1]} |"
done
echo
echo "median $many routes ÷ 10 routes ($shape): $(median "${ratios[@]}")"
