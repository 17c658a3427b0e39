package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestShutdownUnderLoad stops a Ferry that serves a produce route and its
// back end while many calls are in flight. The calls running finish; the
// ones that cannot within listeners.grpc.shutdown_timeout are cancelled;
// calls arriving meanwhile are refused with UNAVAILABLE and the reason.
// No call is lost silently: every call the client saw succeed has its
// request in Kafka, every other failed with UNAVAILABLE or CANCELLED.
// Close returns within shutdown.timeout.
func TestShutdownUnderLoad(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo")
	srv.delay = 300 * time.Millisecond
	// The slow calls outlast the graceful stop: they keep the listeners
	// open for its whole length, then are cancelled.
	srv.block = func(ctx context.Context, msg string) error {
		if strings.HasPrefix(msg, "slow") {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	req, rep := kit.Topic(t, 4, nil), kit.Topic(t, 4, nil)
	cfg := ferryConfig(t, proxyConfig(t, req, rep, srv.addr, "shutdown: {timeout: 8s}"))
	a := startConfig(t, cfg)
	waitGroupMembers(t, "g-"+req, 1)
	cc := dial(t, a)
	ctx := testkit.Context(t, 60*time.Second)

	var (
		mu      sync.Mutex
		results = map[string]error{}
		calls   sync.WaitGroup
	)
	send := func(msg string) {
		calls.Go(func() {
			res := call(ctx, cc, "UnaryEcho", nil, msg)
			if res.err == nil && (len(res.msgs) != 1 || res.msgs[0] != msg) {
				res.err = fmt.Errorf("replies %q, want one %q", res.msgs, msg)
			}
			mu.Lock()
			results[msg] = res.err
			mu.Unlock()
		})
	}
	const n, slow, late = 60, 3, 10
	for i := range slow {
		send(fmt.Sprintf("slow%d", i))
	}
	for i := range n {
		send(fmt.Sprintf("m%d", i))
	}
	// Stop once the back end's server runs some of them.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if seen, _ := srv.calls(); seen >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server saw fewer than 20 calls")
		}
	}
	bound := cfg.Shutdown.Bound(cfg.Listeners.GRPC.ShutdownTimeout)
	closed := make(chan time.Duration, 1)
	go func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		start := time.Now()
		a.Close(closeCtx)
		closed <- time.Since(start)
	}()
	for !a.Stopping() {
		time.Sleep(time.Millisecond)
	}
	for i := range late {
		send(fmt.Sprintf("late%d", i))
	}
	calls.Wait()
	took := <-closed
	if took > bound+time.Second {
		t.Errorf("Close took %s, beyond shutdown.timeout %s", took, bound)
	}

	var ok []string
	for msg, err := range results {
		switch code := status.Code(err); {
		case err == nil:
			ok = append(ok, msg)
			if !strings.HasPrefix(msg, "m") {
				t.Errorf("%s succeeded; want it refused or cancelled", msg)
			}
		case strings.HasPrefix(msg, "m"):
			t.Errorf("%s, in flight as the stop began, failed: %v; want it finished", msg, err)
		case strings.HasPrefix(msg, "late"):
			if code != codes.Unavailable || !strings.Contains(err.Error(), "Ferry is shutting down: retry on another instance") {
				t.Errorf("%s, sent while stopping: %v; want UNAVAILABLE saying Ferry is shutting down", msg, err)
			}
		case code != codes.Unavailable && code != codes.Canceled:
			t.Errorf("%s failed with %v; want UNAVAILABLE or CANCELLED", msg, err)
		}
	}
	if len(ok) != n {
		t.Errorf("%d calls succeeded, want the %d in flight", len(ok), n)
	}
	written := map[string]bool{}
	for _, r := range readTopic(t, req, int(endOffset(t, req))) {
		written[unecho(r.Value)] = true
	}
	for _, msg := range ok {
		if !written[msg] {
			t.Errorf("%s succeeded but its request is not in %s", msg, req)
		}
	}
	t.Logf("Close took %s (bound %s); %d calls succeeded", took, bound, len(ok))
}
