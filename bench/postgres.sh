#!/usr/bin/env bash
# The postgres queue engine beside the local one, in the same run (issue 16, "Benchmark"):
#   1. herald on `local`: Directory-webhook POSTs with wrk -t2 -c64, every event fsync'd to
#      the journal and delivered to a file sink (as bench/run.sh),
#   2. herald on `postgres`: the same load and sink, the queue in a PostgreSQL server this
#      script starts in a temporary directory (the testkit's launcher), and
#   3. the database's own anchor: pgbench -c64 running a one-row INSERT per transaction
#      against the same server, every transaction committed (synchronous_commit on).
# The numbers that mean anything are the ratios measured side by side: herald-on-postgres
# events/s ÷ pgbench tps (group commit should put it above 1) and ÷ herald-on-local. Loaded in
# turns (local, postgres, pgbench, …); the ratios reported are the medians of the rounds'.
# Not a test.
#
#   bench/postgres.sh [SECONDS] [ROUNDS]   (default 10 s, 3 rounds; needs wrk, the Debian
#                                           postgresql package, and a non-root user)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
target=${CARGO_TARGET_DIR:-target}
pgbin=${PG_BIN:-/usr/lib/postgresql/15/bin}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -x "$pgbin/pgbench" ] || { echo "pgbench is missing at $pgbin (set PG_BIN)" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p herald >&2
  cargo build --release -p herald-testkit --bin herald-test-postgres >&2
fi
launcher=${LAUNCHER:-$target/release/herald-test-postgres}
work=$(mktemp -d)
pgdir=$(mktemp -d)  # its own: the launcher hands it to the postgres user

cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  "$launcher" stop "$pgdir" >/dev/null 2>&1 || true
  rm -rf "$work" "$pgdir"
}
trap cleanup EXIT

. bench/lib.sh
# HERALD_TEST_POSTGRES is `host:port` of the server the launcher started (user herald).
server=$("$launcher" start "$pgdir")
host=${server%:*}
port=${server##*:}
psql() { "$pgbin/psql" -X -q -h "$host" -p "$port" -U herald "$@"; }
psql -d postgres -c "CREATE DATABASE herald_bench" >/dev/null
psql -d postgres -c "CREATE DATABASE pgbench_anchor" >/dev/null
psql -d pgbench_anchor -c "CREATE TABLE rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text NOT NULL, at timestamptz NOT NULL DEFAULT now())" >/dev/null
echo "INSERT INTO rows (v) VALUES ('a directory notification of about this many bytes');" >"$work/insert.sql"

# The runtime info: <queue.path>/gateway.json (postgres: the default path, ./herald-data).
info_of() { for f in "$1/data/gateway.json" "$1/herald-data/gateway.json"; do [ -f "$f" ] && { echo "$f"; return 0; }; done; return 1; }
# Two gateways, each in its own directory: local and postgres.
start() { # DIR QUEUE-YAML → starts herald in DIR, waits for its gateway.json
  mkdir -p "$1"
  sed "s|^queue: .*|queue: $2|" bench/routes.yaml >"$1/routes.yaml"
  RUST_LOG=warn "$target/release/herald" run -c "$1/routes.yaml" 2>"$1/herald.log" &
  for _ in $(seq 200); do info_of "$1" >/dev/null && return; sleep 0.1; done
  echo "herald did not start in $1:" >&2; cat "$1/herald.log" >&2; exit 1
}
start "$work/local" "{ path: ./data }"
start "$work/pg-gw" "{ engine: postgres, url: 'postgres://herald@$host:$port/herald_bench' }"
listen_of() { sed -nE 's/.*"listen": "([^"]+)".*/\1/p' "$(info_of "$1")"; }
local_url="http://$(listen_of "$work/local")"
pg_url="http://$(listen_of "$work/pg-gw")"

wrk_rps() { # URL ROUND → requests/s
  wrk -t2 -c64 -d"${secs}s" -s bench/directory.lua "$1" -- "$(($2 * 1000000000))" |
    sed -nE 's/.*rps=([0-9.]+).*/\1/p' | head -1
}
pgbench_tps() {
  "$pgbin/pgbench" -n -h "$host" -p "$port" -U herald -c64 -j2 -T "$secs" -M prepared \
    -f "$work/insert.sql" pgbench_anchor 2>/dev/null |
    sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -1
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "| round | herald local events/s | herald postgres events/s | pgbench one-row-insert tps | postgres ÷ pgbench | postgres ÷ local |"
echo "|---|---|---|---|---|---|"
r_pgb=()
r_loc=()
for round in $(seq "$rounds"); do
  l=$(wrk_rps "$local_url" "$round")
  p=$(wrk_rps "$pg_url" "$round")
  t=$(pgbench_tps)
  r_pgb+=("$(div "$p" "$t")")
  r_loc+=("$(div "$p" "$l")")
  echo "| $round | $l | $p | $t | ${r_pgb[-1]} | ${r_loc[-1]} |"
done
sleep 2
echo
echo "median herald-on-postgres ÷ pgbench tps: $(median "${r_pgb[@]}")"
echo "median herald-on-postgres ÷ herald-on-local: $(median "${r_loc[@]}")"
echo "delivered to the file sink 2 s after the load: local $(wc -l <"$work/local/events.jsonl"), postgres $(wc -l <"$work/pg-gw/events.jsonl")"
