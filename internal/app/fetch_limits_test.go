package app_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/fetch"
)

// dialSmallWindow dials a with a fixed 64 KiB flow-control window, so that
// a caller that does not read holds its server stream after 64 KiB (a
// grown window would take megabytes).
func dialSmallWindow(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestFetchCatchUpBound: with fetch.max_catch_up_readers: 1, a caller from
// the start that does not read holds the one catch-up reader; a second
// caller from the start rides the same reader (no second one starts) and
// gets every record; a third, once the reader's window moved past the
// start, waits fetch.catch_up_wait and gets RESOURCE_EXHAUSTED, not a
// reader of its own; once the first leaves, the next caller gets one.
func TestFetchCatchUpBound(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	// 4 MiB: more than a caller that does not read takes, and than the
	// catch-up reader's window.
	value := strings.Repeat("x", 8<<10)
	ms := make([]string, 512)
	for i := range ms {
		ms[i] = fmt.Sprintf("%03d%s", i, value)
	}
	for i := 0; i < len(ms); i += 64 {
		produceMsgs(t, prod, topic, "", nil, ms[i:i+64]...)
	}
	// A cache of 64 KiB cannot take it: callers from the start read on
	// a catch-up reader, whose window of 1 MiB holds what the first
	// caller took and what it reads ahead of it.
	a := startFerry(t, fetchRoute(topic, "      max_buffered_per_subscriber: 4\n")+`
fetch:
  cache: {max_bytes: 65536}
  max_catch_up_readers: 1
  catch_up_wait: 200ms
  catch_up_window_bytes: 1048576
`)
	holder := subscribe(t, dialSmallWindow(t, a.GRPCAddr()), nil)
	defer holder.cancel()
	waitFor(t, func() bool { return a.FetchStats().CatchUps == 1 }, "the first caller's catch-up reader")

	cc := dial(t, a)
	second := subscribe(t, cc, nil)
	defer second.cancel()
	for i, f := range second.take(t, len(ms)) {
		if f.msg[:3] != ms[i][:3] {
			t.Fatalf("second caller's message %d starts %.3q, want %.3q", i, f.msg, ms[i])
		}
	}
	if c := a.FetchCounts(); c.CatchUps != 1 {
		t.Errorf("%d catch-up readers started for two callers from the start, want 1", c.CatchUps)
	}

	third := subscribe(t, cc, nil)
	defer third.cancel()
	_, err := third.next()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "fetch.max_catch_up_readers") {
		t.Fatalf("third caller from the start: %v, want RESOURCE_EXHAUSTED naming fetch.max_catch_up_readers", err)
	}
	if n := a.FetchStats().CatchUps; n != 1 {
		t.Errorf("%d catch-up readers, want 1", n)
	}

	holder.cancel()
	waitFor(t, func() bool { return a.FetchStats().CatchUps == 0 }, "the first caller's reader to stop")
	fourth := subscribe(t, cc, nil)
	defer fourth.cancel()
	got := fourth.take(t, len(ms))
	if got[len(got)-1].msg != ms[len(ms)-1] {
		t.Errorf("fourth caller's last message starts %.3q, want %.3q", got[len(got)-1].msg, ms[len(ms)-1])
	}
}

// TestFetchHubStartsApart: while Kafka holds the offsets listing that
// starts one topic's hub, a caller of another topic gets its records, the
// fetch stats answer, and a second caller of the held topic waits for the
// same hub; the caller that started it leaving does not fail the ones
// waiting, and once Kafka answers they share one hub.
func TestFetchHubStartsApart(t *testing.T) {
	fake := kit.Fake(t)
	if fake == nil {
		t.Skip("holding a ListOffsets request back needs the embedded broker's control functions")
	}
	kit.CheckLeaks(t)
	held, free := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	produceMsgs(t, prod, held, "", nil, "h1", "h2")
	produceMsgs(t, prod, free, "", nil, "f1", "f2")

	var holding, seen atomic.Bool
	release := make(chan struct{})
	var once sync.Once
	unhold := func() { holding.Store(false); once.Do(func() { close(release) }) }
	t.Cleanup(unhold)
	holding.Store(true)
	fake.ControlKey(kmsg.ListOffsets.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		req := kr.(*kmsg.ListOffsetsRequest)
		if !holding.Load() || len(req.Topics) == 0 || req.Topics[0].Topic != held {
			return nil, nil, false
		}
		seen.Store(true)
		fake.SleepControl(func() { <-release })
		return nil, nil, false
	})
	cfg := ferryConfig(t, fmt.Sprintf(`
  - when: [{method: example.FanoutService/FanoutServerStream, metadata: {x-topic: held}}]
    fetch: {topic: %s}
  - when: [{method: example.FanoutService/FanoutServerStream}]
    fetch: {topic: %s}
`, held, free))
	// The held topic on a cluster of its own (the same broker): a broker
	// answers one connection's requests in order, and another cluster, or
	// another broker leading the other topic, has connections of its own.
	slow := cfg.Clusters[0]
	slow.Name = "slow"
	cfg.Clusters = append(cfg.Clusters, slow)
	cfg.Routes[0].Fetch.Cluster = "slow"
	a := startConfig(t, cfg)
	cc := dial(t, a)
	heldMD := metadata.Pairs("x-topic", "held")
	type result struct {
		msgs []string
		err  error
	}
	first := func(s *subscription) <-chan result {
		out := make(chan result, 1)
		go func() {
			var r result
			for len(r.msgs) < 2 && r.err == nil {
				var f fetched
				if f, r.err = s.next(); r.err == nil {
					r.msgs = append(r.msgs, f.msg)
				}
			}
			out <- r
		}()
		return out
	}
	h1 := subscribe(t, cc, heldMD)
	defer h1.cancel()
	h1got := first(h1)
	waitFor(t, seen.Load, "the held topic's offsets listing")

	f := subscribe(t, cc, nil)
	defer f.cancel()
	select {
	case r := <-first(f):
		if r.err != nil || strings.Join(r.msgs, ",") != "f1,f2" {
			t.Fatalf("caller of the other topic: %v, %v; want f1,f2", r.msgs, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a caller of another topic got nothing in 10 s while one topic's hub was starting")
	}
	stats := make(chan fetch.Stats, 1)
	go func() { stats <- a.FetchStats() }()
	select {
	case st := <-stats:
		if st.Hubs != 1 {
			t.Errorf("stats while one hub starts: %+v, want 1 hub", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch stats did not answer while a hub was starting")
	}

	// Two more callers of the held topic wait for its hub; the one that
	// started it leaves, and one of them starts it again.
	h2, h3 := subscribe(t, cc, heldMD), subscribe(t, cc, heldMD)
	defer h2.cancel()
	defer h3.cancel()
	h2got, h3got := first(h2), first(h3)
	time.Sleep(100 * time.Millisecond)
	h1.cancel()
	if r := <-h1got; status.Code(r.err) != codes.Canceled {
		t.Errorf("the caller that left: %v, %v; want Canceled", r.msgs, r.err)
	}
	time.Sleep(100 * time.Millisecond)
	unhold()
	for i, got := range []<-chan result{h2got, h3got} {
		r := <-got
		if r.err != nil || strings.Join(r.msgs, ",") != "h1,h2" {
			t.Errorf("caller %d of the held topic: %v, %v; want h1,h2", i+2, r.msgs, r.err)
		}
	}
	if st := a.FetchStats(); st.Hubs != 2 || st.Subscribers != 3 {
		t.Errorf("stats %+v, want 2 hubs and 3 subscribers", st)
	}
}
