package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
)

// BenchmarkWeb compares one unary call through the same produce route
// (echo layout: the reply topic is the request topic, no back end) over
// native gRPC, the Connect protocol with JSON and with binary protobuf,
// and gRPC-Web, all on Ferry's gRPC port in the same run. The HTTP
// clients speak HTTP/1.1 with keep-alive, as a browser's fetch() to a
// plaintext port does.
//
// Run: go test ./internal/app -run '^$' -bench Web -benchtime 5000x
func BenchmarkWeb(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		topic := kit.Topic(b, 1, nil)
		a := startFerry(b, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 30s}
`, topic, topic))
		url := "http://" + a.GRPCAddr() + echoSvc + "UnaryEcho"
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inflight, MaxConnsPerHost: inflight}}
		b.Cleanup(hc.CloseIdleConnections)
		const payload = "benchmark payload of a typical small request"
		post := func(ctx context.Context, contentType string, body []byte, extra map[string]string) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", contentType)
			for k, v := range extra {
				req.Header.Set(k, v)
			}
			res, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			out, err := io.ReadAll(res.Body)
			if err != nil {
				return err
			}
			if res.StatusCode != http.StatusOK || len(out) == 0 || res.Header.Get("Grpc-Status") != "" && res.Header.Get("Grpc-Status") != "0" {
				return fmt.Errorf("%s: %d %q", contentType, res.StatusCode, out)
			}
			return nil
		}
		n := strconv.Itoa(inflight)
		measure := func(b *testing.B, op func(ctx context.Context, _ int) error) {
			cpu0 := processCPU()
			runLoad(b, inflight, op)
			if cpu := processCPU() - cpu0; cpu > 0 {
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/call")
			}
		}
		b.Run("grpc/inflight="+n, func(b *testing.B) {
			cc := dial(b, a)
			req := echo(payload)
			measure(b, func(ctx context.Context, _ int) error {
				var resp []byte
				return cc.Invoke(ctx, echoSvc+"UnaryEcho", &req, &resp)
			})
		})
		b.Run("connect-json/inflight="+n, func(b *testing.B) {
			body := []byte(`{"message":"` + payload + `"}`)
			measure(b, func(ctx context.Context, _ int) error {
				return post(ctx, "application/json", body, map[string]string{"Connect-Protocol-Version": "1"})
			})
		})
		b.Run("connect-proto/inflight="+n, func(b *testing.B) {
			body := echo(payload)
			measure(b, func(ctx context.Context, _ int) error {
				return post(ctx, "application/proto", body, map[string]string{"Connect-Protocol-Version": "1"})
			})
		})
		b.Run("grpc-web/inflight="+n, func(b *testing.B) {
			body := envelope(0, echo(payload))
			measure(b, func(ctx context.Context, _ int) error {
				return post(ctx, "application/grpc-web+proto", body, nil)
			})
		})
	}
}

// BenchmarkFormatRoute compares one unary call through a produce route
// writing protobuf (the request as sent) with the same route writing JSON
// (format: json: the request decoded and written as protojson, the reply
// parsed back from JSON), in the same run. The echo layout (the reply
// topic is the request topic) makes the JSON request its own JSON reply.
//
// Run: go test ./internal/app -run '^$' -bench FormatRoute -benchtime 5000x
func BenchmarkFormatRoute(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		for _, format := range []string{"protobuf", "json"} {
			b.Run(format+"/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
				topic := kit.Topic(b, 1, nil)
				a := startFerry(b, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 30s, format: %s}
`, topic, topic, format))
				cc := dial(b, a)
				req := echo("benchmark payload of a typical small request")
				cpu0 := processCPU()
				runLoad(b, inflight, func(ctx context.Context, _ int) error {
					var resp []byte
					if err := cc.Invoke(ctx, echoSvc+"UnaryEcho", &req, &resp); err != nil {
						return err
					}
					if !bytes.Equal(resp, req) {
						return fmt.Errorf("reply %x; want %x", resp, req)
					}
					return nil
				})
				if cpu := processCPU() - cpu0; cpu > 0 {
					b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/call")
				}
			})
		}
	}
}
