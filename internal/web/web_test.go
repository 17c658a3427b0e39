package web

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/ferryproxy/ferry/internal/testkit/testca"
)

// TestSplitSorts: plaintext connections opening with the HTTP/2 preface
// go to the gRPC half with every byte; others, however short their first
// request, to the HTTP half; both halves closed close the listener.
func TestSplitSorts(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewSplit(lis, nil, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()

	for _, c := range []struct {
		first  string
		toGRPC bool
	}{
		{string(preface) + "rest", true},
		{"GET / HTTP/1.0\r\n\r\n", false},
		{"PRI * HTTP/1.1\r\n\r\n", false},
		{"P", false}, // then the client closes: never sorted, closed
	} {
		conn, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte(c.first)); err != nil {
			t.Fatal(err)
		}
		if c.first == "P" {
			conn.Close()
			continue
		}
		half := s.HTTP()
		if c.toGRPC {
			half = s.GRPC()
		}
		got, err := half.Accept()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(c.first))
		_ = got.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(got, b); err != nil || string(b) != c.first {
			t.Fatalf("%q: read %q, %v", c.first, b, err)
		}
		got.Close()
		conn.Close()
	}
	s.GRPC().Close()
	select {
	case <-served:
		t.Fatal("Serve returned with one half open")
	case <-time.After(50 * time.Millisecond):
	}
	s.HTTP().Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := s.HTTP().Accept(); err == nil {
		t.Fatal("a closed half accepted")
	}
}

// TestTextBody: a body of base64 pieces, each padded, decodes whole; a
// body that is not base64 fails.
func TestTextBody(t *testing.T) {
	enc := base64.StdEncoding.EncodeToString
	body := enc([]byte("ab")) + enc([]byte("cde")) + "\n" + enc([]byte("f")) + "\r\n"
	got, err := io.ReadAll(&textBody{r: io.NopCloser(bytes.NewBufferString(body))})
	if err != nil || string(got) != "abcdef" {
		t.Fatalf("%q, %v", got, err)
	}
	for _, bad := range []string{"!!!!", "YWJj Y", "YW"} {
		if _, err := io.ReadAll(&textBody{r: io.NopCloser(bytes.NewBufferString(bad))}); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// TestTextWriter: the response is base64, whole quanta as written and the
// rest padded at a flush, and the content type is the text format's.
func TestTextWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	tw := &textWriter{w: rec}
	tw.Header().Set("Content-Type", "application/grpc-web+proto")
	tw.Write([]byte("abcd"))
	if got := rec.Body.String(); got != base64.StdEncoding.EncodeToString([]byte("abc")) {
		t.Fatalf("before flush %q", got)
	}
	tw.Flush()
	tw.Write([]byte("ef"))
	tw.finish()
	want := base64.StdEncoding.EncodeToString([]byte("abc")) + base64.StdEncoding.EncodeToString([]byte("d")) + base64.StdEncoding.EncodeToString([]byte("ef"))
	if got := rec.Body.String(); got != want {
		t.Fatalf("%q; want %q", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/grpc-web-text+proto" {
		t.Fatalf("content type %q", ct)
	}
	var _ http.Flusher = tw
}

// FuzzTextBody: any body decodes or fails, never panics, and what decodes
// is what a quantum-by-quantum decoder gives.
func FuzzTextBody(f *testing.F) {
	f.Add("YWJj")
	f.Add("YQ==YmM=")
	f.Add("====")
	f.Fuzz(func(t *testing.T, body string) {
		got, err := io.ReadAll(&textBody{r: io.NopCloser(bytes.NewBufferString(body))})
		if err != nil {
			return
		}
		var want []byte
		body = strings.Map(func(r rune) rune {
			if strings.ContainsRune(" \t\r\n", r) {
				return -1
			}
			return r
		}, body)
		for i := 0; i < len(body); i += 4 {
			b, err := base64.StdEncoding.DecodeString(body[i : i+4])
			if err != nil {
				t.Fatalf("%q decoded to %q, but quantum %d does not", body, got, i/4)
			}
			want = append(want, b...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: %q; want %q", body, got, want)
		}
	})
}

// TestDropHopByHop: the connection's own headers, and those Connection
// names, are not passed on as metadata.
func TestDropHopByHop(t *testing.T) {
	h := http.Header{}
	h.Set("Connection", "keep-alive, X-Hop")
	h.Set("Keep-Alive", "timeout=5")
	h.Set("X-Hop", "1")
	h.Set("X-Tenant", "blue")
	h.Set("Upgrade", "h2c")
	dropHopByHop(h)
	if len(h) != 1 || h.Get("X-Tenant") != "blue" {
		t.Fatalf("left %v", h)
	}
}

// TestSplitTLS: over TLS, a client offering only h2 in ALPN (gRPC's) is
// the gRPC server's, with the handshake done; one offering http/1.1 too,
// or nothing, the HTTP server's. Handshaken hands grpc-go the state.
func TestSplitTLS(t *testing.T) {
	ca := testca.New(t)
	c, k, _ := ca.Issue(t, x509.ExtKeyUsageServerAuth)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewSplit(lis, &tls.Config{Certificates: []tls.Certificate{cert}}, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	defer func() {
		s.GRPC().Close()
		s.HTTP().Close()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	for _, c := range []struct {
		protos []string
		toGRPC bool
		want   string
	}{
		{[]string{"h2"}, true, "h2"},
		{[]string{"h2", "http/1.1"}, false, "h2"},
		{[]string{"http/1.1"}, false, "http/1.1"},
		{nil, false, ""},
	} {
		done := make(chan error, 1)
		go func() {
			conn, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: ca.Pool, NextProtos: c.protos, ServerName: "127.0.0.1"})
			if err == nil {
				if got := conn.ConnectionState().NegotiatedProtocol; got != c.want {
					err = fmt.Errorf("%v: negotiated %q, want %q", c.protos, got, c.want)
				}
				_, _ = conn.Write([]byte("x"))
				defer conn.Close()
			}
			done <- err
		}()
		half := s.HTTP()
		if c.toGRPC {
			half = s.GRPC()
		}
		got, err := half.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c.toGRPC {
			_, info, err := Handshaken{}.ServerHandshake(got)
			if err != nil || info.(credentials.TLSInfo).State.NegotiatedProtocol != "h2" {
				t.Fatalf("Handshaken: %v, %v", info, err)
			}
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(got, b); err != nil || b[0] != 'x' {
			t.Fatalf("%v: read %q, %v", c.protos, b, err)
		}
		got.Close()
	}
}
