package app_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
)

// TestTracingJaeger sends one call through a produce route, Kafka, a back
// end and a gRPC server with tracing exported over OTLP to a real Jaeger
// (scripts/jaeger.sh; FERRY_TEST_JAEGER is its OTLP address and query URL,
// as the script prints them), and finds the whole trace in Jaeger's query
// API: the client's trace id, with the spans of Ferry's front end, of
// Kafka on both sides and of the back end's call to the server.
func TestTracingJaeger(t *testing.T) {
	endpoints := os.Getenv("FERRY_TEST_JAEGER")
	if endpoints == "" {
		t.Skip("FERRY_TEST_JAEGER is not set: run scripts/jaeger.sh start and set it to what it prints")
	}
	otlp, query, ok := strings.Cut(endpoints, " ")
	if !ok {
		t.Fatalf("FERRY_TEST_JAEGER=%q: want \"OTLP-ADDRESS QUERY-URL\"", endpoints)
	}
	service := fmt.Sprintf("ferry-test-%d", time.Now().UnixNano())
	srv := startEchoServer(t, "jaeger")
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	cfg := ferryConfig(t, proxyConfig(t, req, rep, srv.addr, ""))
	cfg.Tracing = config.Tracing{Enabled: true, OTLPEndpoint: otlp, Insecure: true, SamplePerMillion: 1_000_000, ServiceName: service}
	a := startConfig(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A trace id of this run's own: Jaeger keeps every run's traces.
	var id [16]byte
	_, _ = rand.Read(id[:])
	traceID := hex.EncodeToString(id[:])
	md := metadata.Pairs("traceparent", "00-"+traceID+"-"+clientSpanID+"-01")
	if r := call(ctx, dial(t, a), "UnaryEcho", md, "to jaeger"); r.err != nil {
		t.Fatal(r.err)
	}
	// Close flushes the spans; the back end's end just after its reply.
	time.Sleep(500 * time.Millisecond)
	a.Close(ctx)

	want := []string{"grpc.examples.echo.Echo/UnaryEcho", "produce " + req, "wait for replies", "consume " + req}
	var got []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		got = jaegerTrace(t, query, traceID)
		missing := 0
		for _, w := range want {
			if !slices.Contains(got, w) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger has spans %q of trace %s; want %q among them", got, traceID, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("Jaeger's trace %s: %q", traceID, got)
}

// jaegerTrace returns the operation names of the spans of a trace, from
// Jaeger's query API; none while it does not know the trace.
func jaegerTrace(t testing.TB, query, traceID string) []string {
	t.Helper()
	resp, err := http.Get(query + "/api/traces/" + url.PathEscape(traceID))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var body struct {
		Data []struct {
			Spans []struct {
				OperationName string `json:"operationName"`
			} `json:"spans"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("Jaeger's answer: %v", err)
	}
	var names []string
	for _, tr := range body.Data {
		for _, s := range tr.Spans {
			names = append(names, s.OperationName)
		}
	}
	return names
}
