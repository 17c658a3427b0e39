package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/layout"
)

const callerTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func provider() (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	return sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)), exp
}

// TestInterceptor: an inbound call's span continues the caller's
// traceparent and carries its code; an outbound call's traceparent
// replaces the one its metadata had, in lower case.
func TestInterceptor(t *testing.T) {
	tp, exp := provider()
	in := Interceptor(tp)
	c := edge.NewCall(edge.GRPC, "/p.S/M", func(k string) string {
		if k == "traceparent" {
			return callerTP
		}
		return ""
	})
	ctx, err := in.Begin(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	server := trace.SpanContextFromContext(ctx)
	if server.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("server span of trace %s", server.TraceID())
	}
	if got := Of(ctx); got.Parent == "" || got.Parent == callerTP {
		t.Errorf("Of = %q, want the server span's context", got.Parent)
	}

	out := edge.NewCall(edge.BackendOut, "/p.S/M", nil)
	octx := metadata.NewOutgoingContext(ctx, metadata.Pairs("traceparent", callerTP, "x", "y"))
	octx, _ = in.Begin(octx, out)
	md, _ := metadata.FromOutgoingContext(octx)
	if tp := md.Get("traceparent"); len(tp) != 1 || tp[0] == callerTP {
		t.Errorf("outbound traceparent = %q, want one of the client span", tp)
	}
	if _, ok := md["Traceparent"]; ok || len(md.Get("x")) != 1 {
		t.Errorf("outbound metadata %v", md)
	}
	in.End(octx, out, nil)
	in.End(ctx, c, status.Error(codes.NotFound, "no"))

	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	if s := spans[1]; s.Name != "p.S/M" || s.SpanKind != trace.SpanKindServer || s.Status.Description != "no" {
		t.Errorf("server span %q %v %+v", s.Name, s.SpanKind, s.Status)
	}
	if s := spans[0]; s.SpanKind != trace.SpanKindClient || s.Parent.SpanID() != server.SpanID() {
		t.Errorf("client span %v, parent %s, want %s", s.SpanKind, s.Parent.SpanID(), server.SpanID())
	}
}

// TestOff: without a span in the context the helpers start nothing and
// carry nothing.
func TestOff(t *testing.T) {
	ctx := context.Background()
	if Active(ctx) {
		t.Error("Active without a span")
	}
	if _, sp := Start(ctx, "x", trace.SpanKindInternal); sp != nil {
		t.Error("Start without a span started one")
	}
	if got := Of(ctx); got != (layout.Trace{}) {
		t.Errorf("Of = %+v", got)
	}
	if sp := Linked(ctx, layout.Trace{Parent: callerTP}, "x"); sp != nil {
		t.Error("Linked without a span started one")
	}
	if _, sp := StartConsumer(ctx, nil, layout.Trace{Parent: callerTP}, "x"); sp != nil {
		t.Error("StartConsumer without a provider started one")
	}
	tp, _ := provider()
	_, sp := StartConsumer(ctx, tp, layout.Trace{Parent: callerTP}, "x")
	if sp.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Error("StartConsumer did not continue the record's trace")
	}
	sp.End()
}
