#!/usr/bin/env bash
# Memory and restart of the local engine (issue 18, point 5): the baseline the append-only log
# is compared with. Each part runs its own gateway on a fresh journal, loaded like
# bench/run.sh (Directory-webhook POSTs, wrk -t2 -c64, bench/directory.lua):
#   1. idle: VmRSS and VmHWM of a gateway just started (bench/routes.yaml's: a file sink);
#   2. EVENTS events accepted and delivered to the file sink: how long it took, RSS, peak RSS,
#      the journal's size;
#   3. an outage of OUTAGE seconds of the only sink (a webhook sink whose receiver, the bare
#      hyper server of bench/src/bare_server.rs on 127.0.0.1, is stopped, so connections are
#      refused) under full load: RSS at the start and every 10 s, the peak, the backlog and
#      the journal's size; then the receiver comes back and the time to the first delivery
#      and to an empty backlog (the circuit breaker's wait included), and RSS after;
#   3b. the floor under that: the durable floor keeping the least duplicate window there is
#      (`durable-floor append=1 window=1`, 4 bytes per event) under the same load for as
#      long: its RSS growth per event, beside the gateway's, and for the gateway's backlog;
#   3c. the same load for as long with no outage (the file sink, which keeps up): what the
#      load grows by itself, so that part 3 less this is what the outage costs;
#   4. restart with EVENTS pending deliveries: load with the sink down until EVENTS are
#      pending, SIGTERM, bring the sink back (a one-file Python receiver that notes its first
#      request), start the gateway again and time gateway.json, /readyz 200 (the admin address
#      is in <queue.path>/gateway.json) and the first delivery the receiver gets; then the
#      same after kill -9 with the backlog still there (redb recovers its file at open).
# It prints a markdown table. Not a test: the times depend on this shared machine.
#
#   bench/memory.sh [EVENTS] [OUTAGE_SECONDS]   (default 1000000 and 60; needs wrk, curl,
#                                                python3: apt-get install wrk curl python3)
#   CARGO_TARGET_DIR picks the build (default target/); SKIP_BUILD=1 uses it as it is;
#   TMPDIR is where the journals go (a few GiB at 1,000,000 events).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
outage=${2:-60}
target=${CARGO_TARGET_DIR:-target}
[[ $events =~ ^[0-9]+$ && $events -gt 0 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 1; }
[[ $outage =~ ^[0-9]+$ && $outage -ge 10 ]] || { echo "OUTAGE_SECONDS must be a number ≥ 10" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is missing: apt-get install curl" >&2; exit 1; }
python=$(command -v python3) || { echo "python3 is missing: apt-get install python3" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --locked -p herald -p herald-bench >&2
fi
herald=$target/release/herald
bare=$target/release/bare-server
floor=$target/release/durable-floor
for b in "$herald" "$bare" "$floor"; do
  [ -x "$b" ] || { echo "$b is missing: build it (cargo build --release -p herald -p herald-bench)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/herald-memory.XXXXXX")
cleanup() {
  local j
  for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "memory.sh: $*" >&2; }
die() { echo "memory.sh: $*" >&2; exit 1; }
now() { echo "$EPOCHREALTIME"; }
# Seconds from $1 to $2, two decimals.
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# KIB_BEFORE KIB_AFTER EVENTS → bytes of RSS growth per event
per_event() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }'; }
# VmRSS or VmHWM (kB) of process $2.
vm() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status"; }
disk() { du -sk "$1" | awk '{ printf "%.0f", $1 / 1024 }'; }
thousands() { printf "%'d" "$1" 2>/dev/null || echo "$1"; }

# --- the gateway ------------------------------------------------------------------------
# A config in $1/routes.yaml with bench/routes.yaml's source and queue and the sink given.
config() { # DIR SINK-YAML
  mkdir -p "$1"
  cat >"$1/routes.yaml" <<YAML
server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }
queue: { path: ./data }
sources:
  directory: { type: directory_webhook, path: /webhook/directory, channel_tokens: [bench-token] }
sinks:
  $2
routes:
  - name: all
    to: [$(sed -E 's/:.*//' <<<"$2")]
YAML
}
# Starts herald on $1/routes.yaml; sets gw (its pid), started (when), listen, admin, and
# json_at (when gateway.json appeared). A stale gateway.json is removed first.
start_gateway() { # DIR
  rm -f "$1/data/gateway.json"
  started=$(now)
  RUST_LOG=warn "$herald" run -c "$1/routes.yaml" 2>>"$1/herald.log" &
  gw=$!
  until [ -s "$1/data/gateway.json" ] && grep -q '"admin"' "$1/data/gateway.json"; do
    kill -0 "$gw" 2>/dev/null || { cat "$1/herald.log" >&2; die "herald exited at start ($1)"; }
    sleep 0.01
  done
  json_at=$(now)
  listen=$(sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$1/data/gateway.json")
  admin=$(sed -nE 's/.*"admin": "([^"]+)".*/\1/p' "$1/data/gateway.json")
}
stop_gateway() { # → sets stop_secs
  local t
  t=$(now)
  kill -TERM "$gw"
  wait "$gw" || true
  stop_secs=$(since "$t" "$(now)")
}
metrics() { curl -sf "http://$admin/metrics" || true; }
# Pending deliveries of sink $1 and deliveries made to it (from /metrics; 0 before the first).
depth() { metrics | awk -v s="sink=\"$1\"" '/^herald_queue_depth\{/ && index($0, s) { v = $NF } END { printf "%.0f", v + 0 }'; }
delivered() { metrics | awk -v s="sink=\"$1\"" '/^herald_deliveries_total\{/ && index($0, s) && /outcome="delivered"/ { v += $NF } END { printf "%.0f", v + 0 }'; }

# --- load ---------------------------------------------------------------------------------
# Starts wrk in the background against the gateway for $1 seconds, numbering from $2; sets wrk.
start_load() {
  wrk -t2 -c64 -d"${1}s" -s bench/directory.lua "http://$listen" -- "$2" >"$work/wrk.out" 2>&1 &
  wrk=$!
}
# The requests the last load made (its RESULT line).
wrk_requests() { sed -nE 's/^RESULT requests=([0-9]+).*/\1/p' "$work/wrk.out"; }
stop_load() { kill "$wrk" 2>/dev/null || true; wait "$wrk" 2>/dev/null || true; }
# Waits until sink $1 has $2 events accepted (pending + delivered), polling /metrics.
until_accepted() {
  local n last=0
  while :; do
    n=$(($(depth "$1") + $(delivered "$1")))
    [ "$n" -ge "$2" ] && { accepted=$n; return; }
    kill -0 "$wrk" 2>/dev/null || { cat "$work/wrk.out" >&2; die "wrk stopped at $n of $2 events"; }
    if [ $((n / 100000)) -gt "$last" ]; then last=$((n / 100000)); log "$n of $2 accepted"; fi
    sleep 0.2
  done
}

# --- receivers ----------------------------------------------------------------------------
# The bare hyper server (answers 200) on $1 (an address; :0 picks one); sets rx and rx_addr.
start_bare() {
  : >"$work/bare.addr"
  "$bare" "$1" >"$work/bare.addr" 2>"$work/bare.log" &
  rx=$!
  for _ in $(seq 500); do [ -s "$work/bare.addr" ] && break; kill -0 "$rx" 2>/dev/null || break; sleep 0.01; done
  [ -s "$work/bare.addr" ] || { cat "$work/bare.log" >&2; die "the receiver did not start on $1"; }
  rx_addr=$(head -1 "$work/bare.addr")
}
stop_receiver() { [ -z "${rx:-}" ] || { kill "$rx" 2>/dev/null || true; wait "$rx" 2>/dev/null || true; }; rx=; }
# A receiver answering 200 that writes the time of its first request to $work/first.
cat >"$work/first.py" <<'PY'
import http.server, os, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    first = None
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if Handler.first is None:
            Handler.first = time.time()
            with open(sys.argv[2] + ".tmp", "w") as f:
                f.write("%.6f\n" % Handler.first)
            os.rename(sys.argv[2] + ".tmp", sys.argv[2])
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
host, port = sys.argv[1].rsplit(":", 1)
server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
print("ready", flush=True)
server.serve_forever()
PY
start_first() { # ADDRESS
  rm -f "$work/first"
  : >"$work/first.out"
  "$python" "$work/first.py" "$1" "$work/first" >"$work/first.out" 2>&1 &
  rx=$!
  for _ in $(seq 500); do grep -q ready "$work/first.out" && return; kill -0 "$rx" 2>/dev/null || break; sleep 0.01; done
  cat "$work/first.out" >&2
  die "the Python receiver did not start on $1"
}

rows=()
row() { rows+=("| $1 | $2 |"); }

# --- 1. idle, 2. EVENTS events to the file sink --------------------------------------------
dir=$work/file
config "$dir" "audit: { type: file, path: ./events.jsonl }"
start_gateway "$dir"
sleep 2
row "1. idle gateway, 2 s after start: RSS / peak" "$(mib "$(vm VmRSS "$gw")") / $(mib "$(vm VmHWM "$gw")") MiB"
log "part 2: $events events to the file sink"
t0=$(now)
start_load 36000 1000000000
until_accepted audit "$events"
t_acc=$(now)
stop_load
until [ "$(depth audit)" -eq 0 ]; do sleep 0.2; done
t_del=$(now)
n_acc=$(($(depth audit) + $(delivered audit)))
sleep 2
row "2. $(thousands "$n_acc") events accepted / all delivered to the file sink after" \
  "$(since "$t0" "$t_acc") s ($(awk -v n="$n_acc" -v s="$(since "$t0" "$t_acc")" 'BEGIN { printf "%.0f", n / s }') events/s) / $(since "$t0" "$t_del") s"
row "2. after them (delivered, 2 s later): RSS / peak" "$(mib "$(vm VmRSS "$gw")") / $(mib "$(vm VmHWM "$gw")") MiB"
row "2. journal on disk (events kept for queue.retention, 24h)" "$(disk "$dir/data") MiB"
stop_gateway
rm -rf "$dir"

# --- 3. a sink outage under load ----------------------------------------------------------
log "part 3: a ${outage} s outage of the only sink under load"
start_bare 127.0.0.1:0
hook=$rx_addr
stop_receiver # the outage begins: nothing listens on $hook
dir=$work/outage
config "$dir" "hook: { type: webhook, url: \"http://$hook/hook\" }"
start_gateway "$dir"
sleep 2
samples=("$(mib "$(vm VmRSS "$gw")")")
t0=$(now)
start_load "$outage" 2000000000
for s in $(seq 10 10 "$outage"); do
  sleep "$(awk -v t0="$t0" -v now="$(now)" -v s="$s" 'BEGIN { d = t0 + s - now; print (d > 0 ? d : 0) }')"
  samples+=("$(mib "$(vm VmRSS "$gw")")")
done
wait "$wrk" || true
backlog=$(depth hook)
row "3. outage: RSS at the start, then every 10 s (MiB)" "$(IFS=/; echo "${samples[*]}" | sed 's|/| / |g')"
row "3. outage: peak RSS (VmHWM) / backlog at its end / journal on disk" \
  "$(mib "$(vm VmHWM "$gw")") MiB / $(thousands "$backlog") pending / $(disk "$dir/data") MiB"
start_bare "$hook" # the sink recovers
t_up=$(now)
before=$(delivered hook)
until [ "$(delivered hook)" -gt "$before" ]; do
  [ "$(since "$t_up" "$(now)" | cut -d. -f1)" -lt 600 ] || die "no delivery within 600 s of the sink's return"
  sleep 0.05
done
t_first=$(now)
last=$(now)
drain_samples=()
until [ "$(depth hook)" -eq 0 ]; do
  [ "$(since "$t_up" "$(now)" | cut -d. -f1)" -lt 7200 ] || die "the backlog did not drain within 2 h ($(depth hook) pending)"
  sleep 0.5
  if [ "$(since "$last" "$(now)" | cut -d. -f1)" -ge 10 ]; then
    last=$(now)
    drain_samples+=("$(mib "$(vm VmRSS "$gw")")")
    log "draining: $(depth hook) pending"
  fi
done
t_drained=$(now)
dead=$(metrics | awk '/^herald_deliveries_total\{/ && /sink="hook"/ && /outcome="dead"/ { v += $NF } END { printf "%.0f", v + 0 }')
row "3. sink back: first delivery / backlog drained after (deliveries made, dead letters)" \
  "$(since "$t_up" "$t_first") s / $(since "$t_up" "$t_drained") s ($(awk -v n="$backlog" -v s="$(since "$t_up" "$t_drained")" 'BEGIN { printf "%.0f", n / s }') deliveries/s; $(thousands "$(delivered hook)") made, $(thousands "$dead") dead)"
row "3. drain: RSS every 10 s (MiB)" "$(IFS=/; echo "${drain_samples[*]:-none}" | sed 's|/| / |g')"
sleep 2
row "3. after the drain (2 s later): RSS / peak" "$(mib "$(vm VmRSS "$gw")") / $(mib "$(vm VmHWM "$gw")") MiB"
stop_gateway
stop_receiver
rm -rf "$dir"

# --- 3b. the floor under an outage's memory ----------------------------------------------
# The durable floor keeping the least duplicate window there is (durable-floor append=1
# window=1: a 32-bit fingerprint per event and nothing else, bench/src/durable_floor.rs),
# loaded the same way for as long: how much any gateway with the issue's duplicate window
# in memory grows per event, and so for as many events as the gateway's backlog above.
log "part 3b: the floor under an outage's memory"
: >"$work/floor.addr"
"$floor" 127.0.0.1:0 "$work/floor" append=1 window=1 >"$work/floor.addr" 2>"$work/floor.log" &
floor_pid=$!
until [ -s "$work/floor.addr" ]; do
  kill -0 "$floor_pid" 2>/dev/null || { cat "$work/floor.log" >&2; die "durable-floor exited at start"; }
  sleep 0.05
done
listen=$(head -1 "$work/floor.addr")
sleep 1
floor_start=$(vm VmRSS "$floor_pid")
start_load "$outage" 2500000000
wait "$wrk" || true
floor_end=$(vm VmRSS "$floor_pid")
floor_events=$(wrk_requests)
kill "$floor_pid"
wait "$floor_pid" 2>/dev/null || true
rm -rf "$work/floor"
floor_per_event=$(per_event "$floor_start" "$floor_end" "$floor_events")
herald_per_event=$(awk -v a="${samples[0]}" -v b="${samples[-1]}" -v n="$backlog" 'BEGIN { printf "%.1f", (b - a) * 1048576 / n }')
row "3b. floor (a 4-byte duplicate window, nothing else): RSS at the start / after ${outage} s, events" \
  "$(mib "$floor_start") / $(mib "$floor_end") MiB, $(thousands "$floor_events")"
row "3b. RSS growth per event: floor / gateway (its outage above)" "$floor_per_event / $herald_per_event bytes"
row "3b. floor's growth for the gateway's backlog of $(thousands "$backlog") events" \
  "$(awk -v p="$floor_per_event" -v n="$backlog" 'BEGIN { printf "%.1f", p * n / 1048576 }') MiB (the gateway's: $(awk -v a="${samples[0]}" -v b="${samples[-1]}" 'BEGIN { printf "%.1f", b - a }') MiB)"

# --- 3c. the same load with no outage ---------------------------------------------------------
# The gateway again, its only sink the file sink (which keeps up), under the same load for as
# long: what the load grows by itself (the duplicate window of every event, which the
# retention keeps whether or not the sink is up, and the buffers of a loaded gateway). The
# outage's own cost is part 3's growth less this.
log "part 3c: the same load for ${outage} s with a sink that keeps up"
dir=$work/no-outage
config "$dir" "audit: { type: file, path: ./events.jsonl }"
start_gateway "$dir"
sleep 2
up_start=$(vm VmRSS "$gw")
start_load "$outage" 2750000000
wait "$wrk" || true
up_end=$(vm VmRSS "$gw")
up_events=$(wrk_requests)
row "3c. no outage (file sink): RSS at the start / after ${outage} s / peak, events, pending at the end" \
  "$(mib "$up_start") / $(mib "$up_end") / $(mib "$(vm VmHWM "$gw")") MiB, $(thousands "$up_events"), $(thousands "$(depth audit)")"
row "3c. RSS growth per event: no outage / outage (part 3)" \
  "$(per_event "$up_start" "$up_end" "$up_events") / $herald_per_event bytes"
stop_gateway
rm -rf "$dir"

# --- 4. restart with EVENTS pending ---------------------------------------------------------
log "part 4: restart with $events pending deliveries"
dir=$work/restart
config "$dir" "hook: { type: webhook, url: \"http://$hook/hook\" }"
start_gateway "$dir" # the sink is down: nothing listens on $hook
t0=$(now)
start_load 36000 3000000000
until_accepted hook "$events"
stop_load
sleep 1
pending=$(depth hook)
row "4. $(thousands "$pending") pending (sink down), loaded in $(since "$t0" "$(now)") s: RSS / peak / journal" \
  "$(mib "$(vm VmRSS "$gw")") / $(mib "$(vm VmHWM "$gw")") MiB / $(disk "$dir/data") MiB"
stop_gateway
row "4. SIGTERM to exit" "$stop_secs s"
# Starts the gateway again with the sink back and times it; $1 names how it was stopped.
restart() {
  local ready_rss
  stop_receiver
  start_first "$hook" # the sink is back before the gateway starts
  start_gateway "$dir"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$admin/readyz")" = 200 ]; do
    kill -0 "$gw" 2>/dev/null || die "herald exited after the restart"
    sleep 0.01
  done
  t_ready=$(now)
  ready_rss=$(vm VmRSS "$gw")
  for _ in $(seq 6000); do [ -s "$work/first" ] && break; sleep 0.01; done
  [ -s "$work/first" ] || { tail -5 "$dir/herald.log" >&2; die "no delivery within 60 s of the restart after $1 ($(depth hook) pending)"; }
  row "4. restart after $1: gateway.json / /readyz 200 / first delivery, after exec" \
    "$(since "$started" "$json_at") s / $(since "$started" "$t_ready") s / $(since "$started" "$(cat "$work/first")") s"
  sleep 2
  row "4. after $1: RSS at /readyz, 2 s later / peak (delivering to a Python receiver)" \
    "$(mib "$ready_rss"), $(mib "$(vm VmRSS "$gw")") / $(mib "$(vm VmHWM "$gw")") MiB"
}
restart SIGTERM
# The same backlog (less what those 2 s delivered) after a crash: redb has to recover its file.
left=$(depth hook)
if [ "$left" -gt 0 ]; then
  kill -KILL "$gw"
  wait "$gw" 2>/dev/null || true
  restart "kill -9 ($(thousands "$left") pending)"
else
  row "4. restart after kill -9" "skipped: the backlog was delivered before (use more EVENTS)"
fi
stop_gateway
stop_receiver

echo
echo "Herald memory and restart, local engine (the append-only log), $(date -u +%F), $(thousands "$events") events, ${outage} s outage"
echo
echo "| measure | result |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
