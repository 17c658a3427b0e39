package app_test

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// writeRequest writes one unary request in Zilla's layout, as a front end
// does: the message and the null record ending the request stream, under
// correlation id id.
func writeRequest(t testing.TB, ctx context.Context, topic, replyTo, id, msg string) {
	t.Helper()
	hs := []kgo.RecordHeader{
		{Key: "zilla:service", Value: []byte("grpc.examples.echo.Echo")},
		{Key: "zilla:method", Value: []byte("UnaryEcho")},
		{Key: "zilla:reply-to", Value: []byte(replyTo)},
		{Key: "zilla:correlation-id", Value: []byte(id)},
	}
	prod := kit.Client(t, kgo.ProducerLinger(0))
	err := prod.ProduceSync(ctx,
		&kgo.Record{Topic: topic, Key: []byte(id), Value: echo(msg), Headers: hs},
		&kgo.Record{Topic: topic, Key: []byte(id), Headers: hs},
	).FirstErr()
	if err != nil {
		t.Fatalf("writing request %s: %v", id, err)
	}
}

// TestBackendSameIDAgain: a request written again with the correlation id
// of a call that already completed — a front end's same-key retry once it
// no longer holds the reply — is executed again and answered again, not
// skipped as a duplicate.
func TestBackendSameIDAgain(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo")
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	startFerry(t, fmt.Sprintf(`  []
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: g-%s
    session_timeout: 6s
    commit_interval: 100ms
`, req, srv.addr, req))
	ctx := testkit.Context(t, 30*time.Second)
	const id = "key-1-0"
	writeRequest(t, ctx, req, rep, id, "first")
	readTopic(t, rep, 2) // the response and the final reply
	writeRequest(t, ctx, req, rep, id, "again")
	recs := readTopic(t, rep, 4)
	var got []string
	for _, r := range recs {
		if r.Value != nil {
			got = append(got, unecho(r.Value))
		} else if st, _ := header(r, "zilla:status"); st != "0" {
			t.Errorf("final reply has status %q, want 0", st)
		}
	}
	if want := []string{"first", "again"}; !reflect.DeepEqual(got, want) {
		t.Errorf("responses = %q, want %q", got, want)
	}
	if calls, twice := srv.calls(); calls != 1 || twice != 1 {
		t.Errorf("server saw %d correlation ids, %d of them twice; want the one id twice", calls, twice)
	}
}

// TestBackendRetryElapsed: a server down for longer than the retry
// attempts and their backoff would last, but shorter than
// retry.max_elapsed, is waited for, and the call succeeds once it is up.
func TestBackendRetryElapsed(t *testing.T) {
	kit.CheckLeaks(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there yet
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	// Three attempts with at most 200 ms between them last well under a
	// second; the server stays down for three.
	a := startFerry(t, proxyConfig(t, req, rep, addr, `    retry: {max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 25s}
`))
	done := make(chan result, 1)
	go func() { done <- call(testkit.Context(t, 30*time.Second), dial(t, a), "UnaryEcho", nil, "patience") }()
	select {
	case res := <-done:
		t.Fatalf("call ended while the server was down: %q, %v", res.msgs, res.err)
	case <-time.After(3 * time.Second):
	}
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

// TestBackendRetryElapsedSpent: a server that keeps answering UNAVAILABLE
// is retried until retry.max_elapsed is spent, however many attempts
// max_attempts allows, and the error says how many attempts took how long.
func TestBackendRetryElapsedSpent(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo")
	srv.fail = func(string) error { return status.Error(codes.Unavailable, "still starting") }
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, proxyConfig(t, req, rep, srv.addr, `    retry: {max_attempts: 1000, initial_backoff: 10ms, max_backoff: 100ms, max_elapsed: 1s}
`))
	res := call(testkit.Context(t, 30*time.Second), dial(t, a), "UnaryEcho", nil, "hello")
	st := status.Convert(res.err)
	if st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), "still starting (after ") || !strings.Contains(st.Message(), " attempts in ") {
		t.Errorf("status = %v %q, want Unavailable %q", st.Code(), st.Message(), "still starting (after N attempts in D)")
	}
	if calls, _ := srv.calls(); calls != 1 {
		t.Errorf("server saw %d correlation ids, want 1", calls)
	}
}

// TestBackendServerNeverUp: a call to a server that never comes up waits
// for it until the call's deadline, shorter here than retry.max_elapsed,
// and then says so.
func TestBackendServerNeverUp(t *testing.T) {
	kit.CheckLeaks(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, proxyConfig(t, req, rep, addr, `    deadline: 2s
`))
	res := call(testkit.Context(t, 30*time.Second), dial(t, a), "UnaryEcho", nil, "anyone")
	st := status.Convert(res.err)
	t.Logf("reply: %v %q", st.Code(), st.Message())
	if st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), "no connection to the server before the call deadline (2s): ") ||
		!strings.Contains(st.Message(), "(after 1 attempt in ") {
		t.Errorf("status = %v %q, want Unavailable, no connection before the deadline, after 1 attempt", st.Code(), st.Message())
	}
}
