package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// jsonObject parses a record value that must be a JSON object.
func jsonObject(t testing.TB, v []byte) map[string]any {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(v, &obj); err != nil {
		t.Fatalf("record value %q is not a JSON object: %v", v, err)
	}
	return obj
}

// valuesOf returns the values of the records that have one.
func valuesOf(recs []*kgo.Record) [][]byte {
	var out [][]byte
	for _, r := range recs {
		if r.Value != nil {
			out = append(out, r.Value)
		}
	}
	return out
}

// jsonBackend is a back end section with format json reading req and
// calling target, in the group g-<req>, with extra keys.
func jsonBackend(req, target, extra string) string {
	return fmt.Sprintf(`backends:
  - name: echo
    topic: %s
    target: %s
    group_id: g-%s
    session_timeout: 6s
    commit_interval: 100ms
    format: json
%s`, req, target, req, extra)
}

// TestJSONProxyRoundTrip: a gRPC client calls through a produce route
// writing JSON, a back end reading it calls the real echo server and
// writes its replies as JSON, and the client gets typed replies.
func TestJSONProxyRoundTrip(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 60s, format: json, json: {field_names: proto}}
`, req, rep)+jsonBackend(req, srv.addr, ""))
	cc := dial(t, a)
	ctx := testkit.Context(t, 30*time.Second)
	for _, tc := range []struct {
		method     string
		reqs, want []string
	}{
		{"UnaryEcho", []string{"hi"}, []string{"hi"}},
		{"BidirectionalStreamingEcho", []string{"x", "y"}, []string{"x", "y"}},
	} {
		res := call(ctx, cc, tc.method, nil, tc.reqs...)
		if res.err != nil || !reflect.DeepEqual(res.msgs, tc.want) {
			t.Errorf("%s(%q) = %q, %v; want %q", tc.method, tc.reqs, res.msgs, res.err, tc.want)
		}
	}
	// The request topic holds the requests as JSON: three messages and a
	// null record per call.
	for i, v := range valuesOf(readTopic(t, req, 5)) {
		want := []string{"hi", "x", "y"}[i]
		if got := jsonObject(t, v); !reflect.DeepEqual(got, map[string]any{"message": want}) {
			t.Errorf("request record %d = %s, want {\"message\":%q}", i, v, want)
		}
	}
	// So does the reply topic.
	for i, v := range valuesOf(readTopic(t, rep, 5)) {
		if got := jsonObject(t, v); got["message"] == nil {
			t.Errorf("reply record %d = %s, want an EchoResponse in JSON", i, v)
		}
	}
}

// orderProto has fields whose JSON and .proto names differ.
const orderProto = `syntax = "proto3";
package orders;
service Orders { rpc Place(Order) returns (Receipt); }
message Order { string order_id = 1; int64 amount_cents = 2; bool gift = 3; }
message Receipt { string receipt_id = 1; }
`

// orderConfig is a configuration with orderProto and body (routes, then
// any other section).
func orderConfig(t *testing.T, body string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "orders.proto"), orderProto)
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners: {grpc: {address: 127.0.0.1:0, shutdown_timeout: 2s}}
protos: [{files: [orders.proto], import_paths: [%q]}]
log: {level: "${FERRY_TEST_LOG:-warn}"}
routes:
%s`, kit.ClusterYAML(t), dir, body)
	cfg, err := config.Parse(filepath.Join(dir, "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	return cfg
}

// TestJSONProduceFieldNames: a produce route writes the configured field
// names, with or without defaults, and refuses a request that does not
// decode, writing nothing.
func TestJSONProduceFieldNames(t *testing.T) {
	protoNames, jsonNames := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	a := startConfig(t, orderConfig(t, fmt.Sprintf(`
  - when: [{method: orders.Orders/Place, metadata: {names: proto}}]
    produce: {topic: %s, format: json, json: {field_names: proto, emit_defaults: true}}
  - when: [{method: orders.Orders/Place}]
    produce: {topic: %s, format: json}
`, protoNames, jsonNames)))
	cc := dial(t, a)
	ctx := testkit.Context(t, 20*time.Second)
	// Order{order_id: "o-1", amount_cents: 250}
	order := []byte{0x0a, 3, 'o', '-', '1', 0x10, 0xfa, 0x01}
	place := func(ctx context.Context, req []byte) error {
		var out []byte
		return cc.Invoke(ctx, "/orders.Orders/Place", &req, &out)
	}
	if err := place(metadata.AppendToOutgoingContext(ctx, "names", "proto"), order); err != nil {
		t.Fatal(err)
	}
	if err := place(ctx, order); err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]map[string]any{
		protoNames: {"order_id": "o-1", "amount_cents": "250", "gift": false},
		jsonNames:  {"orderId": "o-1", "amountCents": "250"},
	} {
		recs := readTopic(t, topic, 1)
		if got := jsonObject(t, recs[0].Value); !reflect.DeepEqual(got, want) {
			t.Errorf("record = %s, want %v", recs[0].Value, want)
		}
	}
	// Field 1 of Order is a string: invalid UTF-8 does not decode.
	err := place(ctx, []byte{0x0a, 0x02, 0xff, 0xfe})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "request message 1 is not a orders.Order") {
		t.Errorf("an invalid request: %v, want INVALID_ARGUMENT naming the input type", err)
	}
	if n := endOffset(t, jsonNames); n != 1 {
		t.Errorf("the topic holds %d records after the invalid request, want 1", n)
	}
}

// TestJSONBadReply: a reply that is not the JSON of the method's output
// type ends the call with INTERNAL naming the problem.
func TestJSONBadReply(t *testing.T) {
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	// This back end answers in protobuf, not JSON.
	startBackend(t, req, func(reqs []string, _ map[string]string) reply { return reply{msgs: []string{"protobuf"}} })
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/UnaryEcho}]
    produce: {topic: %s, reply_to: %s, timeout: 20s, format: json}
`, req, rep))
	res := call(testkit.Context(t, 30*time.Second), dial(t, a), "UnaryEcho", nil, "hi")
	if st := status.Convert(res.err); st.Code() != codes.Internal ||
		!strings.Contains(st.Message(), fmt.Sprintf("reply 1 on topic %q is not the JSON of a grpc.examples.echo.EchoResponse", rep)) {
		t.Errorf("call = %q, %v; want INTERNAL naming the reply", res.msgs, res.err)
	}
}

// TestJSONBackendFromKafka: JSON request records written straight to the
// topic, as kcat would, are answered by a back end with format json; one
// that does not convert, or names a method the protos lack, gets an error
// reply, and all are committed.
func TestJSONBackendFromKafka(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	startFerry(t, jsonBackend(req, srv.addr, "    json: {emit_defaults: true}\n"))
	prod := kit.Client(t)
	ctx := testkit.Context(t, 30*time.Second)
	send := func(id, service, method string, end bool, values ...string) {
		hs := []kgo.RecordHeader{
			{Key: "zilla:service", Value: []byte(service)},
			{Key: "zilla:method", Value: []byte(method)},
			{Key: "zilla:reply-to", Value: []byte(rep)},
			{Key: "zilla:correlation-id", Value: []byte(id)},
		}
		// The request messages, then the null record that ends the
		// request stream (kcat -Z writes an empty value as null).
		var recs []*kgo.Record
		for _, v := range values {
			recs = append(recs, &kgo.Record{Topic: req, Key: []byte(id), Value: []byte(v), Headers: hs})
		}
		if end {
			recs = append(recs, &kgo.Record{Topic: req, Key: []byte(id), Headers: hs})
		}
		if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	write := func(id, service, method string, values ...string) { send(id, service, method, true, values...) }
	write("c-1", "grpc.examples.echo.Echo", "UnaryEcho", `{"message": "from kcat", "unknown": 1}`)
	write("c-2", "grpc.examples.echo.Echo", "UnaryEcho", `{"message": 5}`)
	write("c-3", "other.Service", "UnaryEcho", `{}`)
	// A stream whose second message does not convert: the call under way
	// is cancelled and answered INVALID_ARGUMENT.
	send("c-4", "grpc.examples.echo.Echo", "BidirectionalStreamingEcho", false, `{"message": "first"}`)
	waitFor(t, func() bool { calls, _ := srv.calls(); return calls == 2 }, "the server to see the stream")
	write("c-4", "grpc.examples.echo.Echo", "BidirectionalStreamingEcho", `{"message": {}}`)
	type answer struct {
		values []string
		code   string
		msg    string
	}
	got := map[string]*answer{}
	// Every call ends with one final record: read until all four came.
	cl := kit.Client(t, kgo.ConsumeTopics(rep), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var recs []*kgo.Record
	for finals := 0; finals < 4; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d final replies before the deadline", finals)
		}
		for _, r := range fs.Records() {
			recs = append(recs, r)
			if r.Value == nil {
				finals++
			}
		}
	}
	for _, r := range recs {
		id, _ := header(r, "zilla:correlation-id")
		if got[id] == nil {
			got[id] = &answer{}
		}
		if r.Value != nil {
			got[id].values = append(got[id].values, string(r.Value))
			continue
		}
		got[id].code, _ = header(r, "zilla:status")
		got[id].msg, _ = header(r, "zilla:message")
	}
	if a := got["c-1"]; a == nil || a.code != "0" || len(a.values) != 1 ||
		!reflect.DeepEqual(jsonObject(t, []byte(a.values[0])), map[string]any{"message": "from kcat"}) {
		t.Errorf("c-1: %+v, want one JSON reply and status 0", a)
	}
	if a := got["c-2"]; a == nil || a.code != "3" || len(a.values) != 0 ||
		!strings.Contains(a.msg, "request message 1 is not the JSON of a grpc.examples.echo.EchoRequest") || !strings.Contains(a.msg, "message") {
		t.Errorf("c-2: %+v, want INVALID_ARGUMENT (3) naming the field", a)
	}
	if a := got["c-3"]; a == nil || a.code != "12" || !strings.Contains(a.msg, "method /other.Service/UnaryEcho is not in the protos") {
		t.Errorf("c-3: %+v, want UNIMPLEMENTED (12) naming the method", a)
	}
	if a := got["c-4"]; a == nil || a.code != "3" || !strings.Contains(a.msg, "request message 2 is not the JSON of a grpc.examples.echo.EchoRequest") {
		t.Errorf("c-4: %+v, want INVALID_ARGUMENT (3) naming the second message", a)
	}
	if calls, _ := srv.calls(); calls != 2 {
		t.Errorf("the server saw %d calls, want 2 (c-1 and c-4): requests whose first message does not convert never reach it", calls)
	}
	waitCommitted(t, "g-"+req, req, 9)
}

// TestJSONFetch: a fetch route streams a topic of JSON records as typed
// response messages; a record that does not convert ends the stream with
// INTERNAL naming it and the message id that resumes past it.
func TestJSONFetch(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fetchRoute(topic, "      format: json\n"))
	prod := kit.Client(t)
	var recs []*kgo.Record
	for _, v := range []string{`{"message":"a"}`, `{"message":"b"}`, `{"message":["not","a","string"]}`, `{"message":"c"}`} {
		recs = append(recs, &kgo.Record{Topic: topic, Value: []byte(v)})
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cc := dial(t, a)
	sub := subscribe(t, cc, nil)
	defer sub.cancel()
	if got := msgs(sub.take(t, 2)); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("got %q, want a and b", got)
	}
	_, err := sub.next()
	st := status.Convert(err)
	if st.Code() != codes.Internal || !strings.Contains(st.Message(), fmt.Sprintf("record at topic %q partition 0 offset 2 is not the JSON of a example.FanoutMessage", topic)) {
		t.Fatalf("the bad record: %v, want INTERNAL naming its offset", err)
	}
	_, skip, ok := strings.Cut(st.Message(), "resume with last-message-id: ")
	if !ok {
		t.Fatalf("%q names no message id to resume with", st.Message())
	}
	resumed := subscribe(t, cc, metadata.Pairs("last-message-id", skip))
	defer resumed.cancel()
	if got := msgs(resumed.take(t, 1)); !reflect.DeepEqual(got, []string{"c"}) {
		t.Errorf("resumed past the bad record: got %q, want c", got)
	}
}
