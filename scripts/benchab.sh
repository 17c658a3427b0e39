#!/usr/bin/env bash
# Compares a benchmark of the working tree with the same benchmark at an
# earlier commit, to show that a change costs nothing (or what it costs).
# It builds both test binaries, then runs ROUNDS rounds; each round runs
# both binaries once, alternating which goes first (the second of a pair
# ran measurably slower on these machines), and scripts/benchratio
# summarizes each side: throughput, latency, and the ratio to the direct
# path of the same run.
#
#   scripts/benchab.sh BASE ROUNDS PATTERN BENCHTIME [PACKAGE]
#   scripts/benchab.sh 56920c9 6 Proxy 3000x
#   scripts/benchab.sh 56920c9 5 EngineConsume 400000x internal/kafkaapi
#   FERRY_TEST_BROKERS=127.0.0.1:19092 scripts/benchab.sh main 4 Unary 3000x
#
# The raw output of each side is kept in benchab-<side>-<time>.txt in the
# current directory.
set -euo pipefail

if [ $# -lt 4 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
base=$1 rounds=$2 pattern=$3 benchtime=$4 pkg=${5:-internal/app}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "benchab.sh: ROUNDS must be a positive number, not \"$rounds\"" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
bin=$(mktemp -d)
tree="$bin/base"
trap 'git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true; rm -rf "$bin"' EXIT

git -C "$root" worktree add -q --detach "$tree" "$base"
(cd "$tree" && go test -c -o "$bin/base.test" "./$pkg")
(cd "$root" && go test -c -o "$bin/head.test" "./$pkg")
for side in base head; do : >"$PWD/benchab-$side-$stamp.txt"; done
for ((r = 1; r <= rounds; r++)); do
  order="base head"
  if ((r % 2 == 0)); then order="head base"; fi
  echo "benchab.sh: round $r of $rounds ($order)" >&2
  for side in $order; do
    # Test binaries run in their package's directory.
    (cd "$root/$pkg" && "$bin/$side.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$benchtime") \
      >>"$PWD/benchab-$side-$stamp.txt" 2>&1
  done
done
for side in base head; do
  echo "## $side ($([ $side = base ] && echo "$base" || echo "working tree"))"
  (cd "$root" && go run ./scripts/benchratio) <"$PWD/benchab-$side-$stamp.txt"
done
