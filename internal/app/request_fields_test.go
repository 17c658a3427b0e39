package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestRequestFields: a produce route takes the record key and headers
// from fields of the request message, and with validate refuses a request
// that is not a message of the method's input type, writing nothing.
func TestRequestFields(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/UnaryEcho}]
    produce:
      topic: %s
      one_way_ack: true
      validate: true
      key_from_request: "user-{message}"
      headers_from_request: {x-message: "{message}", x-len: "m={message}"}
`, topic))
	cc := dial(t, a)
	ctx := testkit.Context(t, 20*time.Second)
	if res := call(ctx, cc, "UnaryEcho", nil, "alice"); res.err != nil {
		t.Fatal(res.err)
	}
	recs := readTopic(t, topic, 1)
	if string(recs[0].Key) != "user-alice" {
		t.Errorf("key %q, want user-alice", recs[0].Key)
	}
	for k, want := range map[string]string{"x-message": "alice", "x-len": "m=alice"} {
		if got, _ := header(recs[0], k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	// Field 1 of EchoRequest is a string: invalid UTF-8 does not decode.
	bad := []byte{0x0a, 0x02, 0xff, 0xfe}
	var out []byte
	err := cc.Invoke(ctx, "/grpc.examples.echo.Echo/UnaryEcho", &bad, &out, grpc.ForceCodecV2(rawCodec{}))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "request message 1 is not a grpc.examples.echo.EchoRequest") {
		t.Errorf("an invalid request: %v, want INVALID_ARGUMENT naming the input type", err)
	}
	if n := endOffset(t, topic); n != 1 {
		t.Errorf("the topic holds %d records after the invalid request, want 1: it was written", n)
	}
}

// TestRequestFieldsChecked: a template naming a field the method's input
// type lacks stops Ferry from starting, naming the route and the key.
func TestRequestFieldsChecked(t *testing.T) {
	cfg := ferryConfig(t, fmt.Sprintf(`
  - name: echo
    when: [{method: grpc.examples.echo.Echo/UnaryEcho}]
    produce: {topic: %s, key_from_request: "{customer}"}
`, kit.Topic(t, 1, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := app.Validate(ctx, cfg)
	want := `routes[0].when[0].method: route echo, method /grpc.examples.echo.Echo/UnaryEcho: produce.key_from_request: "{customer}": grpc.examples.echo.EchoRequest has no field "customer"`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), filepath.Base(cfg.File())) {
		t.Errorf("validate: %v\nwant %s", err, want)
	}
}

// pricesProto is a service whose server-streaming method takes a request
// message of its own, for fetch routes that filter by its fields.
const pricesProto = `syntax = "proto3";
package prices;
service Prices { rpc Watch(WatchRequest) returns (stream Price); }
message WatchRequest { string symbol = 1; Venue venue = 2; }
message Venue { string name = 1; }
message Price { string symbol = 1; double value = 2; }
`

// TestFetchRequestFilters: a fetch method that takes a request message
// streams each caller the records its fields select: a price stream per
// symbol and venue.
func TestFetchRequestFilters(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "prices.proto"), pricesProto)
	cfg := pricesConfig(t, dir, fmt.Sprintf(`
  - when: [{method: prices.Prices/Watch}]
    fetch:
      topic: %s
      filters:
        - key_from_request: "{symbol}"
          headers_from_request: {venue: "{venue.name}"}
`, topic))
	a := startConfig(t, cfg)
	prod := kit.Client(t)
	for _, r := range []struct{ key, venue, value string }{{"AAA", "x", "a1"}, {"AAA", "y", "a2"}, {"BBB", "x", "b1"}, {"AAA", "x", "a3"}} {
		produceMsgs(t, prod, topic, r.key, []kgo.RecordHeader{{Key: "venue", Value: []byte(r.venue)}}, r.value)
	}
	watch := func(req []byte) (*subscription, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := dial(t, a).NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/prices.Prices/Watch")
		if err == nil {
			err = s.SendMsg(&req)
		}
		if err == nil {
			err = s.CloseSend()
		}
		return &subscription{s: s, cancel: cancel}, err
	}
	// WatchRequest{symbol: "AAA", venue: {name: "x"}}
	req := []byte{0x0a, 3, 'A', 'A', 'A', 0x12, 3, 0x0a, 1, 'x'}
	sub, err := watch(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.cancel()
	if got := msgs(sub.take(t, 2)); strings.Join(got, ",") != "a1,a3" {
		t.Errorf("AAA at venue x got %q, want a1 and a3", got)
	}
	// A request that is not a WatchRequest.
	bad, err := watch([]byte{0x0a, 0x02, 0xff, 0xfe})
	if err == nil {
		defer bad.cancel()
		_, err = bad.next()
	}
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "the request is not a prices.WatchRequest") {
		t.Errorf("an invalid request: %v, want INVALID_ARGUMENT", err)
	}
	// A filter naming a field the request type lacks stops validation.
	cfg = pricesConfig(t, dir, fmt.Sprintf(`
  - when: [{method: prices.Prices/Watch}]
    fetch: {topic: %s, filters: [{key_from_request: "{ticker}"}]}
`, topic))
	if err := app.Validate(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `filters[0].key_from_request: "{ticker}": prices.WatchRequest has no field "ticker"`) {
		t.Errorf("validate: %v", err)
	}
}

// pricesConfig is a configuration with prices.proto from dir and routes.
func pricesConfig(t *testing.T, dir, routes string) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners: {grpc: {address: 127.0.0.1:0}}
protos: [{files: [prices.proto], import_paths: [%q]}]
log: {level: "${FERRY_TEST_LOG:-warn}"}
routes:
%s`, kit.ClusterYAML(t), dir, routes)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	return cfg
}
