package app

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/tracing"
)

// exportTimeout bounds one export of spans to the OTLP receiver.
const exportTimeout = 10 * time.Second

// startTracing builds the tracer provider when tracing.enabled, exporting
// to the OTLP gRPC receiver tracing.otlp_endpoint (or to exp, for tests),
// and returns the edge interceptor that traces every call. It is the
// first component on the list, so it is closed last: spans of calls that
// end while Ferry stops are still exported, and its Close flushes them
// within Close's context. The exporter connects lazily: a receiver that
// is down costs lost spans, never a failed start.
func (a *App) startTracing(ctx context.Context, exp sdktrace.SpanExporter) (edge.Interceptor, bool, error) {
	t := a.cfg.Tracing
	if !t.Enabled {
		return edge.Interceptor{}, false, nil
	}
	var proc sdktrace.SpanProcessor
	if exp != nil {
		proc = sdktrace.NewSimpleSpanProcessor(exp)
	} else {
		creds := credentials.NewClientTLSFromCert(nil, "")
		if t.Insecure {
			creds = insecure.NewCredentials()
		}
		e, err := tracing.NewOTLPExporter(ctx, t.OTLPEndpoint, creds, exportTimeout)
		if err != nil {
			return edge.Interceptor{}, false, fmt.Errorf("tracing.otlp_endpoint: %w", err)
		}
		proc = sdktrace.NewBatchSpanProcessor(e)
		// OpenTelemetry reports failed exports to one process-wide
		// handler, by default the standard log package every few
		// seconds while the receiver is down: Ferry's log holds back the
		// repeats.
		logger := a.logger.With("component", "tracing")
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logger.Warn("exporting spans", "err", err) }))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(proc),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", t.ServiceName))),
		// A caller's sampling decision is kept; traces that start at
		// Ferry are sampled at the configured rate.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(float64(t.SamplePerMillion)/1e6))),
	)
	a.tracer = tp
	a.own("the tracer provider", closeFunc(tp.Shutdown))
	return tracing.Interceptor(tp), true, nil
}
