package app_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// clientTraceparent is the trace context a test's client sends.
const (
	clientTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID      = "00f067aa0ba902b7"
	clientTraceparent = "00-" + clientTraceID + "-" + clientSpanID + "-01"
)

// startTraced starts Ferry with cfg, exporting spans to exp.
func startTraced(t testing.TB, cfg *config.Config, exp *tracetest.InMemoryExporter) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.StartTraced(ctx, cfg, testLogger(t), exp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	return a
}

// traceSeen records the traceparent metadata the echo server's calls
// carried.
type traceSeen struct {
	mu   sync.Mutex
	seen [][]string
}

func (s *traceSeen) block(ctx context.Context, _ string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.seen = append(s.seen, md.Get("traceparent"))
	s.mu.Unlock()
	return nil
}

func (s *traceSeen) get() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.seen...)
}

// headerValues returns every value of the record's header k.
func headerValues(r *kgo.Record, k string) []string {
	var vs []string
	for _, h := range r.Headers {
		if h.Key == k {
			vs = append(vs, string(h.Value))
		}
	}
	return vs
}

// proxyTraced starts an echo server whose calls' traceparent is recorded
// and Ferry proxying to it through Kafka, with tracing as given.
func proxyTraced(t *testing.T, tracing string, exp *tracetest.InMemoryExporter) (cc *grpc.ClientConn, seen *traceSeen, req, rep string) {
	srv := startEchoServer(t, "traced")
	seen = &traceSeen{}
	srv.block = seen.block
	req, rep = kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	cfg := ferryConfig(t, proxyConfig(t, req, rep, srv.addr, tracing))
	a := startTraced(t, cfg, exp)
	return dial(t, a), seen, req, rep
}

// TestTracingAcrossKafka: one unary call from a client that sends a
// traceparent, through a produce route, Kafka, Ferry's back end, to a real
// gRPC server and back. Every span is of the client's trace, each the
// child of the one before, the request record carries the produce span's
// context once, the server sees the back end's client span as its parent,
// and the reply records carry the back end's span.
func TestTracingAcrossKafka(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	cc, seen, req, rep := proxyTraced(t, "tracing: {enabled: true}\n", exp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md := metadata.Pairs("traceparent", clientTraceparent, "tracestate", "vendor=1")
	r := call(ctx, cc, "UnaryEcho", md, "traced")
	if r.err != nil || len(r.msgs) != 1 || r.msgs[0] != "traced" {
		t.Fatalf("call: %v %q", r.err, r.msgs)
	}

	// The spans of the back end end just after its final reply was
	// written; wait for all six.
	want := map[string]trace.SpanKind{
		"grpc.examples.echo.Echo/UnaryEcho":       trace.SpanKindServer,
		"produce " + req:                          trace.SpanKindProducer,
		"wait for replies":                        trace.SpanKindInternal,
		"consume " + req:                          trace.SpanKindConsumer,
		"grpc.examples.echo.Echo/UnaryEcho (out)": trace.SpanKindClient,
	}
	var byName map[string]tracetest.SpanStub
	deadline := time.Now().Add(10 * time.Second)
	for {
		byName = map[string]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			name := s.Name
			if s.SpanKind == trace.SpanKindClient {
				name += " (out)"
			}
			if _, dup := byName[name]; dup {
				t.Fatalf("two spans named %q", name)
			}
			byName[name] = s
		}
		if len(byName) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, kind := range want {
		s, ok := byName[name]
		if !ok {
			t.Fatalf("no span %q among %v", name, keys(byName))
		}
		if s.SpanKind != kind {
			t.Errorf("span %q is of kind %v, want %v", name, s.SpanKind, kind)
		}
		if got := s.SpanContext.TraceID().String(); got != clientTraceID {
			t.Errorf("span %q is of trace %s, want the client's %s", name, got, clientTraceID)
		}
	}
	if len(byName) != len(want) {
		t.Errorf("spans %v, want %d", keys(byName), len(want))
	}
	server := byName["grpc.examples.echo.Echo/UnaryEcho"]
	produce := byName["produce "+req]
	consume := byName["consume "+req]
	out := byName["grpc.examples.echo.Echo/UnaryEcho (out)"]
	parents := []struct{ child, parent string }{
		{"grpc.examples.echo.Echo/UnaryEcho", clientSpanID},
		{"produce " + req, server.SpanContext.SpanID().String()},
		{"wait for replies", server.SpanContext.SpanID().String()},
		{"consume " + req, produce.SpanContext.SpanID().String()},
		{"grpc.examples.echo.Echo/UnaryEcho (out)", consume.SpanContext.SpanID().String()},
	}
	for _, p := range parents {
		if got := byName[p.child].Parent.SpanID().String(); got != p.parent {
			t.Errorf("span %q has parent %s, want %s", p.child, got, p.parent)
		}
	}
	if !server.Parent.IsRemote() || server.SpanContext.TraceState().Get("vendor") != "1" {
		t.Errorf("the server span does not continue the client's context: parent %v, state %q", server.Parent, server.SpanContext.TraceState().String())
	}

	// The request records carry the produce span's context, once, and not
	// the client's own traceparent.
	wantTP := fmt.Sprintf("00-%s-%s-01", clientTraceID, produce.SpanContext.SpanID())
	for _, rec := range readTopic(t, req, 2) {
		if tp := headerValues(rec, "meta:traceparent"); len(tp) != 1 || tp[0] != wantTP {
			t.Errorf("request record's meta:traceparent = %q, want [%s]", tp, wantTP)
		}
		if ts := headerValues(rec, "meta:tracestate"); len(ts) != 1 || ts[0] != "vendor=1" {
			t.Errorf("request record's meta:tracestate = %q, want [vendor=1]", ts)
		}
	}
	// The server saw the back end's client span as its parent, once.
	outTP := fmt.Sprintf("00-%s-%s-01", clientTraceID, out.SpanContext.SpanID())
	if s := seen.get(); len(s) != 1 || len(s[0]) != 1 || s[0][0] != outTP {
		t.Errorf("the server saw traceparent %q, want [[%s]]", s, outTP)
	}
	// The reply records carry the back end's span.
	consumeTP := fmt.Sprintf("00-%s-%s-01", clientTraceID, consume.SpanContext.SpanID())
	for _, rec := range readTopic(t, rep, 2) {
		if tp := headerValues(rec, "traceparent"); len(tp) != 1 || tp[0] != consumeTP {
			t.Errorf("reply record's traceparent = %q, want [%s]", tp, consumeTP)
		}
		if tp := headerValues(rec, "meta:traceparent"); len(tp) != 0 {
			t.Errorf("reply record has meta:traceparent %q", tp)
		}
	}
}

func keys(m map[string]tracetest.SpanStub) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestTracingOffByDefault: without tracing, no span is exported, the edge
// chain stays out of every call, and a caller's traceparent travels as
// the ordinary metadata it always did, once.
func TestTracingOffByDefault(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	cc, seen, req, rep := proxyTraced(t, "", exp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := call(ctx, cc, "UnaryEcho", metadata.Pairs("traceparent", clientTraceparent), "untraced")
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, rec := range readTopic(t, req, 2) {
		if tp := headerValues(rec, "meta:traceparent"); len(tp) != 1 || tp[0] != clientTraceparent {
			t.Errorf("request record's meta:traceparent = %q, want the client's", tp)
		}
	}
	for _, rec := range readTopic(t, rep, 2) {
		if tp := headerValues(rec, "traceparent"); len(tp) != 0 {
			t.Errorf("reply record has traceparent %q", tp)
		}
	}
	if s := seen.get(); len(s) != 1 || len(s[0]) != 1 || s[0][0] != clientTraceparent {
		t.Errorf("the server saw traceparent %q, want the client's", s)
	}
	if spans := exp.GetSpans(); len(spans) != 0 {
		t.Errorf("%d spans exported with tracing off", len(spans))
	}
}

// oneWayRoute is a one-way produce route of the echo methods.
const oneWayRoute = `
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: traced-one-way}
`

// TestTracingEdgeIdle: with tracing, metrics and the access log off, the
// gRPC server runs no interceptor at all.
func TestTracingEdgeIdle(t *testing.T) {
	cfg := ferryConfig(t, oneWayRoute)
	cfg.Metrics.Enabled = false
	a := startConfig(t, cfg)
	if n := a.EdgeServerOptions(); n != 0 {
		t.Errorf("the edge chain adds %d server options with tracing, metrics and the access log off", n)
	}
	cfg = ferryConfig(t, oneWayRoute)
	cfg.Metrics.Enabled = false
	cfg.Tracing.Enabled = true
	b := startTraced(t, cfg, tracetest.NewInMemoryExporter())
	if n := b.EdgeServerOptions(); n == 0 {
		t.Error("the edge chain adds no server options with tracing on")
	}
}

// otlpReceiver is a real OTLP/gRPC trace endpoint: the collector's
// TraceService, keeping what it receives.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	addr string

	mu    sync.Mutex
	spans []*tracepb.ResourceSpans
	keep  bool
}

func (r *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	if r.keep {
		r.mu.Lock()
		r.spans = append(r.spans, req.GetResourceSpans()...)
		r.mu.Unlock()
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// received returns the service.name and name of every span received.
func (r *otlpReceiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rs := range r.spans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out = append(out, service+": "+s.GetName())
			}
		}
	}
	return out
}

// startOTLPReceiver serves an OTLP trace receiver on a free port; keep
// makes it remember the spans.
func startOTLPReceiver(t testing.TB, keep bool) *otlpReceiver {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: lis.Addr().String(), keep: keep}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, r)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return r
}

// TestTracingOTLPExport: Ferry exports its spans with the OTLP gRPC
// exporter to a real OTLP receiver, flushed when it stops.
func TestTracingOTLPExport(t *testing.T) {
	recv := startOTLPReceiver(t, true)
	cfg := ferryConfig(t, oneWayRoute)
	cfg.Tracing = config.Tracing{Enabled: true, OTLPEndpoint: recv.addr, Insecure: true, SamplePerMillion: 1_000_000, ServiceName: "ferry-test"}
	a := startConfig(t, cfg)
	cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, resp := []byte{}, []byte(nil)
	// Health answers without Kafka; its call passes the edge like any.
	err = cc.Invoke(ctx, "/grpc.health.v1.Health/Check", &req, &resp, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	a.Close(ctx)
	got := recv.received()
	if !strings.Contains(strings.Join(got, "\n"), "ferry-test: grpc.health.v1.Health/Check") {
		t.Fatalf("the receiver got %q, want the health check's span", got)
	}
}

// TestTracingKafkaAPIDeliveries: a record that carries a traceparent is
// delivered by Ferry's Kafka API, on a Poll and on a Consume stream, with
// a span in the record's trace, a child of the record's span and linked
// to the call that delivered it.
func TestTracingKafkaAPIDeliveries(t *testing.T) {
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(kafkaAPIYAML(t, "tracing: {enabled: true}\n")))
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	a := startTraced(t, cfg, exp)
	topic := kit.Topic(t, 1, nil)
	ctx := testkit.Context(t, 30*time.Second)
	ferry := kafkav1.NewKafkaClient(dialAddr(t, a.GRPCAddr()))
	if _, err := ferry.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String("one"),
		Headers: []*kafkav1.Header{{Key: "traceparent", Value: []byte(clientTraceparent)}}}); err != nil {
		t.Fatal(err)
	}
	poll, err := ferry.Poll(ctx, &kafkav1.PollRequest{Topic: topic, Group: "g1-" + topic, AutoAck: true, Timeout: durationpb.New(10 * time.Second)})
	if err != nil || len(poll.Messages) != 1 {
		t.Fatalf("poll: %v %v", poll, err)
	}
	stream, err := ferry.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&kafkav1.ConsumeRequest{Topic: topic, Group: "g2-" + topic, Credits: 1}); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || len(m.Messages) != 1 {
		t.Fatalf("consume: %v %v", m, err)
	}
	_ = stream.CloseSend()
	if _, err := kafkapixy.NewKafkaPixyClient(dialAddr(t, a.GRPCAddr())).ConsumeNAck(ctx,
		&kafkapixy.ConsNAckRq{Topic: topic, Group: "g3-" + topic, AutoAck: true}); err != nil {
		t.Fatalf("Kafka-Pixy consume: %v", err)
	}

	servers := map[string]tracetest.SpanStub{}
	var delivers []tracetest.SpanStub
	deadline := time.Now().Add(10 * time.Second)
	for len(delivers) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		delivers = delivers[:0]
		for _, s := range exp.GetSpans() {
			switch {
			case s.Name == "deliver "+topic:
				delivers = append(delivers, s)
			case s.SpanKind == trace.SpanKindServer:
				servers[s.SpanContext.SpanID().String()] = s
			}
		}
	}
	if len(delivers) != 3 {
		t.Fatalf("%d deliver spans, want 3 (one Poll, one Consume, one Kafka-Pixy consume)", len(delivers))
	}
	linked := map[string]bool{}
	for _, d := range delivers {
		if d.SpanContext.TraceID().String() != clientTraceID || d.Parent.SpanID().String() != clientSpanID || d.SpanKind != trace.SpanKindConsumer {
			t.Errorf("deliver span %v: trace %s, parent %s, want %s and %s", d.SpanKind, d.SpanContext.TraceID(), d.Parent.SpanID(), clientTraceID, clientSpanID)
		}
		if len(d.Links) != 1 {
			t.Fatalf("deliver span has %d links, want 1", len(d.Links))
		}
		// The Consume stream's span ends after this test; Poll's has.
		if s, ok := servers[d.Links[0].SpanContext.SpanID().String()]; ok {
			linked[s.Name] = true
		}
	}
	if !linked["ferry.kafka.v1.Kafka/Poll"] || !linked["KafkaPixy/ConsumeNAck"] {
		t.Errorf("no deliver span links to the Poll call's span or to Kafka-Pixy's; linked %v", linked)
	}
	// The poll and Kafka-Pixy's consume acknowledged their message as
	// they handed it out (auto_ack).
	var acks []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "ack "+topic {
			acks = append(acks, s)
		}
	}
	if len(acks) != 2 || acks[0].SpanContext.TraceID().String() != clientTraceID || acks[0].Parent.SpanID().String() != clientSpanID || len(acks[0].Links) != 1 {
		t.Errorf("ack spans %+v, want two in the record's trace, children of its span, linked to the calls", acks)
	}
}

// TestTracingKafkaAPIProduce: a record produced through Ferry's Kafka API
// by a traced caller gets a "produce" span, a child of the call's, and
// carries that span's trace context, so its consumers continue the trace;
// a traceparent header the caller wrote itself is kept.
func TestTracingKafkaAPIProduce(t *testing.T) {
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(kafkaAPIYAML(t, "tracing: {enabled: true}\n")))
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	a := startTraced(t, cfg, exp)
	topic := kit.Topic(t, 1, nil)
	ctx := metadata.AppendToOutgoingContext(testkit.Context(t, 30*time.Second), "traceparent", clientTraceparent)
	ferry := kafkav1.NewKafkaClient(dialAddr(t, a.GRPCAddr()))
	if _, err := ferry.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String("traced")}); err != nil {
		t.Fatal(err)
	}
	own := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if _, err := ferry.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String("own"),
		Headers: []*kafkav1.Header{{Key: "traceparent", Value: []byte(own)}}}); err != nil {
		t.Fatal(err)
	}
	recs := readTopic(t, topic, 2)
	var produce tracetest.SpanStub
	deadline := time.Now().Add(10 * time.Second)
	for produce.Name == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		for _, s := range exp.GetSpans() {
			if s.Name == "produce "+topic {
				produce = s
				break
			}
		}
	}
	if produce.Name == "" || produce.SpanKind != trace.SpanKindProducer || produce.SpanContext.TraceID().String() != clientTraceID {
		t.Fatalf("produce span %+v, want a producer span in the caller's trace %s", produce, clientTraceID)
	}
	want := fmt.Sprintf("00-%s-%s-01", clientTraceID, produce.SpanContext.SpanID())
	if got, _ := header(recs[0], "traceparent"); got != want {
		t.Errorf("record traceparent %q, want the produce span's %q", got, want)
	}
	if got, _ := header(recs[1], "traceparent"); got != own {
		t.Errorf("record traceparent %q, want the caller's own header %q", got, own)
	}
}
