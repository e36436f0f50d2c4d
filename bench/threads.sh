#!/usr/bin/env bash
# Where a gateway's CPU goes, thread by thread: user and system CPU µs per request of each
# thread of Herald (its two runtime workers, which answer HTTP, decode and deliver; its
# journal writer) beside the same for the delivering floor of bench/run.sh (its runtime
# workers, writer and delivery thread), under the load of bench/run.sh (Directory webhook
# POSTs, wrk -t2 -c64), loaded in turns. Read from /proc/PID/task/TID/stat before and after
# each load; also the context switches per request. Not a test: it says which thread and
# which side of the system call boundary a gap is on, for a profile to look into.
#
#   bench/threads.sh [SECONDS] [ROUNDS]      (default 5 s, 3 rounds; needs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

cargo build --release --locked -p herald -p herald-bench >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

./target/release/durable-floor 127.0.0.1:0 "$work/floor" append=1 deliver=1 >"$work/floor.addr" 2>"$work/floor.log" &
floor_pid=$!
cp bench/routes.yaml "$work/routes.yaml"
RUST_LOG=warn ./target/release/herald run -c "$work/routes.yaml" 2>"$work/herald.log" &
for _ in $(seq 100); do [ -f "$work/data/gateway.json" ] && [ -s "$work/floor.addr" ] && break; sleep 0.1; done
floor_url="http://$(head -1 "$work/floor.addr")"
herald_url="http://$(sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$work/data/gateway.json")"
herald_pid=$(sed -nE 's/.*"pid": ([0-9]+).*/\1/p' "$work/data/gateway.json")
hz=$(getconf CLK_TCK)

# PID → one line per thread: "tid name user_ticks system_ticks context_switches".
snapshot() {
  for task in /proc/"$1"/task/*; do
    printf '%s %s %s %s\n' "${task##*/}" "$(tr ' ' _ <"$task/comm")" \
      "$(awk '{ print $14, $15 }' "$task/stat")" \
      "$(awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n }' "$task/status")"
  done | sort
}

# NAME PID URL OFFSET → the table rows of one load.
load() {
  local before after out n
  before=$(snapshot "$2")
  out=$(wrk -t2 -c64 -d"${secs}s" -s bench/directory.lua "$3" -- "$4" | grep '^RESULT')
  after=$(snapshot "$2")
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")
  join <(echo "$before") <(echo "$after") | awk -v who="$1" -v n="$n" -v hz="$hz" -v rps="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$out")" '
    { u = ($7 - $3) * 1e6 / hz / n; s = ($8 - $4) * 1e6 / hz / n; c = ($9 - $5) / n
      if (u + s == 0) next
      tu += u; ts += s
      printf "| %s | %s | %.2f | %.2f | %.3f |\n", who, $2, u, s, c }
    END { printf "| %s | **all threads** (%.0f requests/s) | **%.2f** | **%.2f** | |\n", who, rps, tu, ts }'
}

echo "| server | thread | user µs/request | system µs/request | context switches/request |"
echo "|---|---|---|---|---|"
for round in $(seq "$rounds"); do
  load "delivering floor, round $round" "$floor_pid" "$floor_url" "$((round * 2000000000))"
  load "herald, round $round" "$herald_pid" "$herald_url" "$((round * 2000000000 + 1000000000))"
  sleep 2
done
