#!/usr/bin/env bash
# Runs rounds of Ferry's path benchmarks in internal/app and summarizes them
# with scripts/benchratio: each round is a fresh process that runs every
# path (direct, grpc-floor, ferry, …) once, and each path's throughput is
# divided by direct's of the same round.
#
#   scripts/bench.sh ROUNDS PATTERN [BENCHTIME]
#   scripts/bench.sh 5 'KafkaAPIProduceStream|KafkaAPIConsumeStream' 200000x
#   FERRY_TEST_BROKERS=127.0.0.1:19092 scripts/bench.sh 5 KafkaAPIProduceUnary 5000x
#
# The raw output is kept in bench-<time>.txt in the current directory.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
rounds=$1 pattern=$2 benchtime=${3:-1s}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "bench.sh: ROUNDS must be a positive number, not \"$rounds\"" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
raw="$PWD/bench-$(date -u +%Y%m%dT%H%M%SZ).txt"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT

(cd "$root" && go test -c -o "$bin/app.test" ./internal/app)
for ((r = 1; r <= rounds; r++)); do
  echo "bench.sh: round $r of $rounds" >&2
  # Test binaries run in their package's directory.
  if ! (cd "$root/internal/app" && "$bin/app.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$benchtime") >"$bin/round.txt" 2>&1; then
    cat "$bin/round.txt" >&2
    echo "bench.sh: round $r failed (output above); the earlier rounds are in $raw" >&2
    exit 1
  fi
  cat "$bin/round.txt" >>"$raw"
  grep -E '^(Benchmark|---)' "$bin/round.txt" >&2 || true
done
if ! grep -q '^Benchmark' "$raw"; then
  echo "bench.sh: no benchmark matched \"$pattern\"" >&2
  exit 1
fi
echo "bench.sh: raw results in $raw" >&2
(cd "$root" && go run ./scripts/benchratio) < "$raw"
