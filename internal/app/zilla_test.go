package app_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// produceTo writes one record per message to the given partition of topic.
func produceTo(t testing.TB, cl *kgo.Client, topic string, partition int32, ms ...string) {
	t.Helper()
	var recs []*kgo.Record
	for _, m := range ms {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: partition, Value: echo(m)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestFetchResumeZillaID: a client holding a message id as Zilla writes it
// — offset -2 ("earliest"), or -1 ("latest") when its subscriber started
// at the tail, for each partition that had delivered nothing yet —
// resumes on Ferry with exactly the records it had not seen, those
// partitions from their log start: nothing written after the id is
// missed.
func TestFetchResumeZillaID(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 3, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	cc := dial(t, startFerry(t, fetchRoute(topic, "")))

	// The client saw p0-a, the first record of partition 0, and nothing of
	// partitions 1 and 2: Zilla's id {0: 1, 1: -2, 2: -2}.
	const zillaID = "AQYAAgIDBAM" // 01 06 00 02 02 03 04 03
	produceTo(t, prod, topic, 0, "p0-a", "p0-b")
	produceTo(t, prod, topic, 1, "p1-a", "p1-b")
	produceTo(t, prod, topic, 2, "p2-a")

	t.Run("earliest", func(t *testing.T) {
		sub := subscribe(t, cc, metadata.Pairs("last-message-id", zillaID))
		defer sub.cancel()
		got := msgs(sub.take(t, 4))
		produceTo(t, prod, topic, 1, "p1-c")
		got = append(got, msgs(sub.take(t, 1))...)
		sort.Strings(got)
		if want := []string{"p0-b", "p1-a", "p1-b", "p1-c", "p2-a"}; !reflect.DeepEqual(got, want) {
			t.Errorf("resumed with %s: %q, want %q", zillaID, got, want)
		}
	})

	t.Run("latest", func(t *testing.T) {
		// {0: 2, 1: -2, 2: -1}: partition 2, like 1, resumes from its log
		// start: p2-a was written after the subscriber started, for all
		// the id can tell.
		id := "AQYABAIDBAE"
		sub := subscribe(t, cc, metadata.Pairs("last-message-id", id))
		defer sub.cancel()
		got := msgs(sub.take(t, 4))
		sort.Strings(got)
		if want := []string{"p1-a", "p1-b", "p1-c", "p2-a"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("resumed with %s: %q, want %q", id, got, want)
		}
		produceTo(t, prod, topic, 2, "p2-b")
		if got := msgs(sub.take(t, 1)); got[0] != "p2-b" {
			t.Errorf("then %q, want p2-b", got[0])
		}
	})
}

// TestAcceptEncodingRecorded: grpc-go hands a client's
// grpc-accept-encoding to Ferry in the incoming metadata, and Ferry writes
// it as meta:grpc-accept-encoding, as Zilla does; Ferry's back end does not
// pass it on to its server (a reserved key never becomes metadata again).
func TestAcceptEncodingRecorded(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	seen := make(chan metadata.MD, 1)
	srv.block = func(ctx context.Context, _ string) error {
		md, _ := metadata.FromIncomingContext(ctx)
		seen <- md
		return nil
	}
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	cc := dial(t, startFerry(t, proxyConfig(t, req, rep, srv.addr, "")))
	md := metadata.Pairs("grpc-accept-encoding", "gzip", "x-trace", "t1")
	res := call(testkit.Context(t, 30*time.Second), cc, "UnaryEcho", md, "hi")
	if res.err != nil || len(res.msgs) != 1 {
		t.Fatalf("call = %q, %v", res.msgs, res.err)
	}
	for i, r := range readTopic(t, req, 2) {
		if v, ok := header(r, "meta:grpc-accept-encoding"); !ok || v != "gzip" {
			t.Errorf("request record %d: meta:grpc-accept-encoding = %q, %v; want gzip%s", i, v, ok, fmtHeaders(r.Headers))
		}
	}
	got := <-seen
	if v := got.Get("grpc-accept-encoding"); len(v) != 0 || len(got.Get("x-trace")) != 1 {
		t.Errorf("the server got grpc-accept-encoding %q (want none) and x-trace %q", v, got.Get("x-trace"))
	}
}

// TestProxyFinalRecordAsZilla: Ferry's back end writes the final record of
// a call that wrote a response message as Zilla does (correlation id and
// status only), and repeats the response headers there only when no
// response message carried them; the front end delivers the headers in
// both cases.
func TestProxyFinalRecordAsZilla(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	srv.block = func(ctx context.Context, msg string) error {
		if msg != "deny" {
			return nil
		}
		if err := grpc.SetHeader(ctx, metadata.Pairs("x-why", "policy")); err != nil {
			return err
		}
		return status.Error(codes.PermissionDenied, "denied")
	}
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	cc := dial(t, startFerry(t, proxyConfig(t, req, rep, srv.addr, "")))
	ctx := testkit.Context(t, 30*time.Second)

	res := call(ctx, cc, "UnaryEcho", nil, "hi")
	if res.err != nil || !reflect.DeepEqual(res.msgs, []string{"hi"}) {
		t.Fatalf("UnaryEcho(hi) = %q, %v", res.msgs, res.err)
	}
	if got := res.header.Get("x-echo-server"); !reflect.DeepEqual(got, []string{"echo-1"}) {
		t.Errorf("response header x-echo-server = %q, want [echo-1]", got)
	}
	res = call(ctx, cc, "UnaryEcho", nil, "deny")
	if st := status.Convert(res.err); st.Code() != codes.PermissionDenied || st.Message() != "denied" {
		t.Errorf("UnaryEcho(deny) = %v", res.err)
	}
	if got := res.header.Get("x-why"); !reflect.DeepEqual(got, []string{"policy"}) {
		t.Errorf("error's response header x-why = %q, want [policy]", got)
	}

	recs := readTopic(t, rep, 3)
	keys := func(r *kgo.Record) []string {
		var ks []string
		for _, h := range r.Headers {
			ks = append(ks, h.Key)
		}
		return ks
	}
	if got, want := keys(recs[0]), []string{"zilla:correlation-id", "meta:x-echo-server"}; recs[0].Value == nil || !reflect.DeepEqual(got, want) {
		t.Errorf("reply record headers %q, want %q", got, want)
	}
	if got, want := keys(recs[1]), []string{"zilla:correlation-id", "zilla:status"}; recs[1].Value != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("final record after a reply: headers %q, want Zilla's %q", got, want)
	}
	if got, want := keys(recs[2]), []string{"zilla:correlation-id", "meta:x-why", "zilla:status", "zilla:message"}; recs[2].Value != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("final record without a reply: headers %q, want %q", got, want)
	}
}

// TestReplyTimeoutSaysWhy: a call that got no reply record at all within
// the route's timeout says that a back end failing without answering looks
// like this, and which setting to lower.
func TestReplyTimeoutSaysWhy(t *testing.T) {
	kit.CheckLeaks(t)
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 300ms}
`, req, rep))
	res := call(testkit.Context(t, 20*time.Second), dial(t, a), "UnaryEcho", nil, "anyone?")
	st := status.Convert(res.err)
	if st.Code() != codes.DeadlineExceeded {
		t.Fatalf("status = %v %q, want DeadlineExceeded", st.Code(), st.Message())
	}
	for _, want := range []string{rep, "300ms", "no reply record came within the route's timeout", "fails without answering", "Zilla's kafka-grpc", "lower routes[].produce.timeout"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("message %q does not say %q", st.Message(), want)
		}
	}
}
