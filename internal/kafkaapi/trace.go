package kafkaapi

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferryproxy/ferry/internal/layout"
	"github.com/ferryproxy/ferry/internal/tracing"
)

// traceAcks records an "ack <topic>" span for each acknowledged record
// that carries a trace context in traceparent and tracestate headers,
// when the acknowledging call in ctx is traced: a child of the record's
// trace, linked to the call, so that a record's trace shows it produced,
// delivered and acknowledged.
func traceAcks(ctx context.Context, group string, recs []*kgo.Record) {
	if len(recs) == 0 || !tracing.Active(ctx) {
		return
	}
	for _, r := range recs {
		sp := tracing.Linked(ctx, layout.RecordTrace(r.Headers), "ack "+r.Topic,
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "settle"),
			attribute.String("messaging.destination.name", r.Topic),
			attribute.String("messaging.consumer.group.name", group),
			attribute.Int("messaging.destination.partition.id", int(r.Partition)),
			attribute.Int64("messaging.kafka.offset", r.Offset))
		if sp != nil {
			sp.End()
		}
	}
}

// TraceDeliveries starts a "deliver" span for each of n messages (msg
// returns the i-th) that carries a trace context in traceparent and
// tracestate headers: a child of the record's trace, linked to the span
// of the Consume or Poll call in ctx. It returns nil, at the cost of one
// context lookup, when the call is not traced.
func TraceDeliveries(ctx context.Context, group string, n int, msg func(i int) *Message) []trace.Span {
	if !tracing.Active(ctx) {
		return nil
	}
	var spans []trace.Span
	for i := range n {
		m := msg(i)
		t := layout.RecordTrace(m.Headers)
		if t.Parent == "" {
			continue
		}
		sp := tracing.Linked(ctx, t, "deliver "+m.Topic,
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", m.Topic),
			attribute.String("messaging.consumer.group.name", group),
			attribute.Int("messaging.destination.partition.id", int(m.Partition)),
			attribute.Int64("messaging.kafka.offset", m.Offset),
			attribute.Int("ferry.deliveries", m.Deliveries))
		if sp != nil {
			spans = append(spans, sp)
		}
	}
	return spans
}

// EndDeliveries ends the spans of TraceDeliveries once the messages were
// handed to the client, or failed to be (err).
func EndDeliveries(spans []trace.Span, err error) {
	for _, sp := range spans {
		if err != nil {
			sp.SetStatus(otelcodes.Error, err.Error())
		}
		sp.End()
	}
}
