package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
)

// BenchmarkSecurity measures what TLS on the gRPC listener and a JWT
// check on every call cost, against plaintext without authentication, in
// one run: the echo route of BenchmarkUnary (request and reply over
// Kafka), one client connection, the same token on every call (its
// signature is checked once, then its identity comes from Ferry's cache of
// verified tokens; BenchmarkJWTVerify in internal/auth gives both costs
// alone). It reports calls/s,
// latency and the process's CPU time per call (client, Ferry and, with
// the embedded broker, Kafka).
//
// Run: go test ./internal/app -run '^$' -bench Security -benchtime 5000x
func BenchmarkSecurity(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		for _, mode := range []struct {
			name     string
			tls, jwt bool
		}{{"plaintext", false, false}, {"tls", true, false}, {"jwt", false, true}, {"tls+jwt", true, true}} {
			b.Run(mode.name+"/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
				dir := b.TempDir()
				topic := kit.Topic(b, 1, nil)
				var listenerTLS, authYAMLs string
				creds := insecure.NewCredentials()
				if mode.tls {
					ca := newTestCA(b)
					c, k, _ := ca.issue(b, x509.ExtKeyUsageServerAuth)
					writeFile(b, filepath.Join(dir, "server.pem"), string(c))
					writeFile(b, filepath.Join(dir, "server-key.pem"), string(k))
					listenerTLS = "    tls: {cert_file: server.pem, key_file: server-key.pem}\n"
					creds = credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})
				}
				md := metadata.MD{}
				if mode.jwt {
					is := newIssuer(b, dir)
					authYAMLs = fmt.Sprintf(authYAML, is.jwks)
					md = bearerMD(is.token(b, "alice", []string{"echo"}, 0))
				}
				y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc:
    address: 127.0.0.1:0
    shutdown_timeout: 2s
%sprotos:
  - files: [echo.proto]
    import_paths: [%q]
log:
  level: warn
routes:
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 30s}
%s`, kit.ClusterYAML(b), listenerTLS, filepath.Join(root(b), "examples", "echo"), topic, topic, authYAMLs)
				path := filepath.Join(dir, "ferry.yaml")
				writeFile(b, path, y)
				cfg, err := config.Load(path)
				if err != nil {
					b.Fatal(err)
				}
				a := startConfig(b, cfg)
				cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(creds),
					grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				req := echo("benchmark payload of a typical small request")
				cpu0 := processCPU()
				runLoad(b, inflight, func(ctx context.Context, _ int) error {
					var resp []byte
					return cc.Invoke(metadata.NewOutgoingContext(ctx, md), echoSvc+"UnaryEcho", &req, &resp)
				})
				if cpu := processCPU() - cpu0; cpu > 0 {
					b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/call")
				}
			})
		}
	}
}
