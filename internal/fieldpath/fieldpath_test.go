package fieldpath

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
)

// field is a FieldDescriptorProto: strings, integers, an enum and a nested
// message (options) with a bool.
func field() protoreflect.Message {
	return (&descriptorpb.FieldDescriptorProto{
		Name:    proto.String("seq"),
		Number:  proto.Int32(7),
		Type:    descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum(),
		Options: &descriptorpb.FieldOptions{Packed: proto.Bool(true)},
	}).ProtoReflect()
}

func TestTemplates(t *testing.T) {
	m := field()
	for _, tc := range []struct{ tmpl, want string }{
		{"{name}", "seq"},
		{"{name}-{number}", "seq-7"},
		{"{type}", "TYPE_INT64"},
		{"{options.packed}/{options.lazy}", "true/false"},
		{"{jsonName}", ""}, // by JSON name; unset
		{"{{literal}} {name}", "{literal} seq"},
		{"{ name }", "seq"},
		{"plain", "plain"},
	} {
		tp, err := ParseTemplate(m.Descriptor(), tc.tmpl)
		if err != nil {
			t.Errorf("%q: %v", tc.tmpl, err)
			continue
		}
		if got := string(tp.AppendTo(nil, m)); got != tc.want {
			t.Errorf("%q = %q, want %q", tc.tmpl, got, tc.want)
		}
	}
	for _, tc := range []struct{ tmpl, want string }{
		{"{nope}", `has no field "nope"`},
		{"{name", "has no closing }"},
		{"name}", "has no opening {"},
		{"{options}", "is a message (google.protobuf.FieldOptions): name one of its fields"},
		{"{name.x}", "is not a message"},
		{"{options.uninterpreted_option}", "is repeated"},
		{"{}", "is empty"},
	} {
		if _, err := ParseTemplate(m.Descriptor(), tc.tmpl); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.tmpl, err, tc.want)
		}
	}
}

func TestUnsetMessageOnTheWay(t *testing.T) {
	m := (&descriptorpb.FieldDescriptorProto{}).ProtoReflect()
	p, err := Resolve(m.Descriptor(), "options.packed")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(p.AppendText(nil, m)); got != "false" {
		t.Errorf("unset options.packed = %q, want the default false", got)
	}
}

func TestTimestampsAndCursors(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 5000, time.UTC)
	m := (&tick.Tick{Seq: 41, Time: timestamppb.New(at)}).ProtoReflect()
	ts, _ := Resolve(m.Descriptor(), "time")
	if got, ok := ts.Timestamp(m); !ok || !got.Equal(at) {
		t.Errorf("time = %s %v, want %s", got, ok, at)
	}
	if got := string(ts.AppendText(nil, m)); got != "2026-12-03T10:00:00.000005Z" {
		t.Errorf("time as text = %q", got)
	}
	seq, _ := Resolve(m.Descriptor(), "seq")
	if got, ok := seq.Timestamp(m); !ok || got.UnixMilli() != 41 {
		t.Errorf("seq as milliseconds = %s %v", got, ok)
	}
	if Family(seq.Leaf()) != "integer" || Family(ts.Leaf()) != "timestamp" {
		t.Errorf("families %q %q", Family(seq.Leaf()), Family(ts.Leaf()))
	}
	// A cursor goes back into a request field, incremented.
	req := dynamicpb.NewMessage((&tick.TicksRequest{}).ProtoReflect().Descriptor())
	start, _ := Resolve(req.Descriptor(), "start")
	if err := start.SetText(req, seq.AppendText(nil, m), 1); err != nil {
		t.Fatal(err)
	}
	if got := start.Get(req).Int(); got != 42 {
		t.Errorf("start = %d, want 42", got)
	}
	if err := start.SetText(req, []byte("x"), 0); err == nil {
		t.Error("a cursor that is not a number went into an integer field")
	}
	// And a timestamp into a timestamp.
	out := dynamicpb.NewMessage(m.Descriptor())
	if err := ts.SetText(out, ts.AppendText(nil, m), 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := ts.Timestamp(out); !got.Equal(at) {
		t.Errorf("timestamp round trip = %s, want %s", got, at)
	}
}

// FuzzParseTemplate: any template text is parsed or refused with an
// error, never a panic, and a parsed one fills.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"{name}", "{{x}}", "{options.packed}-{number}", "{", "}", "{a.b.c}", "{ name }"} {
		f.Add(s)
	}
	m := field()
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTemplate(m.Descriptor(), s)
		if err == nil {
			tp.AppendTo(nil, m)
		}
	})
}
