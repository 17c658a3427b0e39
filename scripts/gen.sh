#!/usr/bin/env bash
# Regenerates the Go code of the repository's .proto files. CI runs it and
# fails when the checked-in code differs. Needs protoc (Debian's
# protobuf-compiler); the Go plugins are pinned here and built on demand.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

command -v protoc >/dev/null || { echo "gen.sh: protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "$PROTOC_GEN_GO"
GOBIN="$bin" go install "$PROTOC_GEN_GO_GRPC"
export PATH="$bin:$PATH"

# The echo service of the examples, for the proxy example's gRPC server.
protoc -I examples/echo \
  --go_out=. --go_opt=module=github.com/ferryproxy/ferry \
  --go_opt=Mecho.proto=github.com/ferryproxy/ferry/examples/proxy/echo \
  --go-grpc_out=. --go-grpc_opt=module=github.com/ferryproxy/ferry \
  --go-grpc_opt=Mecho.proto=github.com/ferryproxy/ferry/examples/proxy/echo \
  echo.proto

# The ticker of the ingest example.
protoc -I examples/ingest \
  --go_out=. --go_opt=module=github.com/ferryproxy/ferry \
  --go-grpc_out=. --go-grpc_opt=module=github.com/ferryproxy/ferry \
  ticker.proto

# Ferry's Kafka API and Kafka-Pixy's. api/third_party holds the schema of
# the google.api options for protoc; the code uses genproto's packages.
protoc -I api -I api/third_party \
  --go_out=. --go_opt=module=github.com/ferryproxy/ferry \
  --go-grpc_out=. --go-grpc_opt=module=github.com/ferryproxy/ferry \
  ferry/kafka/v1/kafka.proto kafkapixy/kafkapixy.proto
