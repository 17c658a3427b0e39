// Package web serves the gRPC listener's port to browsers and HTTP clients
// too: gRPC-Web, the Connect protocol and REST paths from google.api.http
// annotations, transcoded to gRPC calls of the same server, beside native
// gRPC.
//
// A Split sorts the listener's connections. HTTP/2 connections that can
// only be gRPC — plaintext ones that open with the HTTP/2 preface, and TLS
// ones whose client offered no protocol but h2 in ALPN, as every gRPC
// client does — go to the gRPC server's own transport, untouched. The rest
// (HTTP/1.1, and TLS clients that offer http/1.1 too, as browsers and curl
// do) go to an HTTP server whose Handler transcodes them.
package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// SortTimeout bounds how long a new connection may take to show what it
// is: its TLS handshake, or its first bytes in plaintext.
const SortTimeout = 20 * time.Second

// preface opens every HTTP/2 connection made with prior knowledge (h2c).
var preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Split divides the connections of one listener between the gRPC server
// (GRPC) and an HTTP server (HTTP). Serve accepts them; it returns once
// both halves are closed, which closes the listener.
type Split struct {
	lis    net.Listener
	grpc   *half
	http   *half
	logger *slog.Logger
	// grpcTLS and webTLS are the listener's TLS configuration offering h2
	// only, and h2 and http/1.1; nil for plaintext.
	grpcTLS, webTLS *tls.Config
	sorting         sync.WaitGroup
	ctx             context.Context
	cancel          context.CancelFunc
	closeLis        func() error // closes lis once
}

// NewSplit splits lis. With tlsCfg, Split runs the TLS handshakes itself
// (the gRPC server then takes Handshaken credentials); without, the
// connections are plaintext.
func NewSplit(lis net.Listener, tlsCfg *tls.Config, logger *slog.Logger) *Split {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Split{lis: lis, logger: logger, ctx: ctx, cancel: cancel, closeLis: sync.OnceValue(lis.Close)}
	s.grpc = newHalf(s)
	s.http = newHalf(s)
	if tlsCfg != nil {
		s.grpcTLS = tlsCfg.Clone()
		s.grpcTLS.NextProtos = []string{"h2"}
		s.webTLS = tlsCfg.Clone()
		s.webTLS.NextProtos = []string{"h2", "http/1.1"}
	}
	return s
}

// GRPC is the listener of the gRPC server's connections.
func (s *Split) GRPC() net.Listener { return s.grpc }

// HTTP is the listener of the HTTP server's connections.
func (s *Split) HTTP() net.Listener { return s.http }

// Serve accepts connections until both halves are closed or the listener
// fails, and sorts each in a goroutine of its own, which it waits for.
func (s *Split) Serve() error {
	defer s.sorting.Wait()
	var delay time.Duration
	for {
		c, err := s.lis.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				// Out of file descriptors, for example: wait as
				// net/http and grpc-go do, and accept again.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger.Warn("accepting a connection failed: retrying", "error", err, "in", delay)
				select {
				case <-time.After(delay):
					continue
				case <-s.ctx.Done():
					return nil
				}
			}
			s.grpc.fail(err)
			s.http.fail(err)
			return err
		}
		delay = 0
		s.sorting.Go(func() { s.sort(c) })
	}
}

// sort hands c to the half it belongs to, or closes it when it shows
// nothing within SortTimeout.
func (s *Split) sort(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(SortTimeout))
	toGRPC, c, err := s.kind(c)
	if err != nil {
		s.logger.Debug("closing a connection that did not start", "remote", c.RemoteAddr().String(), "error", err)
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	h := s.http
	if toGRPC {
		h = s.grpc
	}
	h.hand(c)
}

// kind tells whether c is for the gRPC server, and returns the connection
// to serve: the TLS connection, or c with the bytes read to tell.
func (s *Split) kind(c net.Conn) (bool, net.Conn, error) {
	if s.grpcTLS != nil {
		var onlyH2 bool
		tc := tls.Server(c, &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			onlyH2 = slices.Contains(hello.SupportedProtos, "h2") && !slices.Contains(hello.SupportedProtos, "http/1.1")
			if onlyH2 {
				return s.grpcTLS, nil
			}
			return s.webTLS, nil
		}})
		if err := tc.HandshakeContext(s.ctx); err != nil {
			return false, c, err
		}
		return onlyH2, tc, nil
	}
	var buf [24]byte // len(preface)
	n := 0
	for n < len(preface) {
		m, err := c.Read(buf[n:])
		n += m
		if !bytes.Equal(buf[:n], preface[:n]) {
			return false, &prefixed{Conn: c, prefix: buf[:n]}, nil
		}
		if err != nil {
			return false, c, err
		}
	}
	return true, &prefixed{Conn: c, prefix: buf[:n]}, nil
}

// prefixed is a connection whose first bytes were read already.
type prefixed struct {
	net.Conn
	prefix []byte
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// half is one side of a Split, a listener whose connections the Split
// hands over.
type half struct {
	s      *Split
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	err    error // why Accept fails, once done is closed
	closed bool
}

func newHalf(s *Split) *half {
	return &half{s: s, conns: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives c to the half's server, or closes it when the half is
// closed.
func (h *half) hand(c net.Conn) {
	select {
	case h.conns <- c:
	case <-h.done:
		c.Close()
	}
}

func (h *half) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		h.mu.Lock()
		defer h.mu.Unlock()
		return nil, h.err
	}
}

// fail makes Accept return err from now on.
func (h *half) fail(err error) {
	h.once.Do(func() {
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
		close(h.done)
	})
}

// Close closes the half; once both are closed, the listener closes and
// Serve returns.
func (h *half) Close() error {
	h.fail(net.ErrClosed)
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	other := h.s.grpc
	if other == h {
		other = h.s.http
	}
	other.mu.Lock()
	both := other.closed
	other.mu.Unlock()
	if both {
		h.s.cancel()
		return h.s.closeLis()
	}
	return nil
}

func (h *half) Addr() net.Addr { return h.s.lis.Addr() }

// Handshaken are the gRPC server's transport credentials when a Split
// runs the TLS handshakes: the connections it hands over are TLS already,
// and the calls see the same peer information as with grpc-go's own TLS
// credentials (credentials.TLSInfo), client certificates included.
type Handshaken struct{}

// ServerHandshake returns the TLS connection c is, with its state.
func (Handshaken) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, errors.New("ferry: a connection reached the gRPC server without TLS")
	}
	return c, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

// ClientHandshake fails: Handshaken serves a server only.
func (Handshaken) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("ferry: Handshaken credentials are a server's")
}

// Info describes the credentials as TLS.
func (Handshaken) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

// Clone returns the credentials, which hold nothing.
func (Handshaken) Clone() credentials.TransportCredentials { return Handshaken{} }

// OverrideServerName does nothing: it is a client's setting.
func (Handshaken) OverrideServerName(string) error { return nil }
