package valueformat_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/valueformat"
)

// placeOrder returns the descriptor of testdata/order.proto's PlaceOrder.
func placeOrder(tb testing.TB) protoreflect.MessageDescriptor {
	tb.Helper()
	reg, err := protoreg.Load(context.Background(), "testdata", []protoreg.Source{{Files: []string{"order.proto"}}})
	if err != nil {
		tb.Fatal(err)
	}
	m, ok := reg.Method("/shop.v1.Orders/Place")
	if !ok {
		tb.Fatal("no method /shop.v1.Orders/Place")
	}
	return m.Desc.Input()
}

const orderJSON = `{"orderId":"o-17","customerId":"c-42","amountCents":"1999","currency":"CURRENCY_EUR",
	"shipTo":{"street":"Main St 1","city":"Ghent","postalCode":"9000"},
	"lines":[{"sku":"tea","quantity":2},{"sku":"cup","quantity":1}],
	"labels":{"channel":"web"},"placedAt":"2026-01-02T15:04:05Z"}`

// order returns PlaceOrder as a message and its protobuf encoding.
func order(tb testing.TB, desc protoreflect.MessageDescriptor) (protoreflect.Message, []byte) {
	tb.Helper()
	m := dynamicpb.NewMessage(desc)
	if err := protojson.Unmarshal([]byte(orderJSON), m); err != nil {
		tb.Fatal(err)
	}
	pb, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return m, pb
}

func mustNew(tb testing.TB, format string, o config.JSONOptions) *valueformat.Format {
	tb.Helper()
	f, err := valueformat.New(format, o)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// keys returns the top-level keys of a JSON object.
func keys(t *testing.T, js []byte) map[string]any {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err != nil {
		t.Fatalf("not JSON: %v: %s", err, js)
	}
	return obj
}

func TestEncodeFieldNames(t *testing.T) {
	desc := placeOrder(t)
	m, pb := order(t, desc)
	for _, tc := range []struct {
		opts       config.JSONOptions
		want, not  []string
		emitsEmpty bool
	}{
		{opts: config.JSONOptions{FieldNames: "json"}, want: []string{"orderId", "customerId", "shipTo", "placedAt"}, not: []string{"order_id", "gift"}},
		{opts: config.JSONOptions{FieldNames: "proto"}, want: []string{"order_id", "customer_id", "ship_to", "placed_at"}, not: []string{"orderId", "gift"}},
		{opts: config.JSONOptions{FieldNames: "proto", EmitDefaults: true}, want: []string{"order_id", "gift"}},
	} {
		f := mustNew(t, config.FormatJSON, tc.opts)
		for name, js := range map[string]func() ([]byte, error){
			"Encode": func() ([]byte, error) { return f.Encode(m) },
			"ToJSON": func() ([]byte, error) { return f.ToJSON(desc, pb) },
		} {
			out, err := js()
			if err != nil {
				t.Fatalf("%+v %s: %v", tc.opts, name, err)
			}
			obj := keys(t, out)
			for _, k := range tc.want {
				if _, ok := obj[k]; !ok {
					t.Errorf("%+v %s: no %q in %s", tc.opts, name, k, out)
				}
			}
			for _, k := range tc.not {
				if _, ok := obj[k]; ok {
					t.Errorf("%+v %s: %q in %s", tc.opts, name, k, out)
				}
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	desc := placeOrder(t)
	_, pb := order(t, desc)
	for _, names := range []string{"json", "proto"} {
		f := mustNew(t, config.FormatJSON, config.JSONOptions{FieldNames: names})
		js, err := f.ToJSON(desc, pb)
		if err != nil {
			t.Fatal(err)
		}
		back, err := f.FromJSON(desc, js)
		if err != nil {
			t.Fatal(err)
		}
		a, b := dynamicpb.NewMessage(desc), dynamicpb.NewMessage(desc)
		if err := proto.Unmarshal(pb, a); err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(back, b); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(a, b) {
			t.Errorf("%s: round trip changed the message:\n%v\n%v", names, a, b)
		}
	}
}

func TestFromJSON(t *testing.T) {
	desc := placeOrder(t)
	f := mustNew(t, config.FormatJSON, config.JSONOptions{})
	for _, tc := range []struct {
		name, in, err string
	}{
		{name: "proto names", in: `{"order_id":"o-1","amount_cents":5}`},
		{name: "unknown fields are dropped", in: `{"orderId":"o-1","addedLater":{"x":1}}`},
		{name: "empty object", in: `{}`},
		{name: "wrong type", in: `{"amountCents":"lots"}`, err: "amountCents"},
		{name: "unknown enum names are dropped", in: `{"currency":"CURRENCY_GOLD"}`},
		{name: "bad enum", in: `{"currency":true}`, err: "currency"},
		{name: "nested", in: `{"shipTo":{"city":7}}`, err: "city"},
		{name: "not JSON", in: `\x08\x01`, err: "syntax error"},
		{name: "not an object", in: `[1]`, err: "unexpected token"},
		{name: "empty", in: ``, err: "unexpected token"},
	} {
		pb, err := f.FromJSON(desc, []byte(tc.in))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && err == nil:
			t.Errorf("%s: no error, got %x", tc.name, pb)
		case tc.err != "" && !strings.Contains(err.Error(), tc.err):
			t.Errorf("%s: error %q does not name %q", tc.name, err, tc.err)
		}
	}
}

func TestToJSONBadProtobuf(t *testing.T) {
	desc := placeOrder(t)
	f := mustNew(t, config.FormatJSON, config.JSONOptions{})
	_, err := f.ToJSON(desc, []byte{0x0a, 0x05, 'a'}) // field 1 cut short
	if err == nil || !strings.Contains(err.Error(), "shop.v1.PlaceOrder") {
		t.Errorf("got %v, want an error naming the type", err)
	}
}

func TestProtobufFormat(t *testing.T) {
	desc := placeOrder(t)
	m, _ := order(t, desc)
	for _, f := range []*valueformat.Format{nil, mustNew(t, config.FormatProtobuf, config.JSONOptions{}), mustNew(t, "", config.JSONOptions{})} {
		if f.JSON() {
			t.Error("protobuf format reports JSON")
		}
		out, err := f.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got := dynamicpb.NewMessage(desc)
		if err := proto.Unmarshal(out, got); err != nil || !proto.Equal(got, m.Interface()) {
			t.Errorf("Encode = %x (%v), want the protobuf of %v", out, err, m)
		}
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := valueformat.New("avro", config.JSONOptions{}); err == nil {
		t.Error("avro accepted")
	}
	if _, err := valueformat.New(config.FormatJSON, config.JSONOptions{FieldNames: "camel"}); err == nil {
		t.Error("field_names camel accepted")
	}
}

func FuzzFromJSON(f *testing.F) {
	desc := placeOrder(f)
	vf := mustNew(f, config.FormatJSON, config.JSONOptions{FieldNames: "proto"})
	f.Add([]byte(orderJSON))
	f.Add([]byte(`{"lines":[{"sku":"x"}],"labels":{"a":"b"}}`))
	f.Add([]byte(`{"amountCents":"1e3"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, js []byte) {
		pb, err := vf.FromJSON(desc, js)
		if err != nil {
			return
		}
		// What converts must convert back and again to the same message.
		out, err := vf.ToJSON(desc, pb)
		if err != nil {
			t.Fatalf("%s converted to %x, which does not convert back: %v", js, pb, err)
		}
		again, err := vf.FromJSON(desc, out)
		if err != nil {
			t.Fatalf("%s does not convert again: %v", out, err)
		}
		a, b := dynamicpb.NewMessage(desc), dynamicpb.NewMessage(desc)
		if proto.Unmarshal(pb, a) != nil || proto.Unmarshal(again, b) != nil || !proto.Equal(a, b) {
			t.Fatalf("%s: the round trip changed the message", js)
		}
	})
}

// BenchmarkFormat compares the per-record cost of the two formats: Encode
// of a typical request message (what a produce route writes) and FromJSON
// (what a back end or fetch route reads).
//
//	go test -run '^$' -bench BenchmarkFormat -benchmem ./internal/valueformat/
func BenchmarkFormat(b *testing.B) {
	desc := placeOrder(b)
	m, _ := order(b, desc)
	js := mustNew(b, config.FormatJSON, config.JSONOptions{})
	pbf := mustNew(b, config.FormatProtobuf, config.JSONOptions{})
	jsValue, err := js.Encode(m)
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range []struct {
		name string
		f    *valueformat.Format
	}{{"protobuf", pbf}, {"json", js}} {
		b.Run("Encode/"+f.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				out, err := f.f.AppendEncode(buf[:0], m)
				if err != nil {
					b.Fatal(err)
				}
				buf = out
			}
			b.SetBytes(int64(len(buf)))
		})
	}
	b.Run("FromJSON", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(jsValue)))
		var buf []byte
		for b.Loop() {
			out, err := js.AppendFromJSON(buf[:0], desc, jsValue)
			if err != nil {
				b.Fatal(err)
			}
			buf = out
		}
	})
}
