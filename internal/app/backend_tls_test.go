package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// startTLSEcho starts the echo server behind TLS with a certificate of
// ca; clientCAs, if set, makes it require client certificates they sign.
func startTLSEcho(t *testing.T, ca *testCA, clientCAs *x509.CertPool) *echoServer {
	t.Helper()
	c, k, _ := ca.issue(t, x509.ExtKeyUsageServerAuth)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveEcho(t, "echo-tls", tls.NewListener(lis, cfg))
}

// newLogBuffer returns a logger at debug level into a buffer, shown when
// the test fails.
func newLogBuffer(t *testing.T) (*syncBuffer, *slog.Logger) {
	l := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Ferry's log:\n%s", l.String())
		}
	})
	return l, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startTLSBackend starts Ferry with a produce route and a back end calling
// srv with the given lines under the back end's tls section, logging to
// the returned buffer.
func startTLSBackend(t *testing.T, srv *echoServer, tlsLines, extra string) (*app.App, *syncBuffer) {
	t.Helper()
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	logs, logger := newLogBuffer(t)
	cfg := ferryConfig(t, proxyConfig(t, req, rep, srv.addr, "    tls:\n      enabled: true\n"+tlsLines+extra))
	return startLogged(t, cfg, logger), logs
}

// writeTLSFiles writes the CA's certificate, and a client certificate
// when client is set, into a directory and returns the lines of a tls
// section naming them.
func writeTLSFiles(t *testing.T, ca *testCA, client bool) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.pem"), string(ca.PEM))
	lines := fmt.Sprintf("      ca_file: %s\n", filepath.Join(dir, "ca.pem"))
	if client {
		c, k, _ := ca.issue(t, x509.ExtKeyUsageClientAuth)
		writeFile(t, filepath.Join(dir, "client.pem"), string(c))
		writeFile(t, filepath.Join(dir, "client-key.pem"), string(k))
		lines += fmt.Sprintf("      cert_file: %s\n      key_file: %s\n", filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
	}
	return lines
}

// TestBackendTLS: a back end calls a server over TLS, trusting it through
// tls.ca_file, and every kind of RPC makes the round trip.
func TestBackendTLS(t *testing.T) {
	kit.CheckLeaks(t)
	ca := newTestCA(t)
	srv := startTLSEcho(t, ca, nil)
	a, _ := startTLSBackend(t, srv, writeTLSFiles(t, ca, false), "")
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	if res := call(ctx, cc, "UnaryEcho", nil, "over tls"); res.err != nil || len(res.msgs) != 1 || res.msgs[0] != "over tls" {
		t.Errorf("UnaryEcho = %q, %v; want the echo", res.msgs, res.err)
	}
	if res := call(ctx, cc, "BidirectionalStreamingEcho", nil, "x", "y"); res.err != nil || strings.Join(res.msgs, ",") != "x,y" {
		t.Errorf("BidirectionalStreamingEcho = %q, %v; want x, y", res.msgs, res.err)
	}
}

// failsReadably checks that a call through a back end whose server cannot
// be reached over TLS ends UNAVAILABLE with the TLS cause in its message,
// and that Ferry's log names the cause once.
func failsReadably(t *testing.T, a *app.App, logs *syncBuffer, cause string) {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	res := call(ctx, dial(t, a), "UnaryEcho", nil, "refused")
	st := status.Convert(res.err)
	t.Logf("reply: %v %q", st.Code(), st.Message())
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), cause) {
		t.Errorf("status = %v %q, want Unavailable naming %q", st.Code(), st.Message(), cause)
	}
	if n := strings.Count(logs.String(), cause); n != 1 {
		t.Errorf("the log names %q %d times, want once", cause, n)
	}
}

// TestBackendMutualTLS: a server that requires client certificates takes
// the back end's, and refuses a back end without one, which says why.
func TestBackendMutualTLS(t *testing.T) {
	kit.CheckLeaks(t)
	ca := newTestCA(t)
	srv := startTLSEcho(t, ca, ca.Pool)
	t.Run("with a certificate", func(t *testing.T) {
		a, _ := startTLSBackend(t, srv, writeTLSFiles(t, ca, true), "")
		res := call(testkit.Context(t, 30*time.Second), dial(t, a), "UnaryEcho", nil, "mtls")
		if res.err != nil || len(res.msgs) != 1 || res.msgs[0] != "mtls" {
			t.Errorf("UnaryEcho = %q, %v; want the echo", res.msgs, res.err)
		}
	})
	t.Run("without", func(t *testing.T) {
		a, logs := startTLSBackend(t, srv, writeTLSFiles(t, ca, false), "    deadline: 2s\n")
		failsReadably(t, a, logs, "tls: certificate required")
	})
}

// TestBackendUntrustedServer: a server whose certificate no trusted
// authority signed is not called, and the back end says why.
func TestBackendUntrustedServer(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startTLSEcho(t, newTestCA(t), nil)
	a, logs := startTLSBackend(t, srv, writeTLSFiles(t, newTestCA(t), false), "    deadline: 2s\n")
	failsReadably(t, a, logs, "certificate signed by unknown authority")
}

// TestBackendStaticMetadata: the back end's static metadata arrives with
// every call, replaces the caller's entries of the same keys, leaves
// Ferry's own alone, and never reaches the log.
func TestBackendStaticMetadata(t *testing.T) {
	kit.CheckLeaks(t)
	const secret = "s3cret-api-key"
	t.Setenv("FERRY_TEST_BACKEND_KEY", secret)
	srv := startEchoServer(t, "echo-md")
	var mu sync.Mutex
	var seen []metadata.MD
	srv.block = func(ctx context.Context, _ string) error {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		seen = append(seen, md)
		mu.Unlock()
		return nil
	}
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	logs, logger := newLogBuffer(t)
	token := []byte{0, 1, 2, 0xff}
	a := startLogged(t, ferryConfig(t, proxyConfig(t, req, rep, srv.addr, fmt.Sprintf(`    metadata:
      x-api-key: ${FERRY_TEST_BACKEND_KEY}
      x-tenant: acme
      x-token-bin: %s
`, base64.StdEncoding.EncodeToString(token)))), logger)
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	for i, md := range []metadata.MD{nil, metadata.Pairs("x-tenant", "intruder", "x-request-id", "req-42", "x-trace", "t-1")} {
		if res := call(ctx, cc, "UnaryEcho", md, fmt.Sprint("m", i)); res.err != nil {
			t.Fatalf("call %d: %v", i, res.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("the server saw %d calls, want 2", len(seen))
	}
	ids := map[string]bool{}
	for i, md := range seen {
		for k, want := range map[string]string{"x-api-key": secret, "x-tenant": "acme", "x-token-bin": string(token)} {
			if got := md.Get(k); len(got) != 1 || got[0] != want {
				t.Errorf("call %d: %s = %q, want [%q]", i, k, got, want)
			}
		}
		if got := md.Get("ferry-correlation-id"); len(got) != 1 || got[0] == "" || ids[got[0]] {
			t.Errorf("call %d: ferry-correlation-id = %q, want one of its own", i, got)
		} else {
			ids[got[0]] = true
		}
	}
	if got := seen[1].Get("x-request-id"); len(got) != 1 || got[0] != "req-42" {
		t.Errorf("x-request-id = %q, want the caller's [req-42]", got)
	}
	if got := seen[1].Get("x-trace"); len(got) != 1 || got[0] != "t-1" {
		t.Errorf("x-trace = %q, want the caller's [t-1]", got)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("the metadata value is in the log")
	}
}
