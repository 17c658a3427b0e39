#!/usr/bin/env bash
# End-to-end check of the README's ingest example with an outside client:
# the example's ticker serves example.ingest.Ticker on 127.0.0.1:50061,
# Ferry (examples/ingest/ferry.yaml, embedded broker keeping its data in a
# directory) ingests its ticks into topic "ticks", and Debian's kcat reads
# them. Ferry is killed with SIGKILL mid-stream and started again: the tick
# numbers must go on with no gap.
#
#   bash scripts/e2e/ingest.sh
#
# Prints one line per check, "ok NAME" or "FAIL NAME: WHY"; the last line it
# prints is always "N passed, M failed", and it exits non-zero if anything
# failed. Progress and diagnostics go to stderr.
set -euo pipefail

GRPC_PORT=7151
KAFKA_PORT=9092
TICKER_PORT=50061
HOST=127.0.0.1
TOPIC=ticks
START_TIMEOUT=30
STOP_TIMEOUT=15
GRPCIO_VERSION=1.85.1 # lib.sh's venv; unused here

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORTS=("$GRPC_PORT" "$KAFKA_PORT" "$TICKER_PORT")
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

check_prerequisites
need_command kcat
make_tmp ferry-e2e-ingest
ticker_pid=""
stop_ticker() { [[ -n "$ticker_pid" ]] && kill "$ticker_pid" 2>/dev/null && wait "$ticker_pid" 2>/dev/null; ticker_pid=""; }
trap 'rc=$?; stop_ticker; (exit $rc); finish' EXIT

build_ferry
go build -o "$tmp/ticker" ./examples/ingest/ticker
"$tmp/ticker" -addr "$HOST:$TICKER_PORT" -interval 20ms >"$tmp/ticker.log" 2>&1 &
ticker_pid=$!
until accepts "$TICKER_PORT"; do
  alive "$ticker_pid" || die "ticker starts" "$(cat "$tmp/ticker.log")"
  sleep 0.1
done
pass "ticker starts"

# The embedded broker keeps its data here, across Ferry's kill and restart.
export FERRY_DATA_DIR="$tmp/data"

# count: the records of the topic, as kcat reads them to the end.
count() {
  timeout 30 kcat -b "$HOST:$KAFKA_PORT" -C -t "$TOPIC" -e -q -f '%s\n' </dev/null 2>/dev/null | grep -c . || true
}

# wait_records N: waits up to 30 s until the topic holds N records.
wait_records() {
  local want=$1 n=0 deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    n=$(count)
    ((n >= want)) && return 0
    sleep 0.5
  done
  fail "$TOPIC holds $want records" "it holds $n after 30s"
  return 1
}

start_ferry examples/ingest/ferry.yaml "$GRPC_PORT" "$KAFKA_PORT"
pass "ferry starts"
wait_records 100 && pass "ticks reach the topic"

log "killing ferry (pid $ferry_pid) with SIGKILL"
kill -KILL "$ferry_pid"
wait "$ferry_pid" 2>/dev/null || true
ferry_pid=""
before=$(count)
start_ferry examples/ingest/ferry.yaml "$GRPC_PORT" "$KAFKA_PORT"
pass "ferry starts again on its data"
wait_records $((before + 100)) && pass "ticks go on after the restart"
stop_ferry
((ferry_rc == 0)) && pass "ferry stops on SIGTERM" || fail "ferry stops on SIGTERM" "exit status $ferry_rc"

# Every record, read again by a fresh Ferry so kcat has a broker to read
# from: the broker is Ferry's embedded one.
start_ferry examples/ingest/ferry.yaml "$GRPC_PORT" "$KAFKA_PORT"
timeout 30 kcat -b "$HOST:$KAFKA_PORT" -C -t "$TOPIC" -e -q -f '%k\t%s\n' </dev/null >"$tmp/records.txt" 2>"$tmp/kcat.err" ||
  fail "kcat reads $TOPIC" "$(tr '\n' ' ' <"$tmp/kcat.err")"
stop_ferry

check=$(python3 - "$tmp/records.txt" <<'EOF'
import json, sys
seqs, bad = [], 0
for line in open(sys.argv[1]):
    key, _, value = line.rstrip("\n").partition("\t")
    try:
        tick = json.loads(value)
    except ValueError:
        bad += 1
        continue
    if key != tick.get("symbol"):
        bad += 1
    seqs.append(int(tick["seq"]))
if not seqs:
    print("FAIL records: none read"); sys.exit()
missing = sorted(set(range(min(seqs), max(seqs) + 1)) - set(seqs))
dups = len(seqs) - len(set(seqs))
print(("ok" if bad == 0 else "FAIL") + " records are JSON ticks keyed by symbol" + ("" if bad == 0 else f": {bad} are not"))
print(("ok" if not missing else "FAIL") + f" ticks {min(seqs)} to {max(seqs)} with no gap across the kill" + ("" if not missing else f": missing {missing[:20]}"))
print(f"ok {len(seqs)} records, {dups} written twice")
EOF
)
echo "$check"
passed=$((passed + $(grep -c '^ok ' <<<"$check" || true)))
failed=$((failed + $(grep -c '^FAIL ' <<<"$check" || true)))
