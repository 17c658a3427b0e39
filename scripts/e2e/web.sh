#!/usr/bin/env bash
# End-to-end check of examples/web with outside clients: curl calls Ferry's
# gRPC port with the Connect protocol, REST and gRPC-Web; a real headless
# Chromium (Debian's chromium, driven over its DevTools protocol by
# scripts/e2e/webpage) opens examples/web/index.html from another origin,
# which calls UnaryEcho and shows the reply, then receives the fan-out
# records Debian's kcat writes while the page is open.
#
#   bash scripts/e2e/web.sh
#
# Installs what it needs (chromium, kcat, curl from Debian if missing),
# builds Ferry and the plain gRPC echo server, serves
# examples/web/ferry.yaml on the embedded broker (gRPC 127.0.0.1:7151,
# Kafka 127.0.0.1:9092), runs the checks and stops everything.
#
# Prints one line per check, "ok NAME" or "FAIL NAME: WHY"; the last line
# is always "N passed, M failed", and it exits non-zero if anything failed.
set -euo pipefail

GRPC_PORT=7151
KAFKA_PORT=9092
ECHO_PORT=50051
HOST=127.0.0.1
START_TIMEOUT=30
STOP_TIMEOUT=15

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORTS=("$GRPC_PORT" "$KAFKA_PORT" "$ECHO_PORT")
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

echo_pid=""
stop_echo() {
  if [[ -n "$echo_pid" ]]; then
    kill "$echo_pid" 2>/dev/null || true
    wait "$echo_pid" 2>/dev/null || true
    echo_pid=""
  fi
}
trap 'rc=$?; stop_echo; (exit $rc); finish' EXIT

check_prerequisites
need_command chromium
need_command kcat
need_command curl
make_tmp ferry-e2e-web

build_ferry
go build -o "$tmp/echoserver" ./examples/proxy/echoserver
go build -o "$tmp/webpage" ./scripts/e2e/webpage
"$tmp/echoserver" -addr "$HOST:$ECHO_PORT" >"$tmp/echo.log" 2>&1 &
echo_pid=$!
start_ferry examples/web/ferry.yaml "$GRPC_PORT" "$KAFKA_PORT"
pass "ferry starts"

# check NAME WANT CMD...: runs CMD and passes NAME when its output holds WANT.
check() {
  local name=$1 want=$2 out
  shift 2
  out=$("$@" 2>&1) || true
  if [[ "$out" == *"$want"* ]]; then pass "$name"; else fail "$name" "got: $out"; fi
}

base="http://$HOST:$GRPC_PORT"
check "curl: Connect unary (JSON)" '"message":"hi from curl"' \
  curl -sS --max-time 20 -H 'Content-Type: application/json' -d '{"message":"hi from curl"}' \
  "$base/grpc.examples.echo.Echo/UnaryEcho"
check "curl: REST POST /v1/echo" '"message":"rest post"' \
  curl -sS --max-time 20 -H 'Content-Type: application/json' -d '{"message":"rest post"}' "$base/v1/echo"
check "curl: REST GET /v1/echo/{message}" '"message":"rest-get"' \
  curl -sS --max-time 20 "$base/v1/echo/rest-get"
# gRPC-Web's text format: the enveloped EchoRequest{message: "web!"} in
# base64; the answer, base64 padded per flush, decoded 4 characters at a time.
grpc_web_text() {
  printf '\0\0\0\0\6\n\4web!' | base64 |
    curl -sS --max-time 20 -H 'Content-Type: application/grpc-web-text' --data-binary @- "$base/grpc.examples.echo.Echo/UnaryEcho" |
    "$PY_SYS" -c 'import base64, sys
s = sys.stdin.read().strip()
out = b"".join(base64.b64decode(s[i:i + 4]) for i in range(0, len(s), 4))
print(out.decode("latin-1").lower())'
}
check "curl: gRPC-Web (text)" 'grpc-status: 0' grpc_web_text
check "curl: Connect error for an unknown method" '"code":"not_found"' \
  curl -sS --max-time 20 -H 'Content-Type: application/json' -d '{}' "$base/grpc.examples.echo.Echo/Nope"
check "kcat: the request topic holds JSON" '{"message":"hi from curl"}' \
  kcat -b "$HOST:$KAFKA_PORT" -t web-echo -C -e -q -o beginning

log "driving examples/web/index.html in headless Chromium"
if "$tmp/webpage" -chromium "$(command -v chromium)" -ferry "$base" -page examples/web \
  -produce "kcat -b $HOST:$KAFKA_PORT -t messages -P" >"$tmp/webpage.out" 2>"$tmp/webpage.err"; then :; fi
while read -r status rest; do
  case "$status" in
    ok) pass "chromium: $rest" ;;
    FAIL) fail "chromium" "$rest"; cat "$tmp/webpage.err" >&2 ;;
  esac
done <"$tmp/webpage.out"
grep -q '^ok page receives' "$tmp/webpage.out" || fail "chromium" "the driver stopped early: $(tail -3 "$tmp/webpage.err")"

stop_echo
check_ferry_stops
