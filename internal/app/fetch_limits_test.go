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
// behind holds the one catch-up reader while it reads; a second caller
// from behind waits fetch.catch_up_wait for it and then gets
// RESOURCE_EXHAUSTED, not a reader of its own; once the first leaves, the
// next caller gets the reader.
func TestFetchCatchUpBound(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	// 1 MiB behind the end: more than a caller that does not read takes.
	value := strings.Repeat("x", 8<<10)
	ms := make([]string, 128)
	for i := range ms {
		ms[i] = fmt.Sprintf("%03d%s", i, value)
	}
	produceMsgs(t, prod, topic, "", nil, ms...)
	// A cache of 64 KiB cannot take the 1 MiB: callers from the start
	// read on catch-up readers.
	a := startFerry(t, fetchRoute(topic, "")+`
fetch:
  cache: {max_bytes: 65536}
  max_catch_up_readers: 1
  catch_up_wait: 200ms
`)
	holder := subscribe(t, dialSmallWindow(t, a.GRPCAddr()), nil)
	defer holder.cancel()
	waitFor(t, func() bool { return a.FetchStats().CatchUps == 1 }, "the first caller's catch-up reader")

	cc := dial(t, a)
	second := subscribe(t, cc, nil)
	defer second.cancel()
	_, err := second.next()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "fetch.max_catch_up_readers") {
		t.Fatalf("second caller from behind: %v, want RESOURCE_EXHAUSTED naming fetch.max_catch_up_readers", err)
	}
	if n := a.FetchStats().CatchUps; n != 1 {
		t.Errorf("%d catch-up readers, want 1", n)
	}

	holder.cancel()
	waitFor(t, func() bool { return a.FetchStats().CatchUps == 0 }, "the first caller's reader to stop")
	third := subscribe(t, cc, nil)
	defer third.cancel()
	got := third.take(t, len(ms))
	if got[len(got)-1].msg != ms[len(ms)-1] {
		t.Errorf("third caller's last message starts %.3q, want %.3q", got[len(got)-1].msg, ms[len(ms)-1])
	}
}
