package produce

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// ordersInput returns the input type of orders.v1.Orders/method, compiled at
// run time so its messages are dynamic.
func ordersInput(t testing.TB, method string) protoreflect.MessageDescriptor {
	t.Helper()
	reg, err := protoreg.Load(context.Background(), "testdata", []protoreg.Source{{Files: []string{"orders.proto"}}})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := reg.Method("/orders.v1.Orders/" + method)
	if !ok {
		t.Fatalf("no method %s", method)
	}
	return m.Desc.Input()
}

// encode returns the wire form of the JSON message js of type md.
func encode(t testing.TB, md protoreflect.MessageDescriptor, js string) []byte {
	t.Helper()
	m := dynamicpb.NewMessage(md)
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidateRules(t *testing.T) {
	in := ordersInput(t, "Place")
	f, err := newRequestFields(&config.ProduceRoute{Validate: true}, in)
	if err != nil {
		t.Fatal(err)
	}
	if f.rules == nil {
		t.Fatal("no rules found on orders.v1.PlaceRequest")
	}
	for _, tc := range []struct {
		req  string
		want []string // in the message; none: valid
		rule string   // the first violation's rule id in the detail
	}{
		{req: `{"customer": "ann", "order": {"sku": "x", "quantity": 2}}`},
		{req: `{"customer": "ann", "order": {"quantity": 1}, "express": true, "address": "1 Main St"}`},
		{
			req:  `{"customer": "al", "order": {"quantity": 1}}`,
			want: []string{"customer: must be at least 3 characters [string.min_len]"},
			rule: "string.min_len",
		},
		{
			req:  `{"customer": "ann", "order": {"sku": "x"}}`,
			want: []string{"order.quantity: must be greater than 0 [uint32.gt]"},
			rule: "uint32.gt",
		},
		{
			req:  `{"customer": "ann"}`,
			want: []string{"order: value is required [required]"},
			rule: "required",
		},
		{
			req:  `{"customer": "ann", "order": {"quantity": 1}, "express": true}`,
			want: []string{"express orders need an address [place.express_address]"},
			rule: "place.express_address",
		},
		{
			req: `{"order": {}}`,
			want: []string{
				"request message 1 is not a valid orders.v1.PlaceRequest: ",
				"customer: must be at least 3 characters [string.min_len]; order.quantity: must be greater than 0 [uint32.gt]",
				"; nothing of it was written",
			},
			rule: "string.min_len",
		},
	} {
		_, err := f.decode(encode(t, in, tc.req), 1)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v, want valid", tc.req, err)
			}
			continue
		}
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", tc.req, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(st.Message(), w) {
				t.Errorf("%s: message %q lacks %q", tc.req, st.Message(), w)
			}
		}
		var vs *validate.Violations
		for _, d := range st.Details() {
			if v, ok := d.(*validate.Violations); ok {
				vs = v
			}
		}
		if got := vs.GetViolations(); len(got) == 0 || got[0].GetRuleId() != tc.rule {
			t.Errorf("%s: violations detail %v, want rule %s first", tc.req, vs, tc.rule)
		}
	}
	// A message that does not decode still fails as before.
	if _, err := f.decode([]byte{0x0a, 0x02, 0xff, 0xfe}, 2); !strings.Contains(status.Convert(err).Message(), "request message 2 is not a orders.v1.PlaceRequest") {
		t.Errorf("undecodable request: %v", err)
	}
}

// TestValidateRulesFound checks which input types get rules: those reached
// through a map value do, a recursive type without any does not, and
// without validate nothing is looked up.
func TestValidateRulesFound(t *testing.T) {
	for method, want := range map[string]bool{"Place": true, "Ship": true, "Ping": false} {
		f, err := newRequestFields(&config.ProduceRoute{Validate: true}, ordersInput(t, method))
		if err != nil {
			t.Fatal(err)
		}
		if got := f.rules != nil; got != want {
			t.Errorf("%s: rules found %v, want %v", method, got, want)
		}
	}
	f, err := newRequestFields(&config.ProduceRoute{KeyFromRequest: "{customer}"}, ordersInput(t, "Place"))
	if err != nil || f.rules != nil {
		t.Errorf("without validate: rules %v, err %v; want none", f.rules, err)
	}
	in := ordersInput(t, "Ship")
	f, _ = newRequestFields(&config.ProduceRoute{Validate: true}, in)
	_, err = f.decode(encode(t, in, `{"orders": {"a": {"quantity": 0}}}`), 1)
	if !strings.Contains(status.Convert(err).Message(), `orders["a"].quantity: must be greater than 0 [uint32.gt]`) {
		t.Errorf("a map value breaking its rule: %v", err)
	}
}

// BenchmarkValidate compares decoding a request with decoding and checking
// its rules:
//
//	go test ./internal/produce -run '^$' -bench Validate -benchmem
func BenchmarkValidate(b *testing.B) {
	in := ordersInput(b, "Place")
	value := encode(b, in, `{"customer": "ann", "order": {"sku": "x", "quantity": 2}, "express": true, "address": "1 Main St"}`)
	rules, err := newRequestFields(&config.ProduceRoute{Validate: true}, in)
	if err != nil {
		b.Fatal(err)
	}
	decodeOnly := *rules
	decodeOnly.rules = nil
	for name, f := range map[string]*requestFields{"decode": &decodeOnly, "decode+rules": rules} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.decode(value, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestValidateRulesBroken: a rule whose expression does not compile is an
// error when the route binds the method, not on each call.
func TestValidateRulesBroken(t *testing.T) {
	dir := t.TempDir()
	src := `syntax = "proto3";
package broken;
import "buf/validate/validate.proto";
service S { rpc M(Req) returns (Req); }
message Req {
  int32 n = 1 [(buf.validate.field).cel = {id: "n.bad", expression: "this.nope > 0"}];
}
`
	if err := os.WriteFile(filepath.Join(dir, "broken.proto"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := protoreg.Load(context.Background(), dir, []protoreg.Source{{Files: []string{"broken.proto"}}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := reg.Method("/broken.S/M")
	_, err = newRequestFields(&config.ProduceRoute{Validate: true}, m.Desc.Input())
	if err == nil || !strings.Contains(err.Error(), "produce.validate: compiling the buf.validate rules of broken.Req") {
		t.Errorf("newRequestFields: %v, want the rules' compilation error", err)
	}
}

// TestValidatePredefinedRules: a rule the user's proto defines itself
// (buf.validate.predefined on an extension of StringRules) is checked too.
func TestValidatePredefinedRules(t *testing.T) {
	reg, err := protoreg.Load(context.Background(), "testdata", []protoreg.Source{{Files: []string{"predefined.proto"}}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := reg.Method("/predefined.S/M")
	in := m.Desc.Input()
	f, err := newRequestFields(&config.ProduceRoute{Validate: true}, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.decode(encode(t, in, `{"name": "ABC"}`), 1); err != nil {
		t.Errorf("a valid request: %v", err)
	}
	_, err = f.decode(encode(t, in, `{"name": "abc"}`), 1)
	if !strings.Contains(status.Convert(err).Message(), "name: must be upper case [string.shouty]") {
		t.Errorf("a request breaking the predefined rule: %v", err)
	}
}
