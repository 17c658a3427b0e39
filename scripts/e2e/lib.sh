# shellcheck shell=bash
# What the end-to-end scripts in this directory (run.sh, kafka_api.sh) share:
# check counters and their output, the cleanup trap, prerequisites, a venv
# with grpcio, and building, starting and stopping Ferry.
#
# A script sources it, after `set -euo pipefail` and after setting
#
#   HOST            the address Ferry listens on
#   PORTS           an array of every port Ferry listens on
#   START_TIMEOUT   seconds for Ferry to accept connections
#   STOP_TIMEOUT    seconds for Ferry to exit after SIGTERM
#   GRPCIO_VERSION  grpcio and grpcio-tools for the venv
#
# as
#
#   SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   source "$SCRIPT_DIR/lib.sh"
#
# Sourcing it changes to the repository root (REPO_ROOT) and installs the
# EXIT, INT and TERM traps: from then on the script prints one line per check,
# "ok NAME" (pass) or "FAIL NAME: WHY" (fail), and on exit, whatever the
# cause, stops Ferry, removes $tmp and prints "N passed, M failed" as its last
# line; it exits non-zero if anything failed. Progress and diagnostics (log)
# go to stderr.

E2E_NAME="${0##*/}"   # run.sh, kafka_api.sh: prefixes the log lines
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
cd "$REPO_ROOT"

started=$SECONDS
passed=0
failed=0
tmp=""
ferry_pid=""

log() { echo "$E2E_NAME: [$((SECONDS - started))s] $*" >&2; }
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

# ports_free_or_die [HINT]: fails "ports free" and exits if any of PORTS is in
# use; HINT, if given, goes into the message.
ports_free_or_die() {
  local port
  for port in "${PORTS[@]}"; do
    if port_in_use "$port"; then
      die "ports free" "$HOST:$port is already in use; stop whatever listens there ${1:+$1 }and retry"
    fi
  done
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
    fail "$E2E_NAME" "aborted with exit status $rc"
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

# need_command CMD [PACKAGE...]: installs the Debian PACKAGEs (default: CMD)
# if CMD is not on PATH.
need_command() {
  local cmd=$1
  shift
  if ! command -v "$cmd" >/dev/null; then
    log "installing $cmd"
    apt_install "${@:-$cmd}"
  fi
}

# check_prerequisites: go on PATH, python3 (installed if missing; PY_SYS is
# its path), and none of PORTS in use.
check_prerequisites() {
  command -v go >/dev/null || die "prerequisites" "go is not on PATH"
  need_command python3 python3 python3-venv
  PY_SYS=$(command -v python3)
  ports_free_or_die "(a Ferry left running?)"
}

# make_tmp NAME: a fresh directory $tmp, removed on exit.
make_tmp() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
}

# make_venv: a venv in $tmp/venv with grpcio and grpcio-tools GRPCIO_VERSION;
# PY is its python.
make_venv() {
  log "creating a Python venv with grpcio $GRPCIO_VERSION"
  if ! "$PY_SYS" -m venv "$tmp/venv" >&2; then
    log "python3 -m venv failed; installing python3-venv"
    rm -rf "$tmp/venv"
    apt_install python3-venv
    "$PY_SYS" -m venv "$tmp/venv" >&2
  fi
  PY="$tmp/venv/bin/python"
  "$PY" -m pip install -q "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION" >&2
}

# build_ferry: builds $tmp/ferry, then checks "ports free" again (the build
# takes a while).
build_ferry() {
  log "building ferry"
  go build -o "$tmp/ferry" ./cmd/ferry
  ports_free_or_die
  pass "ports free"
}

# start_ferry CONFIG PORT...: runs `ferry serve -c CONFIG` on the embedded
# broker (FERRY_BROKERS unset), or on E2E_BROKERS when a script sets it,
# logging to $tmp/ferry.log, and waits up to
# START_TIMEOUT for every PORT to accept connections; fails "ferry starts"
# and exits if Ferry exits or the time runs out first.
start_ferry() {
  local config=$1 port where="" both="" deadline rc
  shift
  for port in "$@"; do
    where+="${where:+ and }$HOST:$port"
  done
  if (($# == 2)); then both="both "; elif (($# > 2)); then both="all "; fi

  log "starting ferry serve -c $config"
  if [[ -n "${E2E_BROKERS:-}" ]]; then
    FERRY_BROKERS="$E2E_BROKERS" "$tmp/ferry" serve -c "$config" </dev/null >>"$tmp/ferry.log" 2>&1 &
  else
    env -u FERRY_BROKERS "$tmp/ferry" serve -c "$config" \
      </dev/null >"$tmp/ferry.log" 2>&1 &
  fi
  ferry_pid=$!

  deadline=$((SECONDS + START_TIMEOUT))
  for port in "$@"; do
    until accepts "$port"; do
      if ! alive "$ferry_pid"; then
        rc=0
        wait "$ferry_pid" 2>/dev/null || rc=$?
        ferry_pid=""
        die "ferry starts" "ferry exited with status $rc before $where accepted connections"
      fi
      if ((SECONDS >= deadline)); then
        die "ferry starts" "$where did not ${both}accept connections within ${START_TIMEOUT}s"
      fi
      sleep 0.2
    done
  done
}

# add_counts NAME RC FILE: adds the passes and failures a client (NAME, which
# exited with status RC) wrote to FILE as {"passed": N, "failed": M}; fails
# NAME if the client exited non-zero without a failure, or wrote no FILE.
add_counts() {
  local name=$1 rc=$2 file=$3 c_passed c_failed
  if [[ -s "$file" ]]; then
    read -r c_passed c_failed < <("$PY" -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["passed"], c["failed"])' "$file")
    passed=$((passed + c_passed))
    failed=$((failed + c_failed))
    if ((rc != 0 && c_failed == 0)); then
      fail "$name" "exited with status $rc"
    fi
  else
    fail "$name" "exited with status $rc without writing its counts"
  fi
}

# check_ferry_stops: stops Ferry and checks that it exits 0 on SIGTERM and
# releases all of PORTS; dumps Ferry's log if any check of the run failed.
check_ferry_stops() {
  local port busy=""
  log "stopping ferry"
  stop_ferry
  if [[ "$ferry_rc" == 0 ]]; then
    pass "ferry exits 0 on SIGTERM"
  else
    fail "ferry exits 0 on SIGTERM" "exit status $ferry_rc"
  fi
  for port in "${PORTS[@]}"; do
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
}
