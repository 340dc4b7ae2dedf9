#!/usr/bin/env bash
# Instructions per event of the rule engine alone (no Python), counted by valgrind: unlike
# events/s, the count does not move with the machine's load, so it shows what one change did.
#
#   python -m bench.bench_rules --dump DIR      # the benchmark's events and rules
#   (cd native && cargo build --release --example engine)
#   bench/instructions_per_event.sh DIR/events.jsonl DIR/rules.json [N]
#
# Replays the first N (default 20000) events once and three times, and an empty file once and
# three times: the harness builds a fresh engine for every pass, so the empty runs' difference
# (two engine constructions, rules compiled) is taken off the sample's (two constructions and
# two passes over the events); what is left, divided by 2N, is the engine's count per event.
set -euo pipefail
if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt install valgrind)" >&2; exit 1; }
events=$1 rules=$2 count=${3:-20000}
root=$(cd "$(dirname "$0")/.." && pwd)
engine=${ENGINE:-$root/native/target/release/examples/engine}
[[ -x $engine ]] || { echo "build the harness first: cd native && cargo build --release --example engine" >&2; exit 1; }
sample=$(mktemp) empty=$(mktemp)
trap 'rm -f "$sample" "$empty"' EXIT
head -n "$count" "$events" > "$sample"
n=$(grep -c '' "$sample")
refs() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$engine" "$1" "$rules" 1000 "$2" 2>&1 >/dev/null | awk '/I *refs/ {gsub(",", "", $NF); print $NF}'
}
events_part=$(( $(refs "$sample" 3) - $(refs "$sample" 1) ))
engines_part=$(( $(refs "$empty" 3) - $(refs "$empty" 1) ))
echo "$(( (events_part - engines_part) / (2 * n) )) instructions per event ($n events, $rules)"
