package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferryproxy/ferry/internal/config"
)

// TransportCredentials returns the credentials of a connection Ferry makes
// to a gRPC server (a back end's, a source's): plaintext, or TLS as t
// says, which logs why the server could not be reached over TLS to the
// ConnLog it returns too (nil for plaintext). section names the
// configuration section in errors and logs, such as "backends[].tls".
func TransportCredentials(t config.ClientTLS, section, target string, logger *slog.Logger) (credentials.TransportCredentials, *ConnLog, error) {
	if !t.Enabled {
		return insecure.NewCredentials(), nil, nil
	}
	tc, err := t.Config()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", section, err)
	}
	if t.InsecureSkipVerify {
		logger.Warn("TLS without checking the server's certificate ("+section+".insecure_skip_verify): anyone between Ferry and the server can read and change the calls", "target", target)
	}
	l := &ConnLog{logger: logger, target: target}
	return &loggedTLS{TransportCredentials: credentials.NewTLS(tc), log: l}, l, nil
}

// withTLSCause adds to msg why the last TLS connection to the server
// failed (see ConnLog.WithCause).
func (b *Backend) withTLSCause(msg string) string { return b.tlsLog.WithCause(msg) }

// WithCause adds to msg, the message of a call that got no connection to
// the server, why the last TLS connection failed, unless msg tells it
// already. grpc-go's error often does not: when the server refuses
// Ferry's client certificate (or its lack of one) after the handshake,
// it may report the broken write instead. A nil ConnLog (plaintext)
// returns msg.
func (l *ConnLog) WithCause(msg string) string {
	if l == nil {
		return msg
	}
	what, err := l.cause()
	// grpc-go quotes the error it names, as desc = "...".
	if q := strconv.Quote(err); err == "" || strings.Contains(msg, err) || strings.Contains(msg, q[1:len(q)-1]) {
		return msg
	}
	return msg + "; the last TLS connection failed: " + what + ": " + err
}

// loggedTLS is TLS that logs why a connection to the server failed in its
// handshake, or was closed by the server right after it (a server that
// requires a client certificate Ferry does not present ends TLS 1.3
// connections so). grpc-go reconnects quietly, and calls waiting for a
// connection tell the cause only to their callers, when they give up.
type loggedTLS struct {
	credentials.TransportCredentials
	log *ConnLog
}

// ClientHandshake is the TLS handshake, logged when it fails.
func (t *loggedTLS) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := t.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		if ctx.Err() == nil {
			t.log.failed("TLS handshake with the gRPC server failed", err)
		}
		return nil, nil, err
	}
	return &firstRead{Conn: conn, log: t.log}, info, nil
}

// Clone returns a copy of the credentials that logs to the same place.
func (t *loggedTLS) Clone() credentials.TransportCredentials {
	return &loggedTLS{TransportCredentials: t.TransportCredentials.Clone(), log: t.log}
}

// firstRead is a connection after a successful TLS handshake, which
// reports how its first read ended: data (the server took Ferry) or an
// error (the server refused it, such as for a missing client certificate).
type firstRead struct {
	net.Conn
	log *ConnLog
	// done is set at the first read's end. Only grpc-go's reader of the
	// connection reads, so it needs no lock.
	done bool
}

func (c *firstRead) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.done {
		return n, err
	}
	switch {
	case n > 0:
		c.done = true
		c.log.connected()
	case err != nil:
		c.done = true
		if !errors.Is(err, net.ErrClosed) {
			c.log.failed("the gRPC server closed the connection after the TLS handshake", err)
		}
	}
	return n, err
}

// ConnLog logs each distinct cause of failed connections once, until a
// connection succeeds: grpc-go retries with backoff, and a line for each
// attempt would flood the log.
type ConnLog struct {
	logger *slog.Logger
	target string

	// mu guards the cause logged last, what failed and the error; both
	// are "" while connections succeed.
	mu         sync.Mutex
	what, last string
}

func (l *ConnLog) failed(what string, err error) {
	l.mu.Lock()
	repeated := what == l.what && err.Error() == l.last
	l.what, l.last = what, err.Error()
	l.mu.Unlock()
	if !repeated {
		l.logger.Warn(what+"; calls wait for a connection, retrying with backoff", "target", l.target, "err", err)
	}
}

// cause returns what failed last and its error; "" when the last
// connection succeeded.
func (l *ConnLog) cause() (what, err string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.what, l.last
}

func (l *ConnLog) connected() {
	l.mu.Lock()
	failing := l.last != ""
	l.what, l.last = "", ""
	l.mu.Unlock()
	if failing {
		l.logger.Info("connected to the gRPC server over TLS", "target", l.target)
	}
}
