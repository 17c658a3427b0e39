package backend

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/layout"
)

// TestStaticMetadataKeepsFerrysKeys: the keys a call's metadata gets from
// Ferry cannot be set as static metadata, so it never replaces them.
func TestStaticMetadataKeepsFerrysKeys(t *testing.T) {
	for _, k := range []string{edge.RequestIDKey, layout.CorrelationIDMetadata, layout.IdempotencyKey} {
		_, err := config.Backend{Name: "b", Metadata: map[string]string{k: "v"}}.MetadataValues()
		if err == nil || !strings.Contains(err.Error(), "is set by Ferry") {
			t.Errorf("metadata key %q: err = %v, want it refused as set by Ferry", k, err)
		}
	}
}

// TestConnLogOnce: each cause is logged once until a connection succeeds;
// a new cause is logged at once.
func TestConnLogOnce(t *testing.T) {
	var buf bytes.Buffer
	l := &ConnLog{logger: slog.New(slog.NewTextHandler(&buf, nil)), target: "127.0.0.1:1"}
	untrusted := errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority")
	for range 5 {
		l.failed("TLS handshake with the gRPC server failed", untrusted)
	}
	l.failed("the gRPC server closed the connection after the TLS handshake", errors.New("remote error: tls: certificate required"))
	l.connected()
	l.connected()
	l.failed("TLS handshake with the gRPC server failed", untrusted)
	out := buf.String()
	for s, want := range map[string]int{"unknown authority": 2, "certificate required": 1, "connected to the gRPC server": 1, "target=127.0.0.1:1": 4} {
		if got := strings.Count(out, s); got != want {
			t.Errorf("%q logged %d times, want %d; log:\n%s", s, got, want, out)
		}
	}
}

// TestWithTLSCause: a call without a connection names the last TLS
// failure, unless grpc-go's message names it already, quoted or not.
func TestWithTLSCause(t *testing.T) {
	l := &ConnLog{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	b := &Backend{tlsLog: l}
	if got := (&Backend{}).withTLSCause("no connection"); got != "no connection" {
		t.Errorf("without TLS: %q", got)
	}
	if got := b.withTLSCause("no connection"); got != "no connection" {
		t.Errorf("before any failure: %q", got)
	}
	l.failed("the gRPC server closed the connection after the TLS handshake", errors.New("remote error: tls: certificate required"))
	for msg, want := range map[string]string{
		"no connection: write: broken pipe":                                        "no connection: write: broken pipe; the last TLS connection failed: the gRPC server closed the connection after the TLS handshake: remote error: tls: certificate required",
		"no connection: remote error: tls: certificate required":                   "no connection: remote error: tls: certificate required",
		`no connection: desc = "preface: remote error: tls: certificate required"`: `no connection: desc = "preface: remote error: tls: certificate required"`,
	} {
		if got := b.withTLSCause(msg); got != want {
			t.Errorf("withTLSCause(%q) = %q, want %q", msg, got, want)
		}
	}
	l.failed("TLS handshake with the gRPC server failed", errors.New(`x509: "Ferry test CA"`))
	if msg := `desc = "x509: \"Ferry test CA\""`; b.withTLSCause(msg) != msg {
		t.Errorf("withTLSCause(%q) = %q, want it as it was", msg, b.withTLSCause(msg))
	}
	l.connected()
	if got := b.withTLSCause("no connection"); got != "no connection" {
		t.Errorf("after a connection: %q", got)
	}
}
