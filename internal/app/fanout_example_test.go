package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestFanoutExampleMessageID follows the README's fan-out steps as grpcurl
// takes them: responses decoded with the example's own proto and shown as
// JSON carry the message id (the proto declares field 32767 as bytes, so
// it is not dropped as an unknown field), and the id as shown, standard
// base64, resumes the stream after that message.
func TestFanoutExampleMessageID(t *testing.T) {
	kit.CheckLeaks(t)
	cfg := loadExample(t, "fanout")
	topic := "messages"
	if testkit.Real() {
		topic = kit.Topic(t, 1, nil)
		for i := range cfg.Routes {
			cfg.Routes[i].Fetch.Topic = topic
		}
	}
	reg, err := app.LoadProtos(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := reg.Method(fanoutMethod)
	if !ok {
		t.Fatalf("the example defines no %s", fanoutMethod)
	}
	// asJSON shows a response as grpcurl does.
	asJSON := func(b []byte) map[string]string {
		t.Helper()
		msg := dynamicpb.NewMessage(m.Desc.Output())
		if err := proto.Unmarshal(b, msg); err != nil {
			t.Fatal(err)
		}
		j, err := protojson.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]string
		if err := json.Unmarshal(j, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}

	a := startConfig(t, cfg)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.AllowAutoTopicCreation(), kgo.SeedBrokers(a.KafkaAddrs("default")...))
	produceMsgs(t, prod, topic, "lobby", nil, "hello everyone", "room 42")
	cc := dial(t, a)

	all := subscribe(t, cc, nil)
	defer all.cancel()
	var shown []map[string]string
	for range 2 {
		var b []byte
		if err := all.s.RecvMsg(&b); err != nil {
			t.Fatal(err)
		}
		shown = append(shown, asJSON(b))
	}
	first := shown[0]
	if first["message"] != "hello everyone" || first["messageId"] == "" {
		t.Fatalf("the first message shows as %v: want its message and its messageId", first)
	}
	if _, err := base64.StdEncoding.DecodeString(first["messageId"]); err != nil {
		t.Fatalf("messageId %q is not base64: %v", first["messageId"], err)
	}

	resumed := subscribe(t, cc, metadata.Pairs("last-message-id", first["messageId"]))
	defer resumed.cancel()
	var b []byte
	if err := resumed.s.RecvMsg(&b); err != nil {
		t.Fatal(err)
	}
	if got := asJSON(b); got["message"] != "room 42" || got["messageId"] != shown[1]["messageId"] {
		t.Errorf("resumed after %s: got %v, want the second message %v", first["messageId"], got, shown[1])
	}
}
