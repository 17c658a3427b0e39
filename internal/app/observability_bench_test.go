package app_test

import (
	"context"
	"strconv"
	"testing"

	"google.golang.org/grpc/metadata"
)

// BenchmarkObservability measures what metrics and tracing cost a unary
// call through the whole proxy — client, produce route, Kafka, Ferry's
// back end, a real gRPC server, and back — against both off, in one run:
// none (metrics and tracing off); metrics (on, the default); tracing
// (every trace sampled and exported with the OTLP gRPC exporter to an
// in-test receiver that drops what it gets); both; and tracing with no
// trace sampled (contexts still travel). The client sends a traceparent,
// as a traced caller would. It reports calls/s, latency and the process's
// CPU time per call (client, Ferry, the server, the receiver and, with the
// embedded broker, Kafka).
//
// Run: go test ./internal/app -run '^$' -bench Observability -benchtime 5000x
func BenchmarkObservability(b *testing.B) {
	recv := startOTLPReceiver(b, false)
	tracing := "tracing: {enabled: true, otlp_endpoint: " + recv.addr + "}\n"
	for _, inflight := range []int{1, 64} {
		for _, mode := range []struct {
			name    string
			metrics bool
			yaml    string
		}{
			{"none", false, ""},
			{"metrics", true, ""},
			{"tracing", false, tracing},
			{"both", true, tracing},
			{"tracing-unsampled", false, "tracing: {enabled: true, otlp_endpoint: " + recv.addr + ", sample_per_million: 0}\n"},
		} {
			b.Run(mode.name+"/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
				srv := startEchoServer(b, "bench")
				req, rep := kit.Topic(b, 1, nil), kit.Topic(b, 1, nil)
				cfg := ferryConfig(b, proxyConfig(b, req, rep, srv.addr, mode.yaml))
				cfg.Metrics.Enabled = mode.metrics
				cc := dial(b, startConfig(b, cfg))
				// Unsampled, so that the sampling rate is Ferry's.
				md := metadata.Pairs("traceparent", "00-"+clientTraceID+"-"+clientSpanID+"-00")
				msg := echo("benchmark payload of a typical small request")
				cpu0 := processCPU()
				runLoad(b, inflight, func(ctx context.Context, _ int) error {
					var resp []byte
					return cc.Invoke(metadata.NewOutgoingContext(ctx, md), echoSvc+"UnaryEcho", &msg, &resp)
				})
				if cpu := processCPU() - cpu0; cpu > 0 {
					b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/call")
				}
			})
		}
	}
}
