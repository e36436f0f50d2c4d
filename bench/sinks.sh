#!/usr/bin/env bash
# Sink throughput (issue #5), each beside a baseline measured in the same run:
#   kafka    the Kafka sink vs a plain rdkafka producer, same records, same tansu broker
#   webhook  the webhook sink vs plain reqwest POSTs, same loopback receiver
#   slack    the Slack sink unpaced (with and without packing) and with its defaults
# The code is sinks/benches/throughput.rs: a `[[bench]]` of herald-sinks (harness = false), so
# it builds against the workspace's own dependencies and lock file instead of a second copy
# of rdkafka, reqwest and lettre; it needs tansu (scripts/test.sh installs it).
#
#   bench/sinks.sh [kafka|webhook|slack ...]     HERALD_BENCH_RECORDS=50000 per Kafka round
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --locked -p herald-sinks --bench throughput -- "$@"
