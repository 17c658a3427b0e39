package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// accessLines is the log, JSON records, of which the tests read the
// access log's.
type accessLines struct{ syncBuffer }

// calls returns every "call" record.
func (l *accessLines) calls(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "call" {
			out = append(out, rec)
		}
	}
	return out
}

// withID returns the call records with request id id.
func (l *accessLines) withID(t testing.TB, id string) []map[string]any {
	var out []map[string]any
	for _, rec := range l.calls(t) {
		if rec["request_id"] == id {
			out = append(out, rec)
		}
	}
	return out
}

// waitID waits until a call record of face with request id id was
// logged.
func (l *accessLines) waitID(t testing.TB, id, face string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, rec := range l.withID(t, id) {
			if rec["face"] == face {
				return rec
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for request id %s in:\n%v", id, l.calls(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEdgeEveryFace serves traffic on every face of one Ferry (a produce
// route through a back end to a real gRPC server, a fetch route, Ferry's
// Kafka API over gRPC and REST, Kafka-Pixy's over gRPC and REST) with
// log.access on. Each call returns its request id, the caller's when sane,
// and is logged exactly once, a REST call transcoded to gRPC included;
// the back end passes the id to its server. Once Ferry closed, no
// goroutine of it is left.
func TestEdgeEveryFace(t *testing.T) {
	kit.CheckLeaks(t)
	var seenMu sync.Mutex
	var seen []string // the x-request-id the back end's server saw, per call
	srv := startEchoServer(t, "echo-1")
	srv.block = func(ctx context.Context, _ string) error {
		md, _ := metadata.FromIncomingContext(ctx)
		seenMu.Lock()
		seen = append(seen, strings.Join(md.Get(edge.RequestIDKey), ","))
		seenMu.Unlock()
		return nil
	}
	req, rep, fetched, topic := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil), kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc: {address: "127.0.0.1:0", shutdown_timeout: 2s}
  http: {address: "127.0.0.1:0"}
protos:
  - files: [echo.proto]
    import_paths: [%q]
  - files: [fanout.proto]
    import_paths: [%q]
log:
  access: true
kafka_api:
  enabled: true
  pixy: true
  consume: {long_poll_timeout: 500ms, commit_interval: 50ms, session_timeout: 6s}
routes:
%s%s`, kit.ClusterYAML(t), filepath.Join(root(t), "examples", "echo"), filepath.Join(root(t), "examples", "fanout"),
		fetchRoute(fetched, ""), proxyConfig(t, req, rep, srv.addr, ""))
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	var lines accessLines
	logger := slog.New(slog.NewJSONHandler(&lines, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Listeners.Admin.Address = ""
	a, err := app.Start(sctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			a.Close(context.Background())
		}
	})
	ctx := testkit.Context(t, 60*time.Second)
	cc := dial(t, a)
	base := "http://" + a.HTTPAddr()

	// A user's call on a produce route, through the back end.
	res := call(ctx, cc, "UnaryEcho", metadata.Pairs(edge.RequestIDKey, "rid-user"), "hi")
	if res.err != nil || len(res.msgs) != 1 {
		t.Fatalf("UnaryEcho = %q, %v", res.msgs, res.err)
	}
	if got := res.header.Get(edge.RequestIDKey); len(got) != 1 || got[0] != "rid-user" {
		t.Errorf("UnaryEcho: x-request-id = %q, want [rid-user]", got)
	}
	// Without an id, Ferry makes one; the back end makes its own.
	res = call(ctx, cc, "UnaryEcho", nil, "hi")
	generated := res.header.Get(edge.RequestIDKey)
	if res.err != nil || len(generated) != 1 || !edge.SaneRequestID(generated[0]) {
		t.Fatalf("UnaryEcho without an id: x-request-id = %q, %v", generated, res.err)
	}

	// A fetch route's subscriber, cancelled once it has its record.
	prod := kit.Client(t, kgo.ProducerLinger(0))
	produceMsgs(t, prod, fetched, "k", nil, "a")
	sub := subscribe(t, cc, metadata.Pairs(edge.RequestIDKey, "rid-fetch"))
	sub.take(t, 1)
	sub.cancel()

	// Ferry's Kafka API over gRPC.
	api := dialAddr(t, a.GRPCAddr())
	var hdr metadata.MD
	gctx := metadata.AppendToOutgoingContext(ctx, edge.RequestIDKey, "rid-ferry-grpc")
	if _, err := kafkav1.NewKafkaClient(api).Produce(gctx, &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String("one")}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(edge.RequestIDKey); len(got) != 1 || got[0] != "rid-ferry-grpc" {
		t.Errorf("Ferry gRPC: x-request-id = %q, want [rid-ferry-grpc]", got)
	}

	// Kafka-Pixy's over gRPC.
	pctx := metadata.AppendToOutgoingContext(ctx, edge.RequestIDKey, "rid-pixy-grpc")
	if _, err := kafkapixy.NewKafkaPixyClient(api).Produce(pctx, &kafkapixy.ProdRq{Topic: topic, Message: []byte("two")}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(edge.RequestIDKey); len(got) != 1 || got[0] != "rid-pixy-grpc" {
		t.Errorf("Pixy gRPC: x-request-id = %q, want [rid-pixy-grpc]", got)
	}

	// Ferry's over REST, transcoded into the gRPC server, and Kafka-Pixy's
	// REST paths; an id with a space is not taken.
	rest := func(method, path, id, body string) *http.Response {
		t.Helper()
		r, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Request-Id", id)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := rest(http.MethodPost, "/v1/clusters/default/topics/"+topic+"/records", "rid-rest", `{"valueText": "three"}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") != "rid-rest" {
		t.Errorf("Ferry REST: %d, X-Request-Id %q, want 200 rid-rest", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	resp = rest(http.MethodPost, "/topics/"+topic+"/messages?sync", "rid-pixy-rest", `four`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") != "rid-pixy-rest" {
		t.Errorf("Pixy REST: %d, X-Request-Id %q, want 200 rid-pixy-rest", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	resp = rest(http.MethodGet, "/_ping", "not sane", "")
	pingID := resp.Header.Get("X-Request-Id")
	if pingID == "not sane" || !edge.SaneRequestID(pingID) {
		t.Errorf("Pixy REST ping: X-Request-Id %q, want a new one", pingID)
	}

	// Every call is logged once, when it ends.
	for _, tc := range []struct {
		id   string
		want map[string]any
	}{
		{"rid-user", map[string]any{"face": "grpc", "method": "/grpc.examples.echo.Echo/UnaryEcho", "code": "OK"}},
		{generated[0], map[string]any{"face": "grpc", "method": "/grpc.examples.echo.Echo/UnaryEcho", "code": "OK"}},
		{"rid-fetch", map[string]any{"face": "grpc", "method": "/example.FanoutService/FanoutServerStream", "code": "Canceled"}},
		{"rid-ferry-grpc", map[string]any{"face": "grpc", "method": "/ferry.kafka.v1.Kafka/Produce", "code": "OK"}},
		{"rid-pixy-grpc", map[string]any{"face": "grpc", "method": "/KafkaPixy/Produce", "code": "OK"}},
		{"rid-rest", map[string]any{"face": "rest", "method": "POST", "rpc": "/ferry.kafka.v1.Kafka/Produce", "status": float64(200)}},
		{"rid-pixy-rest", map[string]any{"face": "pixy-rest", "method": "POST", "route": "POST /topics/{topic}/messages", "status": float64(200)}},
		{pingID, map[string]any{"face": "pixy-rest", "route": "GET /_ping", "status": float64(200)}},
	} {
		rec := lines.waitID(t, tc.id, tc.want["face"].(string))
		for k, v := range tc.want {
			if rec[k] != v {
				t.Errorf("request %s: %s = %v, want %v (%v)", tc.id, k, rec[k], v, rec)
			}
		}
		if rec["peer"] == "" || rec["duration"] == nil {
			t.Errorf("request %s: no peer or duration: %v", tc.id, rec)
		}
	}

	// The back end's calls to its server: the caller's id when its
	// request carried one, else a new one, which the server saw.
	seenMu.Lock()
	got := append([]string(nil), seen...)
	seenMu.Unlock()
	if len(got) != 2 || got[0] != "rid-user" || !edge.SaneRequestID(got[1]) || got[1] == generated[0] {
		t.Errorf("the server saw x-request-id %q, want rid-user, then one of the back end's own", got)
	}
	a.Close(context.Background())
	closed = true
	var backendOut int
	for _, rec := range lines.calls(t) {
		if rec["face"] == "backend-out" {
			backendOut++
			if rec["peer"] != srv.addr || rec["method"] != "/grpc.examples.echo.Echo/UnaryEcho" || rec["code"] != "OK" {
				t.Errorf("back-end call: %v", rec)
			}
		}
	}
	if backendOut != 2 {
		t.Errorf("%d back-end calls logged, want 2", backendOut)
	}
	for _, id := range []string{"rid-user", "rid-rest", "rid-pixy-rest", "rid-ferry-grpc", "rid-pixy-grpc", "rid-fetch"} {
		n := len(lines.withID(t, id))
		if id == "rid-user" {
			n-- // its back-end call has it too
		}
		if n != 1 {
			t.Errorf("request %s logged %d times, want once", id, n)
		}
	}
}
