#!/usr/bin/env bash
# Instructions per request of herald builds, counted by valgrind's callgrind: repeatable to
# about 0.5% on a machine whose speed moves by tens of percent between runs, so it can tell
# apart two builds that bench/ab.sh cannot. It counts user-space instructions only (not the
# kernel's work, not cache misses), so it is a second opinion beside bench/ab.sh, not a
# replacement. Each build runs under callgrind with the load of bench/run.sh (Directory
# webhook POSTs to bench/routes.yaml, from wrk -t1), warmed up, then counted over SECONDS.
#
#   bench/instructions.sh [SECONDS] [CONNECTIONS] HERALD...      (default 10 s, 16)
#   e.g. bench/instructions.sh 10 16 /tmp/herald-old target/release/herald
#
# Needs valgrind (apt-get install valgrind) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10} conns=${2:-16}
shift 2 || true
[ $# -ge 1 ] || { sed -n '2,11p' "$0" >&2; exit 1; }
for tool in valgrind callgrind_control wrk; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install valgrind wrk)" >&2; exit 1; }
done

one() {
  local bin work listen out n ir
  bin=$(realpath "$1")
  work=$(mktemp -d)
  cp bench/routes.yaml "$work/routes.yaml"
  (cd "$work" && RUST_LOG=warn exec valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$bin" run -c routes.yaml 2>"$work/valgrind.log") &
  local started=$!
  for _ in $(seq 600); do [ -f "$work/data/gateway.json" ] && break; sleep 0.1; done
  listen=$(sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$work/data/gateway.json")
  sleep 2
  wrk -t1 -c"$conns" -d2s -s bench/directory.lua "http://$listen" -- 7000000000 >/dev/null
  callgrind_control -z "$started" >/dev/null
  out=$(wrk -t1 -c"$conns" -d"${secs}s" -s bench/directory.lua "http://$listen" -- 8000000000 | grep '^RESULT')
  callgrind_control -d "$started" >/dev/null
  for _ in $(seq 50); do ls "$work"/cg.out.* >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")
  # Each dump states its count twice (`summary:` and `totals:`): one of them, per dump.
  ir=$(grep -hE '^totals:' "$work"/cg.out.* | awk '{ s += $2 } END { printf "%.0f", s }')
  kill -INT "$started" 2>/dev/null || true
  wait "$started" 2>/dev/null || true
  rm -rf "$work"
  echo "$n $ir"
}

for bin in "$@"; do
  read -r n ir < <(one "$bin")
  awk -v b="$bin" -v n="$n" -v ir="$ir" 'BEGIN { printf "%s: %d requests, %.0f instructions per request\n", b, n, ir / n }'
done
