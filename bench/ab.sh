#!/usr/bin/env bash
# Compares two herald builds on this noisy machine: alternating runs (A, B, A, B, …), each on
# a fresh journal with the same load as bench/run.sh (Directory webhook POSTs, wrk -t2 -c64),
# then the median requests/s and server CPU µs per request of each. Pairs measured moments
# apart see the same machine, so a difference that holds in most pairs is the builds'.
#
#   bench/ab.sh HERALD_A HERALD_B [PAIRS] [SECONDS]     (default 7 pairs of 6 s)
#   e.g. build the old commit, cp target/release/herald /tmp/herald-old, build the new one:
#        bench/ab.sh /tmp/herald-old target/release/herald
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0" >&2; exit 1; }
a=$1 b=$2 pairs=${3:-7} secs=${4:-6}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

# BINARY OFFSET → "requests/s cpu_µs_per_request"
one() {
  rm -rf "$work/data" "$work/events.jsonl"
  cp bench/routes.yaml "$work/routes.yaml"
  RUST_LOG=warn "$1" run -c "$work/routes.yaml" 2>"$work/herald.log" &
  local started=$!
  for _ in $(seq 100); do [ -f "$work/data/gateway.json" ] && break; sleep 0.1; done
  local listen pid before after out
  listen=$(sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$work/data/gateway.json")
  pid=$(sed -nE 's/.*"pid": ([0-9]+).*/\1/p' "$work/data/gateway.json")
  sleep 0.3
  before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  out=$(wrk -t2 -c64 -d"${secs}s" -s bench/directory.lua "http://$listen" -- "$2" | grep '^RESULT')
  after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  kill "$started"; wait "$started" 2>/dev/null || true
  awk -v o="$out" -v c=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
    match(o, /requests=[0-9]+/); n = substr(o, RSTART + 9, RLENGTH - 9)
    match(o, /rps=[0-9.]+/); r = substr(o, RSTART + 4, RLENGTH - 4)
    printf "%.0f %.1f\n", r, 1e6 * c / hz / n }'
}
. bench/lib.sh

ra=() ca=() rb=() cb=()
for i in $(seq "$pairs"); do
  read -r r c < <(one "$a" "$((2 * i * 1000000000))"); ra+=("$r"); ca+=("$c")
  read -r r c < <(one "$b" "$((2 * i * 1000000000 + 1000000000))"); rb+=("$r"); cb+=("$c")
  echo "pair $i: A ${ra[-1]} req/s ${ca[-1]} µs/request | B ${rb[-1]} req/s ${cb[-1]} µs/request"
done
echo "median A ($a): $(median "${ra[@]}") req/s, $(median "${ca[@]}") µs/request"
echo "median B ($b): $(median "${rb[@]}") req/s, $(median "${cb[@]}") µs/request"
