#!/usr/bin/env bash
# End-to-end latency (issue 18): Directory notifications at a fixed RATE (open loop) through
# the gateway, journal, and a webhook sink to a loopback receiver, against the baseline of the
# same sender posting straight to the same receiver, in the same run. bench/src/e2e_latency.rs
# does the sending and the receiving and reports percentiles of (arrival − due time). Not a
# test: the numbers depend on this shared machine; rounds alternate baseline and gateway.
#
#   bench/latency.sh [RATE] [SECONDS] [ROUNDS]   (default 2000 events/s, 20 s, 3 rounds)
#   CARGO_TARGET_DIR picks the build (default target/); SKIP_BUILD=1 uses it as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-2000}
secs=${2:-20}
rounds=${3:-3}
target=${CARGO_TARGET_DIR:-target}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p herald -p herald-bench >&2
bin="$target/release"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

# MODE → the RESULT line; MODE is "direct" (the baseline) or "herald".
one() {
  rm -rf "$work/run" && mkdir -p "$work/run"
  "$bin/e2e-latency" "$work/run/receiver" "$work/run/target" "$rate" "$secs" >"$work/run/out" &
  local sender=$!
  for _ in $(seq 100); do [ -s "$work/run/receiver" ] && break; sleep 0.05; done
  local receiver herald=""
  receiver=$(cat "$work/run/receiver")
  if [ "$1" = direct ]; then
    echo "$receiver/direct" >"$work/run/target"
  else
    cat >"$work/run/routes.yaml" <<YAML
server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }
queue: { path: ./data }
sources:
  directory: { type: directory_webhook, path: /webhook/directory, channel_tokens: [bench-token] }
sinks:
  hook: { type: webhook, url: "http://$receiver/hook" }
routes:
  - name: all
    to: [hook]
YAML
    RUST_LOG=warn "$bin/herald" run -c "$work/run/routes.yaml" 2>"$work/run/herald.log" &
    herald=$!
    for _ in $(seq 100); do [ -f "$work/run/data/gateway.json" ] && break; sleep 0.1; done
    local listen
    listen=$(sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$work/run/data/gateway.json")
    echo "$listen/webhook/directory" >"$work/run/target"
  fi
  wait "$sender"
  [ -z "$herald" ] || { kill "$herald"; wait "$herald" 2>/dev/null || true; }
  grep '^RESULT' "$work/run/out"
}
field() { sed -E "s/.*$1=([0-9.a-z]+).*/\1/" <<<"$2"; }

echo "| round | path | sent | received | p50 ms | p99 ms | p99.9 ms | max ms |"
echo "|---|---|---|---|---|---|---|---|"
p99s=()
for round in $(seq "$rounds"); do
  for mode in direct herald; do
    r=$(one "$mode")
    name="sender → receiver (baseline)"
    [ "$mode" = herald ] && { name="sender → herald → webhook sink → receiver"; p99s+=("$(field p99_ms "$r")"); }
    echo "| $round | $name | $(field sent "$r") | $(field received "$r") | $(field p50_ms "$r") | $(field p99_ms "$r") | $(field p999_ms "$r") | $(field max_ms "$r") |"
  done
done
echo
echo "herald p99 per round (ms): ${p99s[*]}; median $(printf '%s\n' "${p99s[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
