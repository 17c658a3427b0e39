package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferryproxy/ferry/internal/config"
)

// BenchmarkMetrics measures what metrics.enabled costs, against metrics
// off, in one run: the echo route of BenchmarkUnary (request and reply
// over Kafka), one client connection, with the admin listener running in
// both (it costs nothing until scraped). With metrics on, every call
// passes the metrics interceptor and every Kafka client its kprom hook.
// It reports calls/s, latency and the process's CPU time per call
// (client, Ferry and, with the embedded broker, Kafka).
//
// Run: go test ./internal/app -run '^$' -bench Metrics -benchtime 5000x -count 3
func BenchmarkMetrics(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		for _, on := range []bool{false, true} {
			name := map[bool]string{false: "off", true: "on"}[on]
			b.Run(name+"/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
				topic := kit.Topic(b, 1, nil)
				y := fmt.Sprintf(`
clusters:
  - name: default
    brokers: [%q]
listeners:
  grpc: {address: 127.0.0.1:0, shutdown_timeout: 2s}
  admin: {address: 127.0.0.1:0}
metrics: {enabled: %t}
protos:
  - files: [echo.proto]
    import_paths: [%q]
log:
  level: warn
routes:
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 30s}
`, strings.Join(kit.Seeds(b), ","), on, filepath.Join(root(b), "examples", "echo"), topic, topic)
				path := filepath.Join(b.TempDir(), "ferry.yaml")
				writeFile(b, path, y)
				cfg, err := config.Load(path)
				if err != nil {
					b.Fatal(err)
				}
				a := startConfig(b, cfg)
				cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				req := echo("benchmark payload of a typical small request")
				cpu0 := processCPU()
				runLoad(b, inflight, func(ctx context.Context, _ int) error {
					var resp []byte
					return cc.Invoke(ctx, echoSvc+"UnaryEcho", &req, &resp)
				})
				if cpu := processCPU() - cpu0; cpu > 0 {
					b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/call")
				}
			})
		}
	}
}
