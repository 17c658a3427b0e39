package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// health is what this Ferry instance knows of whether a cluster can be
// reached. Two views are kept, for two uses:
//
//   - up is the state with hysteresis (unhealthy_after failed probes in a
//     row turn it down, healthy_after answered ones up again), for health
//     reporting, which must not flap;
//   - failed is the latest failure, a probe's (until a probe is answered)
//     or a caller's (for a second), for callers deciding whether to dial
//     at all: during an outage they fail at once, and the probe alone
//     dials, once per interval.
type health struct {
	mu     sync.Mutex
	up     bool
	fails  int // failed probes in a row
	oks    int // answered probes in a row
	failed error
	// failedUntil is when a failure a caller noted stops counting; zero
	// for a probe's, which counts until a probe is answered.
	failedUntil time.Time
	onChange    func(up bool)

	cancel context.CancelFunc
	done   chan struct{}
}

// StartHealthCheck starts probing the cluster with a metadata request every
// clusters[].health_check.interval, until Close. onChange is called, from
// the probing goroutine, each time the cluster turns unreachable or
// reachable again (see config.HealthCheck). The cluster starts out
// reachable: Ferry pinged it at start-up.
func (c *Cluster) StartHealthCheck(onChange func(up bool)) error {
	cl, err := c.NewClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.health.mu.Lock()
	c.health.onChange, c.health.cancel, c.health.done = onChange, cancel, make(chan struct{})
	c.health.mu.Unlock()
	go c.probe(ctx, cl)
	return nil
}

func (c *Cluster) probe(ctx context.Context, cl *kgo.Client) {
	defer close(c.health.done)
	defer cl.Close()
	hc := c.cfg.HealthCheck
	t := time.NewTimer(hc.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		err := cl.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.noteProbe(err)
		t.Reset(hc.Interval)
	}
}

// noteProbe records a probe's outcome and reports a change of state.
func (c *Cluster) noteProbe(err error) {
	h := &c.health
	hc := c.cfg.HealthCheck
	h.mu.Lock()
	was := h.up
	if err != nil {
		h.fails, h.oks = h.fails+1, 0
		h.failed, h.failedUntil = err, time.Time{}
		if h.fails >= hc.UnhealthyAfter {
			h.up = false
		}
	} else {
		h.fails, h.oks = 0, h.oks+1
		h.failed, h.failedUntil = nil, time.Time{}
		if h.oks >= hc.HealthyAfter {
			h.up = true
		}
	}
	changed, up, onChange := was != h.up, h.up, h.onChange
	h.mu.Unlock()
	if !changed {
		return
	}
	if up {
		c.logger.Warn("Kafka cluster is reachable again", "cluster", c.name)
	} else {
		c.logger.Warn("Kafka cluster is unreachable", "cluster", c.name, "probes_failed", hc.UnhealthyAfter, "err", err)
	}
	if onChange != nil {
		onChange(up)
	}
}

// Up reports the cluster's state for health checks: false once
// unhealthy_after probes in a row failed, until healthy_after answered.
func (c *Cluster) Up() bool {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	return c.health.up
}

// Reachable returns an error when the latest probe failed to reach the
// cluster, or a caller reported such a request with NoteUnreachable in the
// last callerFailureFor: a new caller should then fail at once rather than
// dial a broker that others just failed to reach. An answered probe clears
// it.
func (c *Cluster) Reachable() error {
	h := &c.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failed == nil || !h.failedUntil.IsZero() && time.Now().After(h.failedUntil) {
		return nil
	}
	return fmt.Errorf("cluster %q is unreachable: %w", c.name, h.failed)
}

// callerFailureFor is how long a failure a caller noted keeps others from
// dialing, at most: long enough that an outage costs a dial a second, not
// one per caller, and short enough that a false alarm passes quickly.
const callerFailureFor = time.Second

// NoteUnreachable records that a request failed with err, if err says the
// cluster could not be reached (see Unreachable), so that Reachable fails
// until the next probe is answered.
func (c *Cluster) NoteUnreachable(err error) {
	if !Unreachable(err) {
		return
	}
	h := &c.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failed != nil && h.failedUntil.IsZero() {
		return // a probe's failure counts already, until a probe is answered
	}
	h.failed, h.failedUntil = err, time.Now().Add(min(callerFailureFor, c.cfg.HealthCheck.Interval))
}

// Unreachable reports whether err is a failure to reach a broker (a failed
// dial, a broken connection, a request timed out) rather than an answer.
func Unreachable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// stopHealthCheck stops the probes and waits for them.
func (c *Cluster) stopHealthCheck() {
	c.health.mu.Lock()
	cancel, done := c.health.cancel, c.health.done
	c.health.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
