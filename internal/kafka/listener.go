package kafka

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// retryListener is a listener whose Accept outlives failures: kfake's
// accept loop ends on the first error, so one EMFILE (the process out of
// file descriptors under a burst of clients) would stop the embedded
// broker for good while Ferry kept running. Like net/http's server, it
// waits and accepts again, from 5 ms doubling to 1 s; unlike it, it treats
// every error as passing until the listener is closed, since a broker that
// stops accepting is never the better outcome.
type retryListener struct {
	net.Listener
	logger *slog.Logger

	closeOnce sync.Once
	closed    chan struct{}
}

func newRetryListener(l net.Listener, logger *slog.Logger) *retryListener {
	return &retryListener{Listener: l, logger: logger, closed: make(chan struct{})}
}

// Accept returns the next connection, retrying failures with backoff until
// the listener is closed.
func (l *retryListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		select {
		case <-l.closed:
			return nil, err
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.logger.Warn("embedded broker: accepting a connection failed; retrying", "retry_in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, err
		}
	}
}

// Close stops Accept, also while it waits to retry.
func (l *retryListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
