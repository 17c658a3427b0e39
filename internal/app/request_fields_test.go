package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/app"
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
