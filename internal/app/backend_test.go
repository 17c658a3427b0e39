package app_test

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echopb "github.com/ferryproxy/ferry/examples/proxy/echo"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// echoServer is a real gRPC server for back-end tests: the example's echo
// server, counting the calls it sees by correlation id, with optional
// failures and delays.
type echoServer struct {
	echopb.Server
	addr string

	mu    sync.Mutex
	seen  map[string]int // correlation id → times called
	fail  func(msg string) error
	delay time.Duration
	// block, if set, runs before fail with the call's context; an error
	// it returns is the call's.
	block func(ctx context.Context, msg string) error
}

func startEchoServer(t testing.TB, name string) *echoServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveEcho(t, name, lis)
}

func serveEcho(t testing.TB, name string, lis net.Listener) *echoServer {
	s := &echoServer{Server: echopb.Server{Name: name}, addr: lis.Addr().String(), seen: map[string]int{}}
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.count(ctx)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			s.count(ss.Context())
			return h(srv, ss)
		}))
	echopb.RegisterEchoServer(gs, s)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return s
}

func (s *echoServer) count(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range md.Get("ferry-correlation-id") {
		s.seen[id]++
	}
}

func (s *echoServer) calls() (calls, twice int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.seen {
		calls++
		if n > 1 {
			twice++
		}
	}
	return calls, twice
}

func (s *echoServer) UnaryEcho(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	s.mu.Lock()
	fail, delay, block := s.fail, s.delay, s.block
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if block != nil {
		if err := block(ctx, req.GetMessage()); err != nil {
			return nil, err
		}
	}
	if fail != nil {
		if err := fail(req.GetMessage()); err != nil {
			return nil, err
		}
	}
	return s.Server.UnaryEcho(ctx, req)
}

// proxyConfig is a front-end route and a back end over two fresh topics,
// calling target.
func proxyConfig(t testing.TB, req, rep, target, extra string) string {
	return fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 60s}
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: %s
    session_timeout: 6s
    commit_interval: 100ms
    drain_timeout: 2s
%s`, req, rep, req, target, "g-"+req, extra)
}

// TestProxyRPCKinds: each kind of RPC from a gRPC client through Ferry,
// Kafka, Ferry's back end, to a real gRPC server and back.
func TestProxyRPCKinds(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	req, rep := kit.Topic(t, 2, nil), kit.Topic(t, 2, nil)
	a := startFerry(t, proxyConfig(t, req, rep, srv.addr, ""))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	var ten []string
	for i := 0; i < 10; i++ {
		ten = append(ten, fmt.Sprintf("s %d", i))
	}
	for _, tc := range []struct {
		method     string
		reqs, want []string
	}{
		{"UnaryEcho", []string{"hi"}, []string{"hi"}},
		{"ServerStreamingEcho", []string{"s"}, ten},
		{"ClientStreamingEcho", []string{"a", "b", "c"}, []string{"a,b,c"}},
		{"BidirectionalStreamingEcho", []string{"x", "y", "z"}, []string{"x", "y", "z"}},
	} {
		res := call(ctx, cc, tc.method, metadata.Pairs("x-trace", "t-1"), tc.reqs...)
		if res.err != nil || !reflect.DeepEqual(res.msgs, tc.want) {
			t.Errorf("%s(%q) = %q, %v; want %q", tc.method, tc.reqs, res.msgs, res.err, tc.want)
		}
		if got := res.header.Get("x-echo-server"); len(got) != 1 || got[0] != "echo-1" {
			t.Errorf("%s: response header x-echo-server = %q, want [echo-1]", tc.method, got)
		}
	}
	if calls, twice := srv.calls(); calls != 4 || twice != 0 {
		t.Errorf("server saw %d calls, %d twice; want 4 once each", calls, twice)
	}
}

// TestProxyExample starts examples/proxy with its echo server and calls it.
func TestProxyExample(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echoserver")
	t.Setenv("ECHO_SERVER", srv.addr)
	cfg := loadExample(t, "proxy")
	cfg.Backends[0].SessionTimeout = 6 * time.Second
	a := startConfig(t, cfg)
	res := call(testkit.Context(t, 30*time.Second), dial(t, a), "ServerStreamingEcho", nil, "Hello")
	if res.err != nil || len(res.msgs) != 10 || res.msgs[9] != "Hello 9" {
		t.Errorf("ServerStreamingEcho = %q, %v; want 10 echoes", res.msgs, res.err)
	}
}

// TestBackendErrorStatus: the server's status and message reach the client.
func TestBackendErrorStatus(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	srv.fail = func(msg string) error { return status.Errorf(codes.PermissionDenied, "no entry for %s", msg) }
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, proxyConfig(t, req, rep, srv.addr, ""))
	res := call(testkit.Context(t, 30*time.Second), dial(t, a), "UnaryEcho", nil, "bob")
	if st := status.Convert(res.err); st.Code() != codes.PermissionDenied || st.Message() != "no entry for bob" {
		t.Errorf("status = %v %q, want PermissionDenied %q", st.Code(), st.Message(), "no entry for bob")
	}
}

// TestBackendDownThenUp: a call to a server that is down is retried with
// backoff and succeeds once the server is up.
func TestBackendDownThenUp(t *testing.T) {
	kit.CheckLeaks(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there yet
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, proxyConfig(t, req, rep, addr, `    retry: {max_attempts: 20, initial_backoff: 50ms, max_backoff: 500ms}
`))
	done := make(chan result, 1)
	go func() { done <- call(testkit.Context(t, 30*time.Second), dial(t, a), "UnaryEcho", nil, "patience") }()
	time.Sleep(1500 * time.Millisecond)
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", addr, err)
	}
	srv := serveEcho(t, "late", lis)
	res := <-done
	if res.err != nil || !reflect.DeepEqual(res.msgs, []string{"patience"}) {
		t.Errorf("call = %q, %v; want it to succeed once the server is up", res.msgs, res.err)
	}
	if calls, _ := srv.calls(); calls != 1 {
		t.Errorf("server saw %d calls, want 1", calls)
	}
}

// TestBackendPoison: a request the server always rejects as UNAVAILABLE gets
// an error reply after the retry budget, and the partition moves on.
func TestBackendPoison(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	srv.fail = func(msg string) error {
		if msg == "poison" {
			return status.Error(codes.Unavailable, "cannot digest poison")
		}
		return nil
	}
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, proxyConfig(t, req, rep, srv.addr, `    retry: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}
`))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	res := call(ctx, cc, "UnaryEcho", nil, "poison")
	if st := status.Convert(res.err); st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), "cannot digest poison (after 3 attempts in ") {
		t.Errorf("poison call: %v %q, want Unavailable after 3 attempts", st.Code(), st.Message())
	}
	res = call(ctx, cc, "UnaryEcho", nil, "fine")
	if res.err != nil || !reflect.DeepEqual(res.msgs, []string{"fine"}) {
		t.Errorf("the call after the poison = %q, %v", res.msgs, res.err)
	}
	// Both requests are committed: the group's offset is past them.
	waitCommitted(t, "g-"+req, req, 4)
}

// waitCommitted waits until group's committed offsets on topic add up to n.
func waitCommitted(t testing.TB, group, topic string, n int64) {
	t.Helper()
	adm := kadmClient(t)
	deadline := time.Now().Add(15 * time.Second)
	var got int64
	for time.Now().Before(deadline) {
		offs, err := adm.FetchOffsets(context.Background(), group)
		if err == nil {
			got = 0
			for _, ps := range offs {
				for _, o := range ps {
					if o.Topic == topic {
						got += o.At
					}
				}
			}
			if got == n {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("group %s committed %d records of %s, want %d", group, got, topic, n)
}

// TestBackendGroupSplit: two back-end instances in one group split the
// partitions, and every request is executed once.
func TestBackendGroupSplit(t *testing.T) {
	kit.CheckLeaks(t)
	s1, s2 := startEchoServer(t, "one"), startEchoServer(t, "two")
	req, rep := kit.Topic(t, 4, nil), kit.Topic(t, 4, nil)
	front := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 60s}
`, req, rep))
	backendOnly := func(target string) *app.App {
		return startFerry(t, fmt.Sprintf(`  []
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: g-%s
    session_timeout: 6s
    commit_interval: 100ms
`, req, target, req))
	}
	backendOnly(s1.addr)
	backendOnly(s2.addr)
	waitGroupMembers(t, "g-"+req, 2)
	cc := dial(t, front)
	ctx := testkit.Context(t, 60*time.Second)
	const n = 100
	wait := unaryMany(t, ctx, cc, n)
	wait()
	c1, d1 := s1.calls()
	c2, d2 := s2.calls()
	t.Logf("instance one served %d calls, instance two %d", c1, c2)
	if c1+c2 != n || d1+d2 != 0 {
		t.Errorf("servers saw %d+%d calls (%d+%d twice), want %d once each", c1, c2, d1, d2, n)
	}
	if c1 == 0 || c2 == 0 {
		t.Errorf("one instance served nothing (%d, %d): the partitions were not split", c1, c2)
	}
}

// TestBackendGracefulLeave: a back-end instance that shuts down while its
// calls are in flight lets them finish (drain) and commits them, so the
// instance taking over its partitions redoes nothing.
func TestBackendGracefulLeave(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo")
	srv.delay = 100 * time.Millisecond
	req, rep := kit.Topic(t, 4, nil), kit.Topic(t, 4, nil)
	front := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 60s}
`, req, rep))
	backendOnly := fmt.Sprintf(`  []
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: g-%s
    session_timeout: 6s
    commit_interval: 100ms
    concurrency: 4
    drain_timeout: 10s
`, req, srv.addr, req)
	leaving := startFerry(t, backendOnly)
	startFerry(t, backendOnly)
	waitGroupMembers(t, "g-"+req, 2)

	cc := dial(t, front)
	ctx := testkit.Context(t, 60*time.Second)
	const n = 40
	wait := unaryMany(t, ctx, cc, n)
	time.Sleep(300 * time.Millisecond)
	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	leaving.Close(closeCtx)
	cancel()
	wait()
	calls, twice := srv.calls()
	if calls != n || twice != 0 {
		t.Errorf("server saw %d requests, %d twice; want %d once each (a graceful leave drains and commits)", calls, twice, n)
	}
}

// TestBackendSlowServer: a server slower than the requests arrive makes the
// back end pause reading, and every call still completes once: a pause
// never strands a call that needs its next record.
func TestBackendSlowServer(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "slow")
	srv.delay = 20 * time.Millisecond
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, proxyConfig(t, req, rep, srv.addr, `    concurrency: 1
    max_pending_calls: 5
`))
	wait := unaryMany(t, testkit.Context(t, 15*time.Second), dial(t, a), 60)
	wait()
	st := a.BackendStats()["echo"]
	t.Logf("reading paused %d times; at most %d calls waited for the one slot", st.Pauses, st.PeakWaiting)
	if st.Pauses == 0 {
		t.Errorf("stats = %+v, want reading paused", st)
	}
	if calls, twice := srv.calls(); calls != 60 || twice != 0 {
		t.Errorf("server saw %d calls, %d twice; want 60 once each", calls, twice)
	}
}
