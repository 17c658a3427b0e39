#!/usr/bin/env bash
# End-to-end check of the README's echo example with outside clients: Python's
# grpcio (scripts/e2e/echo_client.py) calls Ferry over gRPC, and Debian's kcat
# reads the records Ferry wrote to Kafka (scripts/e2e/check_records.py).
#
#   bash scripts/e2e/run.sh
#
# Installs what it needs (kcat from Debian if missing; grpcio and grpcio-tools
# in a throwaway venv), builds Ferry, serves examples/echo/ferry.yaml on the
# embedded broker (gRPC 127.0.0.1:7151, Kafka 127.0.0.1:9092), runs the
# checks, stops Ferry with SIGTERM and removes everything it made.
#
# Prints one line per check, "ok NAME" or "FAIL NAME: WHY"; the last line it
# prints is always "N passed, M failed" for the whole run, and it exits
# non-zero if anything failed. Progress and diagnostics go to stderr.
#
# What it shares with kafka_api.sh (counters, cleanup, prerequisites, building,
# starting and stopping Ferry) is in scripts/e2e/lib.sh.
set -euo pipefail

GRPC_PORT=7151
KAFKA_PORT=9092
HOST=127.0.0.1
TOPIC=echo-messages
START_TIMEOUT=30   # seconds for Ferry to accept gRPC connections
STOP_TIMEOUT=15    # seconds for Ferry to exit after SIGTERM
GRPCIO_VERSION=1.85.1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORTS=("$GRPC_PORT" "$KAFKA_PORT")
# Sets up the counters and the exit trap, and changes to the repository root.
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

# --- prerequisites ----------------------------------------------------------

check_prerequisites

# 1. kcat
need_command kcat

make_tmp ferry-e2e

# 2. grpcio in a venv, and Python stubs of echo.proto
make_venv
mkdir -p "$tmp/stubs"
"$PY" -m grpc_tools.protoc -I examples/echo \
  --python_out="$tmp/stubs" --grpc_python_out="$tmp/stubs" examples/echo/echo.proto

# 3. Build and start Ferry on the embedded broker.
build_ferry
start_ferry examples/echo/ferry.yaml "$GRPC_PORT"
accepts "$KAFKA_PORT" || die "ferry starts" "gRPC is up but the embedded broker on $HOST:$KAFKA_PORT does not accept connections"
pass "ferry starts"

# 4. The gRPC client.
log "running echo_client.py"
client_rc=0
timeout 120 "$PY" "$SCRIPT_DIR/echo_client.py" --stubs "$tmp/stubs" \
  --target "$HOST:$GRPC_PORT" --counts "$tmp/counts.json" </dev/null || client_rc=$?
add_counts echo_client.py "$client_rc" "$tmp/counts.json"

# 5. The records, as kcat reads them.
if [[ -s "$tmp/counts.json" ]]; then
  log "reading $TOPIC with kcat"
  kcat_rc=0
  timeout 30 kcat -b "$HOST:$KAFKA_PORT" -C -t "$TOPIC" -e -q -f '%k|%h|%S\n' \
    </dev/null >"$tmp/records.txt" 2>"$tmp/kcat.err" || kcat_rc=$?
  if ((kcat_rc != 0)); then
    fail "kcat reads $TOPIC" "kcat exited with status $kcat_rc: $(tr '\n' ' ' <"$tmp/kcat.err")"
  else
    pass "kcat reads $TOPIC"
    check_out=$("$PY" "$SCRIPT_DIR/check_records.py" "$tmp/records.txt" "$tmp/counts.json") || true
    [[ -n "$check_out" ]] && echo "$check_out"
    n_ok=$(grep -c '^ok ' <<<"$check_out" || true)
    n_fail=$(grep -c '^FAIL ' <<<"$check_out" || true)
    passed=$((passed + n_ok))
    failed=$((failed + n_fail))
    if ((n_ok + n_fail == 0)); then
      fail "kcat checks" "check_records.py printed no result"
    fi
  fi
else
  fail "kcat checks" "skipped: the gRPC client left no counts"
fi

# 6. Stop Ferry: SIGTERM, bounded wait, exit status 0, ports released.
check_ferry_stops
