package backend

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/layout"
)

// TestPartitionCommitOrder: the commit point is the first unfinished
// record, whatever order calls finish in.
func TestPartitionCommitOrder(t *testing.T) {
	p := newPartition("t", 0)
	for _, o := range []int64{10, 11, 12, 13, 14} {
		if !p.track(o) {
			t.Fatalf("track(%d) refused", o)
		}
	}
	if _, moved := p.commitPoint(); moved {
		t.Error("commit point moved before anything finished")
	}
	p.finish(12, 14) // later calls finish first: nothing to commit yet
	if _, moved := p.commitPoint(); moved {
		t.Error("commit point moved past an unfinished record")
	}
	p.finish(10)
	if at, moved := p.commitPoint(); !moved || at != 11 {
		t.Errorf("commit point = %d, %v; want 11", at, moved)
	}
	p.committedAt(11)
	if _, moved := p.commitPoint(); moved {
		t.Error("commit point moved without progress")
	}
	p.finish(11, 13)
	if at, moved := p.commitPoint(); !moved || at != 15 {
		t.Errorf("commit point = %d, %v; want 15 (all finished)", at, moved)
	}
	if p.track(14) {
		t.Error("an offset already passed was tracked again")
	}
	p.retire()
	if p.track(15) || p.addActive(1) {
		t.Error("a retired partition took a record or a call")
	}
	p.finish(15)
	if _, moved := p.commitPoint(); moved {
		t.Error("a retired partition reported a commit point")
	}
}

// TestIDSet: the set forgets its oldest ids past its bound, and a removed
// id neither counts nor is forgotten twice.
func TestIDSet(t *testing.T) {
	s := newIDSet(2)
	s.add("a")
	s.add("b")
	s.add("a")
	s.add("c") // evicts a, the oldest
	if s.has("a") || !s.has("b") || !s.has("c") {
		t.Errorf("ids = %v, want b and c", s.at)
	}
	s.remove("b")
	s.remove("x")
	if s.has("b") {
		t.Error("a removed id is still in the set")
	}
	s.add("d") // takes b's old slot
	s.add("e") // evicts c
	if s.has("c") || !s.has("d") || !s.has("e") || len(s.at) != 2 {
		t.Errorf("ids = %v, want d and e", s.at)
	}
}

// testBackend is a back end without Kafka or a server: its calls wait for
// a slot that never frees until the back end is closed, and have no reply
// topic, so they finish without writing anything.
func testBackend(t *testing.T) *Backend {
	b := &Backend{
		cfg:        config.Backend{Topic: "t", Deadline: time.Minute},
		layout:     layout.New(config.DefaultHeaderNames()),
		logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		slots:      make(chan struct{}),
		room:       make(chan struct{}, 1),
		parts:      map[int32]*partition{},
		open:       map[string]*call{},
		endedEarly: newIDSet(100),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.givenUp, b.giveUp = context.WithCancel(context.Background())
	t.Cleanup(func() {
		b.cancel()
		b.calls.Wait()
	})
	return b
}

func request(id string, offset int64, value []byte) *kgo.Record {
	return &kgo.Record{Topic: "t", Offset: offset, Value: value, Headers: []kgo.RecordHeader{
		{Key: "zilla:service", Value: []byte("pkg.Svc")},
		{Key: "zilla:method", Value: []byte("M")},
		{Key: "zilla:correlation-id", Value: []byte(id)},
	}}
}

func (b *Backend) openCallOf(id string) *call {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open[id]
}

// TestDispatchAfterAbandon: a call abandoned when its partition was taken
// away leaves nothing behind. Its records, read again once the partition
// is assigned to the same instance again, open a new call even while the
// abandoned call has not yet ended.
func TestDispatchAfterAbandon(t *testing.T) {
	b := testBackend(t)
	b.assigned(map[string][]int32{"t": {0}})
	old := newCall(b, b.parts[0], request("a", 0, []byte("x")), b.request(request("a", 0, nil)))
	b.open["a"] = old
	b.revoked(context.Background(), map[string][]int32{"t": {0}}, false)
	if !old.isAbandoned() {
		t.Fatal("the call of the lost partition was not abandoned")
	}
	b.assigned(map[string][]int32{"t": {0}})
	b.dispatch(request("a", 0, []byte("x")))
	b.dispatch(request("a", 1, nil))
	c := b.openCallOf("a")
	if c == nil || c == old || c.part != b.parts[0] {
		t.Fatalf("open call for a = %p (abandoned one %p): want a new call of the new assignment", c, old)
	}
	b.ended(old) // the abandoned call's goroutine ends late
	if b.openCallOf("a") != c {
		t.Error("the abandoned call's end removed the new call")
	}
	if b.endedEarly.has("a") {
		t.Error("an abandoned call was recorded as ended")
	}
}

// TestDispatchEndedEarly: only the rest of the request stream of a call
// that ended before its stream did is skipped; its null record ends that,
// and a request of the same id after it is executed again.
func TestDispatchEndedEarly(t *testing.T) {
	b := testBackend(t)
	b.assigned(map[string][]int32{"t": {0}})
	p := b.parts[0]
	// A client stream the server answered before its end: the call
	// finishes with only its first record read.
	first := request("s", 0, []byte("x"))
	p.track(0)
	c := newCall(b, p, first, b.request(first))
	b.open["s"] = c
	b.incomplete++
	p.addActive(1)
	c.finish(layout.ResponseMetadata{}, 0, "")
	b.ended(c)
	if !b.endedEarly.has("s") {
		t.Fatal("a call that ended before its request stream was not recorded")
	}
	b.dispatch(request("s", 1, []byte("late")))
	if b.openCallOf("s") != nil {
		t.Error("a late record of the stream opened a call")
	}
	b.dispatch(request("s", 2, nil)) // the stream's end
	if b.endedEarly.has("s") {
		t.Error("the stream's null record did not end skipping")
	}
	if at, _ := p.commitPoint(); at != 3 {
		t.Errorf("commit point = %d, want 3: every record of the call is finished", at)
	}
	b.dispatch(request("s", 3, []byte("retry")))
	if b.openCallOf("s") == nil {
		t.Error("a request after the stream's end, with the same id, was not executed again")
	}
}

// TestCloseAfterPartialStart: a back end whose Start failed (its cluster
// closed, so no producer) or never ran closes cleanly, more than once.
func TestCloseAfterPartialStart(t *testing.T) {
	cfg := config.Backend{Name: "b", Target: "127.0.0.1:1", Topic: "t", Concurrency: 1}
	logger := slog.New(slog.DiscardHandler)
	cl := kafka.NewCluster(config.Cluster{Name: "c"}, []string{"127.0.0.1:1"}, logger)
	if err := cl.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, start := range []bool{false, true} {
		b, err := New(Options{Config: cfg, Cluster: cl, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		if start {
			if err := b.Start(context.Background()); err == nil {
				t.Fatal("Start on a closed cluster: no error")
			}
		}
		for range 2 {
			if err := b.Close(context.Background()); err != nil {
				t.Errorf("Close (started %v): %v", start, err)
			}
		}
	}
}

// TestPartitionLag: the lag is the high watermark less the first record
// not finished, unknown until a fetch gave both.
func TestPartitionLag(t *testing.T) {
	p := newPartition("t", 0)
	if _, ok := p.lag(); ok {
		t.Fatal("lag known before any fetch")
	}
	for _, o := range []int64{5, 6, 7} {
		p.track(o)
	}
	p.highWatermark.Store(10)
	p.finish(5)
	if lag, ok := p.lag(); !ok || lag != 4 {
		t.Errorf("lag = %d, %v, want 4", lag, ok)
	}
	p.finish(6, 7)
	if lag, _ := p.lag(); lag != 2 {
		t.Errorf("lag = %d, want 2", lag)
	}
	for o := int64(8); o < 10; o++ {
		p.track(o)
		p.finish(o)
	}
	if lag, _ := p.lag(); lag != 0 {
		t.Errorf("caught up: lag = %d, want 0", lag)
	}
}
