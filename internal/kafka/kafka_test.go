package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
)

// TestFetchErrorAttrs: a client's own error (a failed group session, a
// closed client) is logged without the topic "" and partition 0 or -1
// franz-go files it under; a whole topic's error without a partition.
func TestFetchErrorAttrs(t *testing.T) {
	errDial := errors.New("dial tcp 127.0.0.1:9092: connect: connection refused")
	fs := append(kgo.NewErrFetch(errDial), kgo.Fetch{Topics: []kgo.FetchTopic{
		{Topic: "", Partitions: []kgo.FetchPartition{{Partition: 0, Err: &kgo.ErrGroupSession{Err: errDial}}}},
		{Topic: "t", Partitions: []kgo.FetchPartition{{Partition: -1, Err: errDial}, {Partition: 3, Err: errDial}}},
	}})
	var got []string
	fs.EachError(func(topic string, p int32, _ error) {
		got = append(got, fmt.Sprint(FetchErrorAttrs(topic, p)))
	})
	want := []string{"[]", "[]", "[topic t]", "[topic t partition 3]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("attributes = %q, want %q", got, want)
	}
}

// faultListener fails the Accept calls after arm with EMFILE, as the
// kernel does when the process has no file descriptor left.
type faultListener struct {
	net.Listener
	faults atomic.Int32
}

func (l *faultListener) Accept() (net.Conn, error) {
	if l.faults.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestEmbeddedSurvivesEMFILE: accept errors (file descriptors running out
// under a burst of callers) do not end the embedded broker: clients that
// connect afterwards are served.
func TestEmbeddedSurvivesEMFILE(t *testing.T) {
	var fl *faultListener
	e, err := StartEmbedded(0, 1, withListen(func(network, addr string) (net.Listener, error) {
		l, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		fl = &faultListener{Listener: l}
		return fl, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	ping := func(what string) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cl.Ping(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	ping("before the accept errors")
	// The accept loop waits in Accept already; the connection after the
	// next one meets three failures first.
	fl.faults.Store(3)
	ping("the connection before the accept errors")
	ping("after three accept errors")
}

// withListen replaces net.Listen, for tests that inject accept failures.
func withListen(fn func(network, address string) (net.Listener, error)) EmbeddedOption {
	return func(o *embeddedOptions) { o.listen = fn }
}

// TestHealthHysteresis: the cluster turns down after unhealthy_after failed
// probes in a row and up after healthy_after answered ones, reporting each
// change once; Reachable fails from the first failed probe to the next
// answered one, and for a moment after a caller's failure to reach it.
func TestHealthHysteresis(t *testing.T) {
	cfg := config.Cluster{Name: "c", HealthCheck: config.HealthCheck{Interval: time.Hour, UnhealthyAfter: 3, HealthyAfter: 2}}
	c := NewCluster(cfg, nil, slog.New(slog.DiscardHandler))
	var changes []bool
	c.health.onChange = func(up bool) { changes = append(changes, up) }
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	steps := []struct {
		probe         error
		up, reachable bool
	}{
		{refused, true, false},
		{nil, true, true},
		{refused, true, false},
		{refused, true, false},
		{refused, false, false},
		{refused, false, false},
		{nil, false, true},
		{refused, false, false},
		{nil, false, true},
		{nil, true, true},
	}
	for i, s := range steps {
		c.noteProbe(s.probe)
		if c.Up() != s.up || (c.Reachable() == nil) != s.reachable {
			t.Errorf("after probe %d (%v): up %v, reachable %v; want %v, %v", i, s.probe, c.Up(), c.Reachable(), s.up, s.reachable)
		}
	}
	if fmt.Sprint(changes) != "[false true]" {
		t.Errorf("changes reported: %v, want [false true]", changes)
	}
	c.NoteUnreachable(errors.New("UNKNOWN_TOPIC_OR_PARTITION")) // an answer, not an outage
	if err := c.Reachable(); err != nil {
		t.Errorf("after an answer: %v", err)
	}
	c.NoteUnreachable(fmt.Errorf("listing offsets: %w", refused))
	if err := c.Reachable(); err == nil || !strings.Contains(err.Error(), `cluster "c" is unreachable`) {
		t.Errorf("after a caller's failed dial: %v", err)
	}
}

// TestCloseAbandonsUnwritten: a cluster closed while its producer still
// holds records for a broker that never answers stops waiting when ctx
// ends and counts the records it abandoned; closing again does nothing.
func TestCloseAbandonsUnwritten(t *testing.T) {
	cfg := config.Cluster{Name: "gone", Producer: config.Producer{MaxBufferedRecords: 10, Compression: "none", DeliveryTimeout: time.Minute}}
	c := NewCluster(cfg, []string{"127.0.0.1:1"}, slog.New(slog.DiscardHandler))
	p, err := c.Producer(AcksLeaderOnly)
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	p.Produce(context.Background(), &kgo.Record{Topic: "t", Value: []byte("v")}, func(_ *kgo.Record, err error) { failed <- err })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 records abandoned unwritten") {
		t.Errorf("Close: %v, want the abandoned record counted and the deadline", err)
	}
	if err := <-failed; !errors.Is(err, kgo.ErrClientClosed) {
		t.Errorf("the abandoned record failed with %v, want ErrClientClosed", err)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
