package ferryapi

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/layout"
	"github.com/ferryproxy/ferry/internal/tracing"
)

// traceDeliveries starts a "deliver" span for each of n messages (msg
// returns the i-th) that carries a trace context in traceparent and
// tracestate headers: a child of the record's trace, linked to the span
// of the Consume or Poll call in ctx. It returns nil, at the cost of one
// context lookup, when the call is not traced.
func traceDeliveries(ctx context.Context, group string, n int, msg func(i int) *kafkaapi.Message) []trace.Span {
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

// endDeliveries ends the spans of traceDeliveries once the messages were
// handed to the client, or failed to be (err).
func endDeliveries(spans []trace.Span, err error) {
	for _, sp := range spans {
		if err != nil {
			sp.SetStatus(otelcodes.Error, err.Error())
		}
		sp.End()
	}
}
