#!/usr/bin/env bash
# Herald's ingest benchmark (issue #4): Directory-webhook POSTs with wrk -t2 -c64, against
#   1. the baseline: a bare hyper server answering 200 (bench/src/bare_server.rs),
#   2. the durable floor: the least any durable gateway must do per request, parse the
#      notification and group-commit it with one write + fdatasync, no routing and no
#      delivery (bench/src/durable_floor.rs), and
#   3. the delivering floor: the same appending to a growing log (as a log of segments does),
#      writing every committed batch to a file, and committing an outcome record per event
#      with the next batch: the least a gateway shaped like Herald's journal does per event
#      (durable-floor append=1 deliver=1), and
#   4. the gateway, every answered event committed (fsync'd) to the journal and delivered
#      to a file sink,
# in the same run, on the same machine. It prints them and their ratios to the baseline, the
# gateway's memory, and the journal's group-commit batch size. Not a test: numbers on a shared
# machine are noisy, so only ratios measured side by side mean anything. The servers run side
# by side and are loaded in turns (bare, floor, herald, bare, …) so that a slow spell of the
# machine weighs on all; the ratios reported are the medians of the rounds'.
#
#   bench/run.sh [SECONDS] [ROUNDS]   (default 10 s, 3 rounds; needs wrk and GNU time:
#                                      apt-get install wrk time)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is missing: apt-get install time" >&2; exit 1; }

cargo build --release --locked -p herald -p herald-bench >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

. bench/lib.sh
hz=$(getconf CLK_TCK)

# URL PID ROUND → the RESULT line, plus cpu_server=… cpu_wrk=… (seconds of CPU during the
# load). Each round numbers its messages from its own range, so none is a duplicate of an
# earlier round's (a duplicate is acknowledged without being stored or delivered).
load() {
  local before after wrk_out
  before=$(ticks "$2")
  wrk_out=$(mktemp)
  /usr/bin/time -f 'WRKCPU %U %S' -o "$wrk_out" \
    wrk -t2 -c64 -d"${secs}s" -s bench/directory.lua "$1" -- "$(($3 * 1000000000))" | grep '^RESULT' | tr -d '\n'
  after=$(ticks "$2")
  awk -v b="$before" -v a="$after" -v hz="$hz" '/^WRKCPU/ { printf " cpu_server=%.2f cpu_wrk=%.2f\n", (a - b) / hz, $2 + $3 }' "$wrk_out"
  rm -f "$wrk_out"
}
ratio() { awk -v a="$(field rps "$1")" -v b="$(field rps "$2")" 'BEGIN { printf "%.3f", a / b }'; }
field() { sed -E "s/.*$1=([0-9.]+).*/\1/" <<<"$2"; }

# The baseline, the floor and the gateway, all started before the first round.
./target/release/bare-server 127.0.0.1:0 >"$work/bare.addr" &
bare_pid=$!
./target/release/durable-floor 127.0.0.1:0 "$work/floor" >"$work/floor.addr" 2>"$work/floor.log" &
floor_pid=$!
./target/release/durable-floor 127.0.0.1:0 "$work/floor2" append=1 deliver=1 >"$work/floor2.addr" 2>"$work/floor2.log" &
floor2_pid=$!
cp bench/routes.yaml "$work/routes.yaml"
RUST_LOG=warn ./target/release/herald run -c "$work/routes.yaml" 2>"$work/herald.log" &
for _ in $(seq 100); do [ -f "$work/data/gateway.json" ] && [ -s "$work/bare.addr" ] && [ -s "$work/floor.addr" ] && [ -s "$work/floor2.addr" ] && break; sleep 0.1; done
bare_url="http://$(head -1 "$work/bare.addr")"
floor_url="http://$(head -1 "$work/floor.addr")"
floor2_url="http://$(head -1 "$work/floor2.addr")"
listen=$(sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$work/data/gateway.json")
admin=$(sed -nE 's/.*"admin": "([^"]+)".*/\1/p' "$work/data/gateway.json")
pid=$(sed -nE 's/.*"pid": ([0-9]+).*/\1/p' "$work/data/gateway.json")

# µs of CPU per request: the server's own, and the load generator's (on the same cores).
per_request() { awk -v c="$(field "$1" "$2")" -v n="$(field requests "$2")" 'BEGIN { printf "%.1f", 1e6 * c / n }'; }
row() {
  echo "| $1 | $(field rps "$2") | $(field p50_ms "$2") | $(field p99_ms "$2") | $(field non2xx "$2") | $(per_request cpu_server "$2") | $(per_request cpu_wrk "$2") |"
}

echo "| round | server | requests/s | p50 ms | p99 ms | non-2xx | server CPU µs/request | wrk CPU µs/request |"
echo "|---|---|---|---|---|---|---|---|"
ratios=()
floor_ratios=()
floor2_ratios=()
herald_floor_ratios=()
herald_floor2_ratios=()
cpu_floor_ratios=()
cpu_floor2_ratios=()
acknowledged=0
for round in $(seq "$rounds"); do
  bare=$(load "$bare_url" "$bare_pid" "$round")
  floor=$(load "$floor_url" "$floor_pid" "$round")
  floor2=$(load "$floor2_url" "$floor2_pid" "$round")
  herald=$(load "http://$listen" "$pid" "$round")
  acknowledged=$((acknowledged + $(field requests "$herald")))
  row "$round | bare hyper server (baseline)" "$bare"
  row "$round | durable floor (parse + group commit only)" "$floor"
  row "$round | delivering floor (+ growing log, file, outcomes)" "$floor2"
  row "$round | herald, journal + file sink" "$herald"
  floor_ratios+=("$(ratio "$floor" "$bare")")
  floor2_ratios+=("$(ratio "$floor2" "$bare")")
  herald_floor_ratios+=("$(ratio "$herald" "$floor")")
  herald_floor2_ratios+=("$(ratio "$herald" "$floor2")")
  cpu_floor_ratios+=("$(awk -v a="$(per_request cpu_server "$herald")" -v b="$(per_request cpu_server "$floor")" 'BEGIN { printf "%.2f", a / b }')")
  cpu_floor2_ratios+=("$(awk -v a="$(per_request cpu_server "$herald")" -v b="$(per_request cpu_server "$floor2")" 'BEGIN { printf "%.2f", a / b }')")
  ratios+=("$(ratio "$herald" "$bare")")
  # Let the gateway deliver its backlog before the baseline's next turn.
  sleep 2
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
metrics=$(curl -s "http://$admin/metrics")
batch_sum=$(awk '/^herald_journal_batch_size_sum/ {print $2}' <<<"$metrics")
batch_count=$(awk '/^herald_journal_batch_size_count/ {print $2}' <<<"$metrics")
commit_sum=$(awk '/^herald_journal_commit_seconds_sum/ {print $2}' <<<"$metrics")
delivered=$(wc -l <"$work/events.jsonl")

cat <<REPORT

ratio durable floor / baseline per round: ${floor_ratios[*]}; median $(median "${floor_ratios[@]}")
ratio delivering floor / baseline per round: ${floor2_ratios[*]}; median $(median "${floor2_ratios[@]}")
ratio herald / baseline per round: ${ratios[*]}; median $(median "${ratios[@]}")
ratio herald / durable floor per round: ${herald_floor_ratios[*]}; median $(median "${herald_floor_ratios[@]}")
ratio herald / delivering floor per round: ${herald_floor2_ratios[*]}; median $(median "${herald_floor2_ratios[@]}")
server CPU per request, herald / durable floor: ${cpu_floor_ratios[*]}; median $(median "${cpu_floor_ratios[@]}")
server CPU per request, herald / delivering floor: ${cpu_floor2_ratios[*]}; median $(median "${cpu_floor2_ratios[@]}")
herald memory: RSS $((rss / 1024)) MiB at the end, peak $((hwm / 1024)) MiB
journal group commit: $(awk -v s="$batch_sum" -v c="$batch_count" 'BEGIN { printf "%.1f", s / c }') commands per commit on average over $batch_count commits (each new event is one; a batch of outcomes one), $(awk -v s="$commit_sum" -v c="$batch_count" 'BEGIN { printf "%.2f", 1000 * s / c }') ms per commit
durable floor: $(grep -v ' 1 commits' "$work/floor.log" | tail -1 | sed 's/^durable-floor: //') (last 5 s)
delivering floor: $(grep -v ' 1 commits' "$work/floor2.log" | tail -1 | sed 's/^durable-floor: //') (last 5 s)
delivered to the file sink 2 s after the load: $delivered of $acknowledged acknowledged
REPORT
