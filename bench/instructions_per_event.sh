#!/usr/bin/env bash
# Instructions per event of the rule engine alone (no Python), counted by valgrind: unlike
# events/s, the count does not move with the machine's load, so it shows what one change did.
#
#   python -m bench.bench_rules --dump DIR      # the benchmark's events and rules
#   (cd native && cargo build --release --example engine)
#   bench/instructions_per_event.sh DIR/events.jsonl DIR/rules.json [N]
#
# Replays the first N (default 20000) events once and three times; the difference over two
# passes, divided by N, is the count per event (start-up and engine construction cancel out).
set -euo pipefail
if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt install valgrind)" >&2; exit 1; }
events=$1 rules=$2 count=${3:-20000}
root=$(cd "$(dirname "$0")/.." && pwd)
engine=${ENGINE:-$root/native/target/release/examples/engine}
[[ -x $engine ]] || { echo "build the harness first: cd native && cargo build --release --example engine" >&2; exit 1; }
sample=$(mktemp)
trap 'rm -f "$sample"' EXIT
head -n "$count" "$events" > "$sample"
n=$(grep -c '' "$sample")
refs() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$engine" "$sample" "$rules" 1000 "$1" 2>&1 >/dev/null | awk '/I *refs/ {gsub(",", "", $NF); print $NF}'
}
one=$(refs 1)
three=$(refs 3)
echo "$(( (three - one) / (2 * n) )) instructions per event ($n events, $rules)"
