package app_test

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// countingBackend answers the n-th call it sees (from 1) with fn(n).
func countingBackend(t *testing.T, req string, fn func(n int, reqs []string) reply) *backend {
	var mu sync.Mutex
	n := 0
	return startBackend(t, req, func(reqs []string, _ map[string]string) reply {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		return fn(k, reqs)
	})
}

// TestRetryAfterTransientStatus: a call answered UNAVAILABLE and retried
// with the same idempotency-key is made again, not answered with the
// stored UNAVAILABLE: only final answers are replayed.
func TestRetryAfterTransientStatus(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	b := countingBackend(t, req, func(n int, reqs []string) reply {
		if n == 1 {
			return reply{code: int(codes.Unavailable), message: "server restarting"}
		}
		return reply{msgs: []string{fmt.Sprintf("%s#%d", reqs[0], n)}}
	})
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s}
`, req, rep))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	md := metadata.Pairs("idempotency-key", "order-7")
	first := call(ctx, cc, "UnaryEcho", md, "pay")
	if status.Code(first.err) != codes.Unavailable {
		t.Fatalf("first call: %v, want UNAVAILABLE", first.err)
	}
	second := call(ctx, cc, "UnaryEcho", md, "pay")
	if second.err != nil || !reflect.DeepEqual(second.msgs, []string{"pay#2"}) {
		t.Fatalf("retry = %q, %v; want [pay#2]: a transient status must not be replayed", second.msgs, second.err)
	}
	// The answer is final now: a further retry is replayed, not made again.
	third := call(ctx, cc, "UnaryEcho", md, "pay")
	if third.err != nil || !reflect.DeepEqual(third.msgs, []string{"pay#2"}) {
		t.Errorf("second retry = %q, %v; want the replayed [pay#2]", third.msgs, third.err)
	}
	if calls, _ := b.seen(); calls != 2 {
		t.Errorf("back end saw %d calls, want 2", calls)
	}
}

// TestRetryAfterLostFinalReply: when a call's replies stopped without a
// terminal record (the back end's final reply was lost), the call ends
// after the route's timeout, and a retry with the same idempotency-key is
// made again rather than waiting for the lost reply once more.
func TestRetryAfterLostFinalReply(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	b := countingBackend(t, req, func(n int, reqs []string) reply {
		return reply{msgs: []string{fmt.Sprintf("%s#%d", reqs[0], n)}, noEnd: n == 1}
	})
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 500ms}
`, req, rep))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	md := metadata.Pairs("idempotency-key", "order-8")
	first := call(ctx, cc, "ServerStreamingEcho", md, "ship")
	if status.Code(first.err) != codes.DeadlineExceeded || !reflect.DeepEqual(first.msgs, []string{"ship#1"}) {
		t.Fatalf("first call = %q, %v; want [ship#1] then DEADLINE_EXCEEDED", first.msgs, first.err)
	}
	// Past the route's timeout since the last reply, the kept replies are
	// no answer any more.
	time.Sleep(600 * time.Millisecond)
	second := call(ctx, cc, "ServerStreamingEcho", md, "ship")
	if second.err != nil || !reflect.DeepEqual(second.msgs, []string{"ship#2"}) {
		t.Fatalf("retry = %q, %v; want [ship#2] from a new execution", second.msgs, second.err)
	}
	if calls, _ := b.seen(); calls != 2 {
		t.Errorf("back end saw %d calls, want 2", calls)
	}
}

// TestRouteTimeoutIsIdleTime: the route's timeout bounds the time without
// a reply, not the whole call: a stream whose replies keep coming runs past
// it.
func TestRouteTimeoutIsIdleTime(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	const n = 8
	startBackend(t, req, func(reqs []string, _ map[string]string) reply {
		var msgs []string
		for i := range n {
			msgs = append(msgs, fmt.Sprint(i))
		}
		// n gaps of a quarter of the timeout: twice the timeout in all.
		return reply{msgs: msgs, gap: 250 * time.Millisecond}
	})
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 1s}
`, req, rep))
	res := call(testkit.Context(t, 30*time.Second), dial(t, a), "ServerStreamingEcho", nil, "tick")
	if res.err != nil || len(res.msgs) != n {
		t.Fatalf("stream = %d messages, %v; want %d and OK", len(res.msgs), res.err, n)
	}
}

// TestRouteTimeoutDefault: a route that names no timeout still ends a call
// whose answer never comes, although its client set no deadline.
func TestRouteTimeoutDefault(t *testing.T) {
	cfg, err := config.Parse("ferry.yaml", []byte(`
clusters: [{name: default, brokers: ["127.0.0.1:9092"]}]
protos: [{files: [echo.proto]}]
routes:
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: t, reply_to: r}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Routes[0].Produce.Timeout; got != 60*time.Second {
		t.Errorf("default route timeout = %s, want 60s", got)
	}
}
