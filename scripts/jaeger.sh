#!/usr/bin/env bash
# Builds (once) and runs Jaeger, a real OTLP receiver with a query API, for
# Ferry's tracing test against it (TestTracingJaeger in internal/app).
#
#   bash scripts/jaeger.sh start   # prints the OTLP gRPC address and the query URL
#   bash scripts/jaeger.sh stop
#
# Jaeger is built from its Go module (github.com/jaegertracing/jaeger,
# FERRY_JAEGER_VERSION, default v1.75.0) into FERRY_JAEGER_DIR (default
# ~/.cache/ferry-jaeger): a few minutes the first time, nothing after. It
# keeps traces in memory, with OTLP gRPC on 127.0.0.1:4317 and its query
# API on 127.0.0.1:16686.
set -euo pipefail

version=${FERRY_JAEGER_VERSION:-v1.75.0}
dir=${FERRY_JAEGER_DIR:-$HOME/.cache/ferry-jaeger}
bin="$dir/jaeger-$version"
pidfile="$dir/jaeger.pid"

build() {
  [ -x "$bin" ] && return
  mkdir -p "$dir"
  local mod
  mod=$(mktemp -d)
  (
    cd "$mod"
    go mod init ferry-jaeger-build >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$version" >&2
    go build -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
  )
  mv "$bin.tmp" "$bin"
  rm -rf "$mod"
}

case "${1:-}" in
start)
  build
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "jaeger.sh: already running (pid $(cat "$pidfile"))" >&2
  else
    "$bin" > "$dir/jaeger.log" 2>&1 &
    echo $! > "$pidfile"
  fi
  for _ in $(seq 1 120); do
    if curl -fsS -o /dev/null http://127.0.0.1:16686/api/services 2>/dev/null; then
      echo "127.0.0.1:4317 http://127.0.0.1:16686"
      exit 0
    fi
    sleep 0.5
  done
  echo "jaeger.sh: Jaeger did not answer on 127.0.0.1:16686; its log: $dir/jaeger.log" >&2
  tail -20 "$dir/jaeger.log" >&2 || true
  exit 1
  ;;
stop)
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    rm -f "$pidfile"
    echo "jaeger.sh: stopped" >&2
  fi
  ;;
*)
  echo "usage: jaeger.sh start|stop" >&2
  exit 2
  ;;
esac
