package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestEchoExample runs examples/echo as the README does and calls each of
// its four methods.
func TestEchoExample(t *testing.T) {
	kit.CheckLeaks(t)
	a := startConfig(t, loadExample(t, "echo"))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)

	for _, tc := range []struct {
		method string
		reqs   []string
		want   []string
	}{
		{"UnaryEcho", []string{"Hello World"}, []string{"Hello World"}},
		{"ServerStreamingEcho", []string{"Hello"}, []string{"Hello"}},
		{"ClientStreamingEcho", []string{"one"}, []string{"one"}},
		{"BidirectionalStreamingEcho", []string{"a", "b", "c"}, []string{"a", "b", "c"}},
	} {
		res := call(ctx, cc, tc.method, nil, tc.reqs...)
		if res.err != nil || !reflect.DeepEqual(res.msgs, tc.want) {
			t.Errorf("%s(%q) = %q, %v; want %q", tc.method, tc.reqs, res.msgs, res.err, tc.want)
		}
	}
	if n := a.PendingReplies(); n != 0 {
		t.Errorf("%d calls still wait for replies", n)
	}
}

// TestRPCKinds calls each kind of RPC through a back end that answers in
// Zilla's reply layout, with response metadata.
func TestRPCKinds(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	startBackend(t, req, func(reqs []string, md map[string]string) reply {
		out := reply{meta: map[string]string{"x-backend": "kafka"}}
		switch md["x-kind"] {
		case "server":
			for i := 0; i < 3; i++ {
				out.msgs = append(out.msgs, fmt.Sprintf("%s-%d", reqs[0], i))
			}
		case "client":
			out.msgs = []string{strings.Join(reqs, "+")}
		default:
			for _, r := range reqs {
				out.msgs = append(out.msgs, strings.ToUpper(r))
			}
		}
		return out
	})
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 20s}
`, req, rep))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	for _, tc := range []struct {
		method, kind string
		reqs, want   []string
	}{
		{"UnaryEcho", "unary", []string{"hi"}, []string{"HI"}},
		{"ServerStreamingEcho", "server", []string{"s"}, []string{"s-0", "s-1", "s-2"}},
		{"ClientStreamingEcho", "client", []string{"a", "b", "c"}, []string{"a+b+c"}},
		{"BidirectionalStreamingEcho", "bidi", []string{"x", "y"}, []string{"X", "Y"}},
		// A unary request to a streaming method, and a streamed request to a
		// unary method: the call is carried by what the client sends.
		{"BidirectionalStreamingEcho", "bidi", []string{"solo"}, []string{"SOLO"}},
		{"UnaryEcho", "client", []string{"p", "q"}, []string{"p+q"}},
	} {
		res := call(ctx, cc, tc.method, metadata.Pairs("x-kind", tc.kind), tc.reqs...)
		if res.err != nil || !reflect.DeepEqual(res.msgs, tc.want) {
			t.Errorf("%s(%q) = %q, %v; want %q", tc.method, tc.reqs, res.msgs, res.err, tc.want)
		}
		if got := res.header.Get("x-backend"); len(got) != 1 || got[0] != "kafka" {
			t.Errorf("%s: response header x-backend = %q, want [kafka]", tc.method, got)
		}
	}
}

// TestRecordLayout is the golden test of the request records: key, header
// names, order and values, and the null terminator, read back with a plain
// franz-go consumer.
func TestRecordLayout(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	startBackend(t, req, func(reqs []string, _ map[string]string) reply { return reply{msgs: reqs} })
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce:
      topic: %s
      reply_to: %s
      overrides: {zilla:identity: test, tenant: blue}
`, req, rep))
	cc := dial(t, a)
	md := metadata.Pairs(
		"idempotency-key", "59410e57-3e0f-4b61-9328-f645a7968ac8",
		"x-trace", "t1",
		"x-multi", "one", "x-multi", "two",
		"x-raw-bin", string([]byte{0, 1, 2, 0xfe}),
		"authorization", "Bearer secret",
	)
	res := call(testkit.Context(t, 20*time.Second), cc, "UnaryEcho", md, "golden")
	if res.err != nil || len(res.msgs) != 1 || res.msgs[0] != "golden" {
		t.Fatalf("call = %q, %v", res.msgs, res.err)
	}
	recs := readTopic(t, req, 2)
	// The correlation id follows Zilla's algorithm: the idempotency key,
	// then the md5 of the service, method and reply-to header names and
	// values and the override values.
	id := "59410e57-3e0f-4b61-9328-f645a7968ac8-" + md5hex(
		"zilla:service"+"grpc.examples.echo.Echo"+"zilla:method"+"UnaryEcho"+"zilla:reply-to"+rep+"test"+"blue")
	want := []kgo.RecordHeader{
		{Key: "zilla:identity", Value: []byte("test")},
		{Key: "tenant", Value: []byte("blue")},
		{Key: "zilla:service", Value: []byte("grpc.examples.echo.Echo")},
		{Key: "zilla:method", Value: []byte("UnaryEcho")},
		{Key: "zilla:reply-to", Value: []byte(rep)},
		{Key: "zilla:correlation-id", Value: []byte(id)},
		{Key: "meta:idempotency-key", Value: []byte("59410e57-3e0f-4b61-9328-f645a7968ac8")},
		{Key: "meta:x-multi", Value: []byte("one")},
		{Key: "meta:x-multi", Value: []byte("two")},
		{Key: "meta:x-raw-bin", Value: []byte(base64.RawStdEncoding.EncodeToString([]byte{0, 1, 2, 0xfe}))},
		{Key: "meta:x-trace", Value: []byte("t1")},
	}
	for i, r := range recs {
		if string(r.Key) != id {
			t.Errorf("record %d key = %q, want the correlation id %q", i, r.Key, id)
		}
		if !reflect.DeepEqual(r.Headers, want) {
			t.Errorf("record %d headers:\n got %s\nwant %s", i, fmtHeaders(r.Headers), fmtHeaders(want))
		}
	}
	if got := recs[0].Value; string(got) != string(echo("golden")) {
		t.Errorf("first record value = %x, want the request's protobuf bytes %x", got, echo("golden"))
	}
	if recs[1].Value != nil {
		t.Errorf("second record value = %x, want null (end of request stream)", recs[1].Value)
	}
}

func fmtHeaders(hs []kgo.RecordHeader) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "\n  %s=%q", h.Key, h.Value)
	}
	return b.String()
}

// TestErrorStatus: a back end's terminal status and message reach the
// client, with the reply's meta: headers as response headers.
func TestErrorStatus(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	startBackend(t, req, func(reqs []string, _ map[string]string) reply {
		return reply{code: int(codes.NotFound), message: "no user " + reqs[0], meta: map[string]string{"x-why": "lookup"}}
	})
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s}
`, req, rep))
	res := call(testkit.Context(t, 20*time.Second), dial(t, a), "UnaryEcho", nil, "bob")
	st := status.Convert(res.err)
	if st.Code() != codes.NotFound || st.Message() != "no user bob" {
		t.Errorf("status = %v %q, want NotFound %q", st.Code(), st.Message(), "no user bob")
	}
	if got := res.header.Get("x-why"); len(got) != 1 || got[0] != "lookup" {
		t.Errorf("response header x-why = %q, want [lookup]", got)
	}
}

// TestReplyTimeout: with no back end, the route's timeout ends the call
// with DEADLINE_EXCEEDED and the call's waiter is gone.
func TestReplyTimeout(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 300ms}
`, req, rep))
	res := call(testkit.Context(t, 20*time.Second), dial(t, a), "UnaryEcho", nil, "anyone?")
	st := status.Convert(res.err)
	if st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), rep) {
		t.Errorf("status = %v %q, want DeadlineExceeded naming the reply topic", st.Code(), st.Message())
	}
	if n := a.PendingReplies(); n != 0 {
		t.Errorf("%d calls still wait for replies after the timeout", n)
	}
}

// TestClientCancel: a client that cancels mid-stream gets its request
// stream ended with a null record, and nothing of the call is left behind.
func TestClientCancel(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s}
`, req, rep))
	cc := dial(t, a)
	ctx, cancel := context.WithCancel(testkit.Context(t, 20*time.Second))
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, echoSvc+"BidirectionalStreamingEcho")
	if err != nil {
		t.Fatal(err)
	}
	b := echo("first")
	if err := s.SendMsg(&b); err != nil {
		t.Fatal(err)
	}
	// Wait until the request record is in Kafka, then walk away.
	readTopic(t, req, 1)
	cancel()
	recs := readTopic(t, req, 2)
	if recs[1].Value != nil || string(recs[1].Key) != string(recs[0].Key) {
		t.Errorf("after cancel: record 2 = key %q value %x, want a null record with the call's key %q", recs[1].Key, recs[1].Value, recs[0].Key)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.PendingReplies() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.PendingReplies(); n != 0 {
		t.Errorf("%d calls still wait for replies after the client cancelled", n)
	}
}

// TestOneWay: a route without reply topic writes only overrides and meta:
// headers, no null record, and answers one empty message once Kafka took
// the records.
func TestOneWay(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/ClientStreamingEcho}]
    produce: {topic: %s, overrides: {source: ferry}}
`, topic))
	res := call(testkit.Context(t, 20*time.Second), dial(t, a), "ClientStreamingEcho", metadata.Pairs("x-id", "7"), "m1", "m2")
	if res.err != nil || !reflect.DeepEqual(res.msgs, []string{""}) {
		t.Fatalf("one-way call = %q, %v; want one empty message and OK", res.msgs, res.err)
	}
	recs := readTopic(t, topic, 2)
	want := []kgo.RecordHeader{{Key: "source", Value: []byte("ferry")}, {Key: "meta:x-id", Value: []byte("7")}}
	for i, r := range recs {
		if !reflect.DeepEqual(r.Headers, want) || r.Value == nil {
			t.Errorf("record %d: value %x headers %s; want a value and%s", i, r.Value, fmtHeaders(r.Headers), fmtHeaders(want))
		}
	}
	if n := endOffset(t, topic); n != 2 {
		t.Errorf("topic holds %d records, want 2 (no null record on one-way routes)", n)
	}
}

// TestIdempotentReplay: a call retried with the same idempotency-key gets
// the stored replies again without the request being written twice.
func TestIdempotentReplay(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	b := countingBackend(t, req, func(n int, reqs []string) reply {
		return reply{msgs: []string{fmt.Sprintf("%s#%d", reqs[0], n)}}
	})
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s}
`, req, rep))
	cc := dial(t, a)
	ctx := testkit.Context(t, 20*time.Second)
	md := metadata.Pairs("idempotency-key", "order-42")
	first := call(ctx, cc, "UnaryEcho", md, "pay")
	second := call(ctx, cc, "UnaryEcho", md, "pay")
	other := call(ctx, cc, "UnaryEcho", metadata.Pairs("idempotency-key", "order-43"), "pay")
	if first.err != nil || second.err != nil || other.err != nil {
		t.Fatalf("calls failed: %v, %v, %v", first.err, second.err, other.err)
	}
	if !reflect.DeepEqual(first.msgs, []string{"pay#1"}) || !reflect.DeepEqual(second.msgs, first.msgs) {
		t.Errorf("first = %q, retry = %q; want the retry to replay [pay#1]", first.msgs, second.msgs)
	}
	if !reflect.DeepEqual(other.msgs, []string{"pay#2"}) {
		t.Errorf("another key = %q, want [pay#2]", other.msgs)
	}
	if calls, _ := b.seen(); calls != 2 {
		t.Errorf("back end saw %d calls, want 2", calls)
	}
	if got := endOffset(t, req); got != 4 {
		t.Errorf("request topic holds %d records, want 4 (the retry must not be written again)", got)
	}

	// Another Ferry instance, started later, replays the same replies from
	// the reply topic.
	a2 := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s}
`, req, rep))
	third := call(ctx, dial(t, a2), "UnaryEcho", md, "pay")
	if third.err != nil || !reflect.DeepEqual(third.msgs, first.msgs) {
		t.Errorf("retry on a new instance = %q, %v; want %q", third.msgs, third.err, first.msgs)
	}
	if got := endOffset(t, req); got != 4 {
		t.Errorf("request topic holds %d records after the retry on a new instance, want 4", got)
	}
}

// TestSharedReplyTopic: two Ferry instances reading one reply topic each
// get only their own replies.
func TestSharedReplyTopic(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 3, nil), kit.Topic(t, 3, nil)
	startBackend(t, req, func(reqs []string, _ map[string]string) reply { return reply{msgs: []string{"re:" + reqs[0]}} })
	routes := fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 20s}
`, req, rep)
	apps := []*app.App{startFerry(t, routes), startFerry(t, routes)}
	ctx := testkit.Context(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i, a := range apps {
		cc := dial(t, a)
		for j := 0; j < 25; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := fmt.Sprintf("ferry%d-call%d", i, j)
				res := call(ctx, cc, "UnaryEcho", nil, msg)
				if res.err != nil || !reflect.DeepEqual(res.msgs, []string{"re:" + msg}) {
					errs <- fmt.Errorf("%s = %q, %v", msg, res.msgs, res.err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestUnknownMethod: methods no proto defines, or no route names, are
// UNIMPLEMENTED with the method in the message.
func TestUnknownMethod(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/UnaryEcho, metadata: {tenant: a}}]
    produce: {topic: %s}
`, topic))
	cc := dial(t, a)
	ctx := testkit.Context(t, 10*time.Second)
	for _, tc := range []struct {
		method string
		md     metadata.MD
		want   string
	}{
		{"Nope", nil, "unknown method /grpc.examples.echo.Echo/Nope"},
		{"ServerStreamingEcho", nil, "/grpc.examples.echo.Echo/ServerStreamingEcho is not routed"},
		{"UnaryEcho", metadata.Pairs("tenant", "b"), "no route matches this call's metadata"},
	} {
		st := status.Convert(call(ctx, cc, tc.method, tc.md, "x").err)
		if st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("%s: status %v %q, want Unimplemented containing %q", tc.method, st.Code(), st.Message(), tc.want)
		}
	}
	// An unknown service too.
	var out []byte
	err := cc.Invoke(ctx, "/no.Such/Thing", &[]byte{}, &out)
	if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "/no.Such/Thing") {
		t.Errorf("unknown service: %v", err)
	}
}

// TestMetadataRouting: the first route whose conditions match wins, and a
// condition's metadata must all be present and equal.
func TestMetadataRouting(t *testing.T) {
	kit.CheckLeaks(t)
	gold, rest := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - name: gold
    when: [{method: grpc.examples.echo.Echo/UnaryEcho, metadata: {tier: gold, region: eu}}]
    produce: {topic: %s}
  - name: rest
    when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s}
`, gold, rest))
	cc := dial(t, a)
	ctx := testkit.Context(t, 10*time.Second)
	for _, md := range []metadata.MD{
		metadata.Pairs("tier", "gold", "region", "eu"),
		metadata.Pairs("tier", "gold"),
		metadata.Pairs("tier", "silver", "region", "eu"),
	} {
		if res := call(ctx, cc, "UnaryEcho", md, "m"); res.err != nil {
			t.Fatal(res.err)
		}
	}
	if g, r := endOffset(t, gold), endOffset(t, rest); g != 1 || r != 2 {
		t.Errorf("gold got %d records and rest %d, want 1 and 2", g, r)
	}
}

// TestValidate: app.Validate checks routes against the protos, naming the
// file and line of the offending route.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	y := fmt.Sprintf(`protos:
  - files: [echo.proto]
    import_paths: [%q]
routes:
  - when:
      - method: grpc.examples.echo.Echo/Missing
    produce: {topic: t}
`, filepath.Join(root(t), "examples", "echo"))
	cfg, err := config.Parse(filepath.Join(dir, "f.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	err = app.Validate(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), `f.yaml:6: routes[0].when[0].method: no loaded proto defines a method matching "grpc.examples.echo.Echo/Missing"`) {
		t.Errorf("Validate = %v", err)
	}

	y = "protos: [{files: [broken.proto]}]\nroutes: [{when: [{method: a.B/C}], produce: {topic: t}}]\n"
	writeFile(t, filepath.Join(dir, "broken.proto"), "syntax = \"proto3\";\nmessage M { strin x = 1; }\n")
	cfg, err = config.Parse(filepath.Join(dir, "g.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	err = app.Validate(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "broken.proto:2:") {
		t.Errorf("Validate = %v, want the proto error with file and line", err)
	}
}

// TestMalformedFrame: request frames grpc-go cannot read end the call with
// an error status, and nothing of them is written to Kafka.
func TestMalformedFrame(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s}
`, topic))
	// gRPC is HTTP/2 without TLS here (h2c), spoken by net/http directly so
	// the frames can be anything.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	for name, body := range map[string][]byte{
		"truncated":             {0, 0, 0, 0, 10, 0x0a, 0x01},
		"compressed, no codec":  append([]byte{1, 0, 0, 0, 3}, echo("x")...),
		"length over the limit": {0, 0xff, 0xff, 0xff, 0xff},
		"short prefix":          {0, 0},
	} {
		req, _ := http.NewRequestWithContext(testkit.Context(t, 10*time.Second), http.MethodPost,
			"http://"+a.GRPCAddr()+echoSvc+"ClientStreamingEcho", bytes.NewReader(body))
		req.Header.Set("content-type", "application/grpc")
		req.Header.Set("te", "trailers")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code := resp.Trailer.Get("grpc-status")
		if code == "" {
			code = resp.Header.Get("grpc-status")
		}
		if code == "" || code == "0" {
			t.Errorf("%s: grpc-status %q (%s), want an error", name, code, resp.Trailer.Get("grpc-message"))
		}
		t.Logf("%s: grpc-status %s %s", name, code, resp.Trailer.Get("grpc-message"))
	}
	// A good call afterwards is the only thing on the topic.
	if res := call(testkit.Context(t, 10*time.Second), dial(t, a), "ClientStreamingEcho", nil, "good"); res.err != nil {
		t.Fatal(res.err)
	}
	if n := endOffset(t, topic); n != 1 {
		t.Errorf("topic holds %d records, want only the good call's 1", n)
	}
	if r := readTopic(t, topic, 1)[0]; unecho(r.Value) != "good" {
		t.Errorf("record = %q, want the good call's", unecho(r.Value))
	}
}
