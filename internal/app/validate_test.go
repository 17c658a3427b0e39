package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// ordersConfig is a configuration with testdata/validate/orders.proto and
// routes.
func ordersConfig(t *testing.T, routes string) *config.Config {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "validate"))
	if err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners: {grpc: {address: 127.0.0.1:0}}
protos: [{files: [orders.proto], import_paths: [%q]}]
log: {level: "${FERRY_TEST_LOG:-warn}"}
routes:
%s`, kit.ClusterYAML(t), dir, routes)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	return cfg
}

// TestValidateRules: with validate, a produce route writes a request that
// passes its input type's buf.validate rules and refuses each one that
// breaks a rule with INVALID_ARGUMENT naming the field and the rule,
// writing nothing of it.
func TestValidateRules(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	cfg := ordersConfig(t, fmt.Sprintf(`
  - when: [{method: shop.orders.v1.Orders/Place}]
    produce: {topic: %s, one_way_ack: true, validate: true}
`, topic))
	ctx := testkit.Context(t, 20*time.Second)
	reg, err := app.LoadProtos(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := reg.Method("/shop.orders.v1.Orders/Place")
	if !ok {
		t.Fatal("no method Place")
	}
	encode := func(js string) []byte {
		msg := dynamicpb.NewMessage(m.Desc.Input())
		if err := protojson.Unmarshal([]byte(js), msg); err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := startConfig(t, cfg)
	cc := dial(t, a)
	place := func(js string) error {
		req, out := encode(js), []byte(nil)
		return cc.Invoke(ctx, "/shop.orders.v1.Orders/Place", &req, &out, grpc.ForceCodecV2(rawCodec{}))
	}

	valid := `{"customer": "ann", "order": {"sku": "tea", "quantity": 2}}`
	if err := place(valid); err != nil {
		t.Fatalf("a valid request: %v", err)
	}
	for _, tc := range []struct{ req, want, rule string }{
		{`{"customer": "al", "order": {"sku": "tea", "quantity": 2}}`, "customer: must be at least 3 characters [string.min_len]", "string.min_len"},
		{`{"customer": "ann", "order": {"sku": "tea"}}`, "order.quantity: must be greater than 0 [uint32.gt]", "uint32.gt"},
		{`{"customer": "ann", "order": {"quantity": 2}}`, "order.sku: must be at least 1 characters [string.min_len]", "string.min_len"},
		{`{"customer": "ann"}`, "order: value is required [required]", "required"},
		{`{"customer": "ann", "order": {"sku": "tea", "quantity": 2}, "express": true}`, "express orders need an address [order.express_address]", "order.express_address"},
	} {
		st := status.Convert(place(tc.req))
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "request message 1 is not a valid shop.orders.v1.PlaceOrderRequest: "+tc.want) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming %q", tc.req, st.Err(), tc.want)
			continue
		}
		var vs *validate.Violations
		for _, d := range st.Details() {
			if v, ok := d.(*validate.Violations); ok {
				vs = v
			}
		}
		if len(vs.GetViolations()) != 1 || vs.GetViolations()[0].GetRuleId() != tc.rule {
			t.Errorf("%s: violations detail %v, want one of rule %s", tc.req, vs, tc.rule)
		}
	}
	recs := readTopic(t, topic, 1)
	got, want := dynamicpb.NewMessage(m.Desc.Input()), dynamicpb.NewMessage(m.Desc.Input())
	_ = protojson.Unmarshal([]byte(valid), want)
	if err := proto.Unmarshal(recs[0].Value, got); err != nil || !proto.Equal(got, want) {
		t.Errorf("the record is %v (%v), want the valid request", got, err)
	}
	if n := endOffset(t, topic); n != 1 {
		t.Errorf("the topic holds %d records, want only the valid request", n)
	}
}

// TestCarriedAnnotations: a user's proto that imports
// google/api/annotations.proto without shipping it compiles, and its
// google.api.http rules read back as the generated type.
func TestCarriedAnnotations(t *testing.T) {
	cfg := ordersConfig(t, fmt.Sprintf(`
  - when: [{method: shop.orders.v1.Orders/Place}]
    produce: {topic: %s}
`, kit.Topic(t, 1, nil)))
	reg, err := app.LoadProtos(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := reg.Method("/shop.orders.v1.Orders/Place")
	rule, ok := proto.GetExtension(m.Desc.Options(), annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule.GetPost() != "/v1/orders" || rule.GetBody() != "*" {
		t.Errorf("google.api.http of Place = %v, want post /v1/orders with body *", rule)
	}
}

// TestValidateRulesBroken: a rule whose CEL expression does not compile
// stops Ferry from starting, naming the route and the message type.
func TestValidateRulesBroken(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "broken.proto"), `syntax = "proto3";
package broken;
import "buf/validate/validate.proto";
service S { rpc M(Req) returns (Req); }
message Req {
  int32 n = 1 [(buf.validate.field).cel = {id: "n.bad", expression: "this.nope > 0"}];
}
`)
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners: {grpc: {address: 127.0.0.1:0}}
protos: [{files: [broken.proto], import_paths: [%q]}]
routes:
  - name: broken
    when: [{method: broken.S/M}]
    produce: {topic: %s, validate: true}
`, kit.ClusterYAML(t), dir, kit.Topic(t, 1, nil))
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	err = app.Validate(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "route broken, method /broken.S/M: produce.validate: compiling the buf.validate rules of broken.Req") {
		t.Errorf("validate: %v, want the rules' compilation error", err)
	}
}
