// Package tracing is Ferry's OpenTelemetry tracing: the edge interceptor
// that starts a span for every call of every face, taking the caller's W3C
// trace context (traceparent, tracestate) from its gRPC metadata or HTTP
// headers and passing Ferry's own on in a back end's calls, and the
// helpers the capabilities use to carry a trace across Kafka in record
// headers (see internal/layout's Trace).
//
// Nothing here holds a tracer provider of its own: the interceptor is
// given one, and every later span is started from the provider of the span
// its context already carries. Where no span is in the context, tracing is
// off for that call and the helpers do nothing.
package tracing

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/layout"
)

// Scope is the instrumentation scope of Ferry's spans.
const Scope = "github.com/ferryproxy/ferry"

// propagator reads and writes W3C trace context, the one format Ferry
// speaks on every face and on Kafka.
var propagator = propagation.TraceContext{}

// Interceptor returns the edge interceptor that traces every call: a
// server span for inbound calls (gRPC, REST, Kafka-Pixy REST), child of
// the caller's trace context when it sent one, and a client span for a
// back end's call to its server, whose traceparent replaces any the call's
// metadata had. The span is in the context for the rest of the call.
func Interceptor(tp trace.TracerProvider) edge.Interceptor {
	tr := tp.Tracer(Scope)
	return edge.Interceptor{
		Begin: func(ctx context.Context, c *edge.Call) (context.Context, error) {
			if c.Face == edge.BackendOut {
				return beginOutbound(ctx, tr, c), nil
			}
			ctx = propagator.Extract(ctx, callCarrier{c})
			ctx, _ = tr.Start(ctx, spanName(c), trace.WithSpanKind(trace.SpanKindServer),
				trace.WithTimestamp(c.Start),
				trace.WithAttributes(attribute.String("ferry.face", string(c.Face))))
			return ctx, nil
		},
		End: end,
	}
}

// beginOutbound starts the client span of a back end's call and puts its
// trace context in the call's outgoing metadata.
func beginOutbound(ctx context.Context, tr trace.Tracer, c *edge.Call) context.Context {
	ctx, _ = tr.Start(ctx, spanName(c), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("ferry.face", string(c.Face)),
			attribute.String("rpc.system", "grpc"), attribute.String("server.address", c.Peer)))
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	delete(md, layout.TraceParent)
	delete(md, layout.TraceState)
	propagator.Inject(ctx, mdCarrier(md))
	return metadata.NewOutgoingContext(ctx, md)
}

// end ends the call's span with its outcome.
func end(ctx context.Context, c *edge.Call, err error) {
	sp := trace.SpanFromContext(ctx)
	if !sp.IsRecording() {
		sp.End()
		return
	}
	if c.Path != "" {
		if route := c.Route(); route != "" {
			sp.SetName(route)
			sp.SetAttributes(attribute.String("http.route", route))
		}
		if rpc := c.RPC(); rpc != "" {
			sp.SetAttributes(attribute.String("rpc.method", rpc))
		}
		sp.SetAttributes(attribute.Int("http.response.status_code", c.Status()))
		if c.Status() >= 500 {
			sp.SetStatus(otelcodes.Error, "")
		}
	} else {
		code := status.Code(err)
		sp.SetAttributes(attribute.String("rpc.method", c.Method), attribute.Int("rpc.grpc.status_code", int(code)))
		if code != codes.OK {
			sp.SetStatus(otelcodes.Error, status.Convert(err).Message())
		}
	}
	sp.End()
}

// spanName is a call's span name: "package.Service/Method" for gRPC, the
// HTTP method and path of a REST call until its route is known.
func spanName(c *edge.Call) string {
	if c.Path != "" {
		return c.Method + " " + c.Path
	}
	return strings.TrimPrefix(c.Method, "/")
}

// callCarrier reads a call's metadata or HTTP headers for the propagator.
type callCarrier struct{ c *edge.Call }

func (cc callCarrier) Get(key string) string { return cc.c.Header(key) }
func (cc callCarrier) Set(string, string)    {}
func (cc callCarrier) Keys() []string        { return nil }

// mdCarrier writes outgoing gRPC metadata for the propagator, keys as
// given (lower case), where http.Header would capitalize them.
type mdCarrier metadata.MD

func (m mdCarrier) Get(key string) string {
	if vs := m[key]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
func (m mdCarrier) Set(key, value string) { m[key] = []string{value} }
func (m mdCarrier) Keys() []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// traceCarrier is a layout.Trace for the propagator.
type traceCarrier struct{ t *layout.Trace }

func (tc traceCarrier) Get(key string) string {
	switch key {
	case layout.TraceParent:
		return tc.t.Parent
	case layout.TraceState:
		return tc.t.State
	}
	return ""
}

func (tc traceCarrier) Set(key, value string) {
	switch key {
	case layout.TraceParent:
		tc.t.Parent = value
	case layout.TraceState:
		tc.t.State = value
	}
}

func (tc traceCarrier) Keys() []string { return []string{layout.TraceParent, layout.TraceState} }

// Active reports whether ctx carries a span: the call it belongs to is
// traced.
func Active(ctx context.Context) bool { return trace.SpanContextFromContext(ctx).IsValid() }

// Start starts a span named name, a child of the span in ctx, with the
// provider of that span. It returns ctx and nil when ctx carries no span.
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.SpanContext().IsValid() {
		return ctx, nil
	}
	return parent.TracerProvider().Tracer(Scope).Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Of returns the trace context of the span in ctx as record headers carry
// it; it has no parent when ctx carries no span.
func Of(ctx context.Context) layout.Trace {
	var t layout.Trace
	propagator.Inject(ctx, traceCarrier{&t})
	return t
}

// StartConsumer starts, with tp, a consumer span named name for a record
// that carried t: a child of the trace t continues (a new trace when t has
// no parent or is not valid), with attrs. tp nil starts none: ctx and nil.
func StartConsumer(ctx context.Context, tp trace.TracerProvider, t layout.Trace, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if tp == nil {
		return ctx, nil
	}
	ctx = propagator.Extract(ctx, traceCarrier{&t})
	return tp.Tracer(Scope).Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// Linked starts a consumer span named name for a record that carried t, a
// child of t's trace with a link to the span in ctx (the call that
// delivers the record), with the provider of that span. It returns nil
// when ctx carries no span or t no valid trace context.
func Linked(ctx context.Context, t layout.Trace, name string, attrs ...attribute.KeyValue) trace.Span {
	here := trace.SpanFromContext(ctx)
	if !here.SpanContext().IsValid() || t.Parent == "" {
		return nil
	}
	rctx := propagator.Extract(context.Background(), traceCarrier{&t})
	if !trace.SpanContextFromContext(rctx).IsValid() {
		return nil
	}
	_, sp := here.TracerProvider().Tracer(Scope).Start(rctx, name, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.Link{SpanContext: here.SpanContext()}), trace.WithAttributes(attrs...))
	return sp
}

// Fail marks sp failed with code and msg unless code is OK; sp may be nil.
func Fail(sp trace.Span, code codes.Code, msg string) {
	if sp == nil {
		return
	}
	sp.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
	if code != codes.OK {
		sp.SetStatus(otelcodes.Error, msg)
	}
}
