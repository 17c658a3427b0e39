package fetch

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ferryproxy/ferry/internal/config"
)

// TestJSONFramesConvertOnce: an entry is converted once per output type,
// every caller of the method getting the same message, and a route of
// another type converts it for itself.
func TestJSONFramesConvertOnce(t *testing.T) {
	cfg := &config.FetchRoute{Topic: "t", Format: config.FormatJSON, LastMessageIDMetadata: "last-message-id"}
	asString, err := newJSONFrames("a", cfg, (&wrapperspb.StringValue{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	asDuration, err := newJSONFrames("b", cfg, (&durationpb.Duration{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	value := []byte(`"1s"`)
	e := &entry{vlen: len(value), frame: withID(value, 32767, Position{0: 1})}
	id := e.frame[e.vlen:]
	want := func(m proto.Message) []byte {
		b, _ := proto.Marshal(m)
		return append(b, id...)
	}
	for range 2 {
		got, err := asString.frame(e)
		if err != nil || !bytes.Equal(got, want(wrapperspb.String("1s"))) {
			t.Fatalf("as StringValue: %x, %v", got, err)
		}
	}
	if got, err := asDuration.frame(e); err != nil || !bytes.Equal(got, want(durationpb.New(1e9))) {
		t.Fatalf("as Duration: %x, %v", got, err)
	}
	if got, _ := asString.frame(e); !bytes.Equal(got, want(wrapperspb.String("1s"))) {
		t.Fatalf("as StringValue after Duration: %x", got)
	}
}
