package app_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
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
