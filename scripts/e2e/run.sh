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
set -euo pipefail

GRPC_PORT=7151
KAFKA_PORT=9092
HOST=127.0.0.1
TOPIC=echo-messages
START_TIMEOUT=30   # seconds for Ferry to accept gRPC connections
STOP_TIMEOUT=15    # seconds for Ferry to exit after SIGTERM
GRPCIO_VERSION=1.85.1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
cd "$REPO_ROOT"

started=$SECONDS
passed=0
failed=0
tmp=""
ferry_pid=""

log() { echo "run.sh: [$((SECONDS - started))s] $*" >&2; }
pass() { passed=$((passed + 1)); echo "ok $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1: $2"; }

dump_ferry_log() {
  if [[ -n "$tmp" && -f "$tmp/ferry.log" ]]; then
    echo "----- ferry log ($tmp/ferry.log) -----" >&2
    cat "$tmp/ferry.log" >&2
    echo "----- end of ferry log -----" >&2
  fi
}

# die NAME WHY: a failure after which nothing else can be checked.
die() {
  fail "$1" "$2"
  dump_ferry_log
  exit 1
}

# True while pid $1 is a live (not zombie) process.
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]]
}

# True if something already listens on $HOST:$1 (binds as Go's listeners do,
# with SO_REUSEADDR, so sockets in TIME_WAIT from an earlier run don't count).
port_in_use() {
  "$PY_SYS" - "$HOST" "$1" <<'EOF'
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError as e:
    sys.exit(0 if e.errno == errno.EADDRINUSE else 2)
finally:
    s.close()
sys.exit(1)
EOF
}

# True once $HOST:$1 accepts a TCP connection.
accepts() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# stop_ferry: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL. Sets ferry_rc.
ferry_rc=""
stop_ferry() {
  local pid=$ferry_pid i t0=$SECONDS
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "ferry (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  ferry_rc=0
  wait "$pid" 2>/dev/null || ferry_rc=$?
  ferry_pid=""
  log "ferry exited with status $ferry_rc about $((SECONDS - t0))s after SIGTERM"
}

finish() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n "$ferry_pid" ]]; then
    stop_ferry
  fi
  [[ -n "$tmp" ]] && rm -rf "$tmp"
  if ((rc != 0 && failed == 0)); then
    fail "run.sh" "aborted with exit status $rc"
  fi
  log "took $((SECONDS - started))s"
  echo "$passed passed, $failed failed"
  if ((failed > 0)); then exit 1; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export DEBIAN_FRONTEND=noninteractive
apt_updated=""
apt_install() {
  if [[ -z "$apt_updated" ]]; then
    apt-get update -qq
    apt_updated=1
  fi
  apt-get install -y -qq "$@" >&2
}

# --- prerequisites ----------------------------------------------------------

command -v go >/dev/null || die "prerequisites" "go is not on PATH"
if ! command -v python3 >/dev/null; then
  log "installing python3"
  apt_install python3 python3-venv
fi
PY_SYS=$(command -v python3)

for port in "$GRPC_PORT" "$KAFKA_PORT"; do
  if port_in_use "$port"; then
    die "ports free" "$HOST:$port is already in use; stop whatever listens there (a Ferry left running?) and retry"
  fi
done

# 1. kcat
if ! command -v kcat >/dev/null; then
  log "installing kcat"
  apt_install kcat
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-e2e.XXXXXX")

# 2. grpcio in a venv, and Python stubs of echo.proto
log "creating a Python venv with grpcio $GRPCIO_VERSION"
if ! "$PY_SYS" -m venv "$tmp/venv" >&2; then
  log "python3 -m venv failed; installing python3-venv"
  rm -rf "$tmp/venv"
  apt_install python3-venv
  "$PY_SYS" -m venv "$tmp/venv" >&2
fi
PY="$tmp/venv/bin/python"
"$PY" -m pip install -q "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION" >&2
mkdir -p "$tmp/stubs"
"$PY" -m grpc_tools.protoc -I examples/echo \
  --python_out="$tmp/stubs" --grpc_python_out="$tmp/stubs" examples/echo/echo.proto

# 3. Build and start Ferry on the embedded broker.
log "building ferry"
go build -o "$tmp/ferry" ./cmd/ferry

for port in "$GRPC_PORT" "$KAFKA_PORT"; do
  if port_in_use "$port"; then
    die "ports free" "$HOST:$port is already in use; stop whatever listens there and retry"
  fi
done
pass "ports free"

log "starting ferry serve -c examples/echo/ferry.yaml"
env -u FERRY_BROKERS "$tmp/ferry" serve -c examples/echo/ferry.yaml \
  </dev/null >"$tmp/ferry.log" 2>&1 &
ferry_pid=$!

deadline=$((SECONDS + START_TIMEOUT))
until accepts "$GRPC_PORT"; do
  if ! alive "$ferry_pid"; then
    rc=0
    wait "$ferry_pid" 2>/dev/null || rc=$?
    ferry_pid=""
    die "ferry starts" "ferry exited with status $rc before $HOST:$GRPC_PORT accepted connections"
  fi
  if ((SECONDS >= deadline)); then
    die "ferry starts" "$HOST:$GRPC_PORT did not accept connections within ${START_TIMEOUT}s"
  fi
  sleep 0.2
done
accepts "$KAFKA_PORT" || die "ferry starts" "gRPC is up but the embedded broker on $HOST:$KAFKA_PORT does not accept connections"
pass "ferry starts"

# 4. The gRPC client.
log "running echo_client.py"
client_rc=0
timeout 120 "$PY" "$SCRIPT_DIR/echo_client.py" --stubs "$tmp/stubs" \
  --target "$HOST:$GRPC_PORT" --counts "$tmp/counts.json" </dev/null || client_rc=$?
if [[ -s "$tmp/counts.json" ]]; then
  read -r c_passed c_failed < <("$PY" -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["passed"], c["failed"])' "$tmp/counts.json")
  passed=$((passed + c_passed))
  failed=$((failed + c_failed))
  if ((client_rc != 0 && c_failed == 0)); then
    fail "echo_client.py" "exited with status $client_rc"
  fi
else
  fail "echo_client.py" "exited with status $client_rc without writing its counts"
fi

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
log "stopping ferry"
stop_ferry
if [[ "$ferry_rc" == 0 ]]; then
  pass "ferry exits 0 on SIGTERM"
else
  fail "ferry exits 0 on SIGTERM" "exit status $ferry_rc"
fi
busy=""
for port in "$GRPC_PORT" "$KAFKA_PORT"; do
  if port_in_use "$port"; then busy+=" $port"; fi
done
if [[ -z "$busy" ]]; then
  pass "ports released"
else
  fail "ports released" "still in use after ferry exited:$busy"
fi
if ((failed > 0)); then
  dump_ferry_log
fi
