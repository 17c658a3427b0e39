package produce

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/layout"
)

func testReader(maxBytes int64) *Reader {
	names := config.DefaultHeaderNames()
	return &Reader{
		layout: layout.New(names),
		opts: ReaderOptions{
			Names:   names,
			Replies: config.Replies{Lookback: time.Hour, MaxCachedBytes: maxBytes, MaxBufferedPerCall: 16},
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
		logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		budget:  maxBytes,
		waiters: map[string][]*Waiter{},
		kept:    map[string]*keptReplies{},
		order:   list.New(),
		behind:  map[int32]int64{},
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestReplySizeAccounting: what the kept replies hold on the heap is what
// they count against replies.max_cached_bytes, within a margin. Records
// read from Kafka point into their fetch's batch buffer; kept replies must
// not pin those buffers (they did, and the front end grew to 6–7× its
// max_cached_bytes).
func TestReplySizeAccounting(t *testing.T) {
	const n = 4000
	r := testReader(1 << 40)
	n0 := r.opts.Names
	before := liveHeap()
	recs := make([]*kgo.Record, 0, 2*n)
	for i := range n {
		// Each record's value is a slice of a 16 KiB buffer, as a record
		// decoded from a fetched batch is.
		batch := make([]byte, 16<<10)
		id := fmt.Sprintf("%036d-0123456789abcdef0123456789abcdef", i)
		hs := []kgo.RecordHeader{
			{Key: n0.CorrelationID, Value: []byte(id)},
			{Key: n0.MetaPrefix + "x-trace", Value: []byte("abcdefabcdef")},
		}
		recs = append(recs,
			&kgo.Record{Key: []byte(id), Value: batch[100:200], Headers: hs},
			&kgo.Record{Key: []byte(id), Headers: append(hs, kgo.RecordHeader{Key: n0.Status, Value: []byte("0")})},
		)
	}
	for _, rec := range recs {
		r.handle(rec)
	}
	recs = nil
	after := liveHeap()
	held := int64(after) - int64(before)
	t.Logf("%d replies: counted %d bytes, heap holds %d (%.2f×), %d B per call", 2*n, r.bytes, held, float64(held)/float64(r.bytes), held/n)
	if held > r.bytes*3/2 {
		t.Errorf("kept replies hold %d bytes of heap but count %d: max_cached_bytes would not bound memory", held, r.bytes)
	}
	if per := r.bytes / (2 * n); per > 1024 {
		t.Errorf("a kept reply of 100 bytes counts %d bytes: it holds on to the buffer it was read into", per)
	}
	if held < r.bytes/2 {
		t.Errorf("kept replies hold %d bytes of heap but count %d: the budget is spent on memory that is not used", held, r.bytes)
	}
	runtime.KeepAlive(r)
}

// TestReplayOnlyAnswers: a retry is answered from kept replies only when
// they end with a status that answers the call; transient statuses and
// streams that stopped without an end are dropped, so the retry is made
// again.
func TestReplayOnlyAnswers(t *testing.T) {
	n := config.DefaultHeaderNames()
	end := func(id string, code codes.Code) *kgo.Record {
		return &kgo.Record{Key: []byte(id), Headers: []kgo.RecordHeader{{Key: n.Status, Value: []byte(fmt.Sprint(int(code)))}}}
	}
	msg := func(id string) *kgo.Record { return &kgo.Record{Key: []byte(id), Value: []byte("m")} }
	for _, tc := range []struct {
		name   string
		recs   []*kgo.Record
		stale  time.Duration
		replay bool
	}{
		{"ok", []*kgo.Record{msg("a"), end("a", codes.OK)}, 0, true},
		{"not found", []*kgo.Record{msg("a"), end("a", codes.NotFound)}, 0, true},
		{"unavailable", []*kgo.Record{end("a", codes.Unavailable)}, 0, false},
		{"deadline", []*kgo.Record{msg("a"), end("a", codes.DeadlineExceeded)}, 0, false},
		{"aborted", []*kgo.Record{end("a", codes.Aborted)}, 0, false},
		{"resource exhausted", []*kgo.Record{end("a", codes.ResourceExhausted)}, 0, false},
		{"running", []*kgo.Record{msg("a")}, time.Hour, true},
		{"stopped", []*kgo.Record{msg("a")}, time.Nanosecond, false},
		// Read just now, by a reader that started, but written an hour ago.
		{"stopped long ago", []*kgo.Record{{Key: []byte("a"), Value: []byte("m"), Timestamp: time.Now().Add(-time.Hour)}}, time.Minute, false},
		{"written from the future", []*kgo.Record{{Key: []byte("a"), Value: []byte("m"), Timestamp: time.Now().Add(time.Hour)}}, time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testReader(1 << 30)
			for _, rec := range tc.recs {
				r.handle(rec)
			}
			time.Sleep(time.Millisecond) // past the nanosecond of "stopped"
			w, found := r.Subscribe("a", true, 16, tc.stale)
			defer w.Close()
			if found != tc.replay {
				t.Fatalf("found = %v, want %v", found, tc.replay)
			}
			got, _ := w.Take(nil)
			if !tc.replay && (len(got) != 0 || r.kept["a"] != nil || r.bytes != 0) {
				t.Errorf("after a retry that is made again: %d replies queued, kept %v, %d bytes counted; want none", len(got), r.kept["a"] != nil, r.bytes)
			}
			if tc.replay && len(got) != len(tc.recs) {
				t.Errorf("replayed %d replies, want %d", len(got), len(tc.recs))
			}
			// The retry's own replies are kept afresh.
			r.handle(msg("a"))
			if k := r.kept["a"]; k == nil || (!tc.replay && len(k.replies) != 1) {
				t.Errorf("the retry's reply was not kept on its own")
			}
		})
	}
}

func TestHeapFactor(t *testing.T) {
	for in, want := range map[string]float64{"": 2, "100": 2, "50": 1.5, "200": 3, "off": 1, "junk": 2, "-5": 2} {
		if got := heapFactor(in); got != want {
			t.Errorf("heapFactor(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestRuntimeCloseGivesUp: Close waits for the goroutines of calls, and
// when ctx ends first says how many it left running.
func TestRuntimeCloseGivesUp(t *testing.T) {
	rt := NewRuntime(context.Background(), slog.New(slog.DiscardHandler))
	release := make(chan struct{})
	rt.goCall(func() { <-release })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rt.Close(ctx); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "abandoning 1 goroutines") {
		t.Errorf("Close with its context ended: %v", err)
	}
	close(release)
	if err := rt.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
}
