#!/usr/bin/env bash
# How much work per request can a server add to the bare hyper baseline and still reach a
# given share of its throughput, with wrk on the same two cores? For each WORK_US, the bare
# server burns that much CPU per request (bare-server ADDR WORK_US); it is loaded in turns with
# the plain baseline, and the median ratio of the rounds is printed, with the server's CPU per
# request. Read the target of issue #4 (0.7 of the baseline) off this curve: the whole gateway
# (decode, durable commit, delivery) must fit in the extra CPU where the ratio is still 0.7.
#
#   bench/budget.sh [SECONDS] [ROUNDS] [WORK_US...]   (default 6 s, 3 rounds, 0 2 5 10 20 40)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-6}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
works=("$@")
[ ${#works[@]} -gt 0 ] || works=(0 2 5 10 20 40)
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -p herald-bench >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
. bench/lib.sh
hz=$(getconf CLK_TCK)
start() { # WORK_US → sets pid and url
  ./target/release/bare-server 127.0.0.1:0 "$1" >"$work/addr.$1" &
  pid=$!
  for _ in $(seq 50); do [ -s "$work/addr.$1" ] && break; sleep 0.1; done
  url="http://$(head -1 "$work/addr.$1")"
}
load() { # PID URL → "RPS CPU_US_PER_REQUEST"
  local before after out
  before=$(ticks "$1")
  out=$(wrk -t2 -c64 -d"${secs}s" -s bench/directory.lua "$2" | grep '^RESULT')
  after=$(ticks "$1")
  local n rps
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")
  rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$out")
  awk -v r="$rps" -v n="$n" -v t=$((after - before)) -v hz="$hz" 'BEGIN { printf "%.0f %.1f", r, 1e6 * t / hz / n }'
}
start 0
base_pid=$pid base_url=$url
echo "| extra CPU per request (µs) | requests/s | server CPU µs/request | ratio to the bare server (median of $rounds) |"
echo "|---|---|---|---|"
for w in "${works[@]}"; do
  start "$w"
  ratios=() rps=0 cpu=0
  for _ in $(seq "$rounds"); do
    read -r b _ <<<"$(load "$base_pid" "$base_url")"
    read -r rps cpu <<<"$(load "$pid" "$url")"
    ratios+=("$(awk -v a="$rps" -v b="$b" 'BEGIN { printf "%.3f", a / b }')")
  done
  kill "$pid"
  echo "| $w | $rps | $cpu | $(median "${ratios[@]}") (${ratios[*]}) |"
done
