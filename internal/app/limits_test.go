package app_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestRequestSizeLimit checks the one request size limit: a request message
// over listeners.grpc.max_recv_message_size fails when it arrives with
// RESOURCE_EXHAUSTED giving the limit (grpc-go's text, which README and
// CONFIG.md quote), and writes nothing to Kafka, while a
// message of exactly the limit goes through Kafka and back (the producers'
// batch limit and the broker's default message.max.bytes both hold it).
func TestRequestSizeLimit(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - name: echo
    when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 60s}
`, topic, topic))
	cc := dial(t, a)
	ctx := testkit.Context(t, 60*time.Second)

	// echo(s) adds a tag byte and a 3-byte length to s.
	limit := config.DefaultMaxRecvMessageSize
	for _, size := range []int{2 << 20, limit + 1} {
		res := call(ctx, cc, "UnaryEcho", nil, strings.Repeat("x", size-4))
		st := status.Convert(res.err)
		want := fmt.Sprintf("grpc: received message larger than max (%d vs. %d)", size, limit)
		if st.Code() != codes.ResourceExhausted || st.Message() != want {
			t.Errorf("a %d-byte request: %v; want RESOURCE_EXHAUSTED %q", size, res.err, want)
		}
	}
	if n := endOffset(t, topic); n != 0 {
		t.Fatalf("the refused requests wrote %d records to %s", n, topic)
	}

	want := strings.Repeat("y", limit-4)
	res := call(ctx, cc, "UnaryEcho", nil, want)
	if res.err != nil || len(res.msgs) != 1 || res.msgs[0] != want {
		t.Fatalf("a request of exactly the limit (%d bytes): %d responses, %v; want it echoed", limit, len(res.msgs), res.err)
	}
}

// TestBackendResponseOverLimit: a server response larger than the size
// limit fails the call with RESOURCE_EXHAUSTED, which the caller sees; it
// had been refused by the reply producer, logged, and the call answered as
// if complete.
func TestBackendResponseOverLimit(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo")
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	front := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s}
`, req, rep))
	// The back end runs with a smaller limit than the front end, so a
	// request the front end takes comes back as a response over it.
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "backend.yaml"), []byte(fmt.Sprintf(`
clusters: [{name: default%s}]
listeners: {grpc: {address: "127.0.0.1:0", max_recv_message_size: 4096}}
log: {level: warn}
backends:
  - name: echo
    topic: %s
    target: %s
`, kit.ClusterYAML(t), req, srv.addr)))
	if err != nil {
		t.Fatal(err)
	}
	startConfig(t, cfg)
	cc := dial(t, front)
	ctx := testkit.Context(t, 60*time.Second)
	res := call(ctx, cc, "UnaryEcho", nil, strings.Repeat("z", 8000))
	if st := status.Convert(res.err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
		t.Errorf("a response over the back end's limit: %d messages, %v; want RESOURCE_EXHAUSTED naming the sizes", len(res.msgs), res.err)
	}
	if res := call(ctx, cc, "UnaryEcho", nil, "small"); res.err != nil || len(res.msgs) != 1 {
		t.Errorf("a small call after it: %q, %v; want it answered", res.msgs, res.err)
	}
}
