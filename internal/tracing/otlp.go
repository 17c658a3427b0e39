package tracing

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// NewOTLPExporter returns a span exporter that speaks OTLP over gRPC to
// the receiver at endpoint (host:port), each export bounded by timeout. It
// connects lazily: a receiver that is down fails exports, not the start.
//
// It is OpenTelemetry's OTLP exporter (otlptrace) with a client of
// Ferry's own rather than otlptracegrpc's: that one imports grpc-go's gzip
// compressor, whose registration is process-wide, so every gRPC client in
// Ferry would start offering gzip to servers and its server accepting it,
// and callers' grpc-accept-encoding would change in the records Ferry
// writes.
func NewOTLPExporter(ctx context.Context, endpoint string, creds credentials.TransportCredentials, timeout time.Duration) (*otlptrace.Exporter, error) {
	return otlptrace.New(ctx, &otlpClient{endpoint: endpoint, creds: creds, timeout: timeout})
}

// otlpClient is an otlptrace.Client over one gRPC connection.
type otlpClient struct {
	endpoint string
	creds    credentials.TransportCredentials
	timeout  time.Duration

	conn *grpc.ClientConn
	svc  coltracepb.TraceServiceClient
}

var _ otlptrace.Client = (*otlpClient)(nil)

// Start creates the connection, which dials on first use.
func (c *otlpClient) Start(context.Context) error {
	conn, err := grpc.NewClient(c.endpoint, grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return fmt.Errorf("creating the OTLP client for %q: %w", c.endpoint, err)
	}
	c.conn, c.svc = conn, coltracepb.NewTraceServiceClient(conn)
	return nil
}

// Stop closes the connection; an export under way fails.
func (c *otlpClient) Stop(context.Context) error { return c.conn.Close() }

// UploadTraces exports spans in one request. Spans the receiver says it
// rejected are an error.
func (c *otlpClient) UploadTraces(ctx context.Context, spans []*tracepb.ResourceSpans) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.svc.Export(ctx, &coltracepb.ExportTraceServiceRequest{ResourceSpans: spans})
	if err != nil {
		return fmt.Errorf("exporting spans to %q: %w", c.endpoint, err)
	}
	if p := resp.GetPartialSuccess(); p.GetRejectedSpans() > 0 {
		return fmt.Errorf("exporting spans to %q: %d rejected: %s", c.endpoint, p.GetRejectedSpans(), p.GetErrorMessage())
	}
	return nil
}
