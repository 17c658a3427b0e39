package config

import (
	"strings"
	"testing"
)

// TestSourceMetadataKeys: a source's call carries no metadata of Ferry's
// own, so the keys a back end sets itself may be given; the other rules
// of static metadata hold.
func TestSourceMetadataKeys(t *testing.T) {
	const y = "protos: [{files: [a.proto]}]\nsources:\n  - {name: s, target: x:1, topic: t, method: a.B/C, metadata: {%s}}\n"
	if _, err := Parse("ferry.yaml", []byte(strings.Replace(y, "%s", "x-request-id: r1, idempotency-key: k", 1))); err != nil {
		t.Errorf("x-request-id and idempotency-key on a source: %v", err)
	}
	_, err := Parse("ferry.yaml", []byte(strings.Replace(y, "%s", "grpc-timeout: 1S", 1)))
	if want := `sources[0].metadata.grpc-timeout: "grpc-timeout": keys starting with grpc- are reserved for gRPC`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("grpc-timeout on a source: %v, want %q", err, want)
	}
}
