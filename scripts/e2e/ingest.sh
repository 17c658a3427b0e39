#!/usr/bin/env bash
# End-to-end check of the README's ingest example on a real Kafka broker
# with an outside client: the example's ticker serves example.ingest.Ticker
# on 127.0.0.1:50061, Ferry (examples/ingest/ferry.yaml with FERRY_BROKERS
# set) ingests its ticks into topic "ticks", and Debian's kcat reads them.
# Ferry is killed with SIGKILL mid-stream, started again, and stopped with
# SIGTERM mid-stream and started again: the tick numbers must go on with no
# gap, and only the records in flight at the kill may be written twice.
#
#   E2E_BROKERS=127.0.0.1:19092 bash scripts/e2e/ingest.sh
#
# (The embedded broker's restored data is not readable by kcat, so the
# check needs a real broker: scripts/kafka.sh starts one.) Prints one line
# per check, "ok NAME" or "FAIL NAME: WHY"; the last line it prints is
# always "N passed, M failed", and it exits non-zero if anything failed.
# Progress and diagnostics go to stderr.
set -euo pipefail

GRPC_PORT=7151
TICKER_PORT=50061
HOST=127.0.0.1
TOPIC=ticks
START_TIMEOUT=30
STOP_TIMEOUT=15
GRPCIO_VERSION=1.85.1 # lib.sh's venv; unused here
MAX_IN_FLIGHT=1000    # sources[].max_in_flight's default: what a kill may write twice

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORTS=("$GRPC_PORT" "$TICKER_PORT")
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"
: "${E2E_BROKERS:?set E2E_BROKERS to a Kafka broker, e.g. the one of scripts/kafka.sh}"
export E2E_BROKERS

check_prerequisites
need_command kcat
make_tmp ferry-e2e-ingest
ticker_pid=""
stop_ticker() {
  if [[ -n "$ticker_pid" ]]; then
    kill "$ticker_pid" 2>/dev/null || true
    wait "$ticker_pid" 2>/dev/null || true
  fi
  ticker_pid=""
}
trap 'rc=$?; stop_ticker; (exit $rc); finish' EXIT

build_ferry
go build -o "$tmp/ticker" ./examples/ingest/ticker
"$tmp/ticker" -addr "$HOST:$TICKER_PORT" -interval 5ms >"$tmp/ticker.log" 2>&1 &
ticker_pid=$!
until accepts "$TICKER_PORT"; do
  alive "$ticker_pid" || die "ticker starts" "$(cat "$tmp/ticker.log")"
  sleep 0.1
done
pass "ticker starts"

# count: the records of the topic (one partition, as Ferry's producer
# creates it): the offset of the last one, plus one.
count() {
  local last
  last=$(timeout 10 kcat -b "$E2E_BROKERS" -C -t "$TOPIC" -o -1 -c 1 -e -q -f '%o\n' </dev/null 2>/dev/null || true)
  echo $((${last:--1} + 1))
}

# grow N: waits up to 60 s until the topic holds N more records than now.
grow() {
  local from want n deadline=$((SECONDS + 60))
  from=$(count)
  want=$((from + $1))
  while ((SECONDS < deadline)); do
    n=$(count)
    ((n >= want)) && return 0
    sleep 0.5
  done
  fail "$TOPIC grows by $1" "it went from $from to $n in 60s"
  return 1
}

start_ferry examples/ingest/ferry.yaml "$GRPC_PORT"
pass "ferry starts"
grow 500 && pass "ticks reach the topic"

log "killing ferry (pid $ferry_pid) with SIGKILL"
kill -KILL "$ferry_pid"
wait "$ferry_pid" 2>/dev/null || true
ferry_pid=""
start_ferry examples/ingest/ferry.yaml "$GRPC_PORT"
pass "ferry starts again after SIGKILL"
# The killed instance holds the source until its group session ends.
grow 500 && pass "ticks go on after the kill"

stop_ferry
((ferry_rc == 0)) && pass "ferry stops on SIGTERM" || fail "ferry stops on SIGTERM" "exit status $ferry_rc"
start_ferry examples/ingest/ferry.yaml "$GRPC_PORT"
grow 500 && pass "ticks go on after the stop"
stop_ticker
stop_ferry

timeout 60 kcat -b "$E2E_BROKERS" -C -t "$TOPIC" -e -q -f '%k\t%s\n' </dev/null >"$tmp/records.txt" 2>"$tmp/kcat.err" ||
  fail "kcat reads $TOPIC" "$(tr '\n' ' ' <"$tmp/kcat.err")"

check=$(python3 - "$tmp/records.txt" "$MAX_IN_FLIGHT" <<'PY'
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
bound = int(sys.argv[2])
print(("ok" if bad == 0 else "FAIL") + " records are JSON ticks keyed by symbol" + ("" if bad == 0 else f": {bad} are not"))
print(("ok" if not missing else "FAIL") + f" ticks {min(seqs)} to {max(seqs)} with no gap across the kill and the stop" + ("" if not missing else f": missing {missing[:20]}"))
print(("ok" if dups <= bound else "FAIL") + f" {len(seqs)} records, {dups} written twice (at most the {bound} in flight at the kill)")
PY
)
echo "$check"
passed=$((passed + $(grep -c '^ok ' <<<"$check" || true)))
failed=$((failed + $(grep -c '^FAIL ' <<<"$check" || true)))
