package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
)

// outage is a broker a test may stop and start again on the same address.
type outage interface {
	seeds() []string
	stop(t testing.TB)
	start(t testing.TB)
}

// embeddedOutage is an embedded broker of the test's own, restarted empty
// on the same port.
type embeddedOutage struct {
	e    *kafka.Embedded
	port int
}

func newEmbeddedOutage(t testing.TB) *embeddedOutage {
	e, err := kafka.StartEmbedded(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(e.Addrs()[0])
	port, _ := strconv.Atoi(p)
	o := &embeddedOutage{e: e, port: port}
	t.Cleanup(func() {
		if o.e != nil {
			o.e.Close(context.Background())
		}
	})
	return o
}

func (o *embeddedOutage) seeds() []string { return []string{fmt.Sprintf("127.0.0.1:%d", o.port)} }
func (o *embeddedOutage) stop(testing.TB) { o.e.Close(context.Background()); o.e = nil }
func (o *embeddedOutage) start(t testing.TB) {
	e, err := kafka.StartEmbedded(o.port, 1)
	if err != nil {
		t.Fatal(err)
	}
	o.e = e
}

// scriptOutage is the real broker of FERRY_TEST_BROKERS, stopped and
// started again on its data with scripts/kafka.sh (and the FERRY_KAFKA_*
// variables it was started with). Only for a broker of your own.
type scriptOutage struct{ root string }

func (o scriptOutage) seeds() []string    { return strings.Split(os.Getenv("FERRY_TEST_BROKERS"), ",") }
func (o scriptOutage) stop(t testing.TB)  { o.run(t, "stop") }
func (o scriptOutage) start(t testing.TB) { o.run(t, "start") }
func (o scriptOutage) run(t testing.TB, cmd string) {
	t.Helper()
	c := exec.Command("bash", filepath.Join(o.root, "scripts", "kafka.sh"), cmd)
	c.Env = append(os.Environ(), "FERRY_KAFKA_KEEP=1")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("kafka.sh %s: %v\n%s", cmd, err, out)
	}
}

// newOutage returns the broker a test may stop: an embedded one of its
// own, or with FERRY_TEST_RESTART_BROKER=1 the real broker of
// FERRY_TEST_BROKERS (your own broker only: it is stopped and restarted).
func newOutage(t testing.TB) outage {
	if os.Getenv("FERRY_TEST_RESTART_BROKER") != "" {
		if kit.Secured(t) {
			t.Skip("FERRY_TEST_RESTART_BROKER: the outage tests dial the broker's plaintext listener; run them without FERRY_TEST_KAFKA_TLS_* and FERRY_TEST_KAFKA_SASL")
		}
		return scriptOutage{root: root(t)}
	}
	kit.CheckLeaks(t)
	return newEmbeddedOutage(t)
}

// watchHealth returns the statuses health reports for service, as they
// change.
func watchHealth(t testing.TB, addr, service string) <-chan healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan healthpb.HealthCheckResponse_ServingStatus, 16)
	go func() {
		defer close(ch)
		for {
			r, err := w.Recv()
			if err != nil {
				return
			}
			ch <- r.Status
		}
	}()
	return ch
}

// expectStatus waits for the next status of every watch to be want.
func expectStatus(t testing.TB, want healthpb.HealthCheckResponse_ServingStatus, watches ...<-chan healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	for i, w := range watches {
		select {
		case got, ok := <-w:
			if !ok || got != want {
				t.Fatalf("watch %d: status %v (open %v), want %v", i, got, ok, want)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("watch %d: no status %v within 60s", i, want)
		}
	}
}

// TestHealthFollowsKafka: health turns NOT_SERVING, for the server and for
// each service, when the broker goes away, and new fetch calls then fail at
// once with UNAVAILABLE instead of dialing it; both come back when the
// broker does. The broker is newOutage's.
func TestHealthFollowsKafka(t *testing.T) {
	o := newOutage(t)
	topic := "ferry-test-health-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	y := fmt.Sprintf(`
clusters:
  - name: default
    brokers: [%q]
    dial_timeout: 2s
    health_check: {interval: 100ms, unhealthy_after: 2, healthy_after: 2}
listeners:
  grpc: {address: 127.0.0.1:0, shutdown_timeout: 2s}
protos:
  - files: [fanout.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
routes:
%s`, strings.Join(o.seeds(), ","), filepath.Join(root(t), "examples", "fanout"), fetchRoute(topic, ""))
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	overall := watchHealth(t, a.GRPCAddr(), "")
	service := watchHealth(t, a.GRPCAddr(), "example.FanoutService")
	expectStatus(t, healthpb.HealthCheckResponse_SERVING, overall, service)

	o.stop(t)
	expectStatus(t, healthpb.HealthCheckResponse_NOT_SERVING, overall, service)
	sub := subscribe(t, dial(t, a), nil)
	_, err = sub.next()
	sub.cancel()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("fetch call during the outage: %v, want UNAVAILABLE saying the cluster is unreachable", err)
	}

	o.start(t)
	expectStatus(t, healthpb.HealthCheckResponse_SERVING, overall, service)
	prod := newClient(t, o.seeds())
	produceMsgs(t, prod, topic, "", nil, "back")
	sub = subscribe(t, dial(t, a), nil)
	defer sub.cancel()
	if got := sub.take(t, 1); got[0].msg != "back" {
		t.Errorf("after the outage: %q, want back", got[0].msg)
	}
}

func newClient(t testing.TB, seeds []string) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ProducerLinger(0), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// lineCounter counts the lines written at warn and above, and keeps them.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, strings.TrimSpace(string(p)))
	return len(p), nil
}

func (c *lineCounter) written() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// TestFetchOutageQuiet: during a broker outage, callers that keep
// resubscribing to a fetch route neither dial the broker each nor fill the
// log: 100 resubscribes fail at once with UNAVAILABLE and cost a handful of
// lines, where each used to dial (and log a warning per attempt) on its
// own.
func TestFetchOutageQuiet(t *testing.T) {
	o := newOutage(t)
	topic := "ferry-test-quiet-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	y := fmt.Sprintf(`
clusters:
  - name: default
    brokers: [%q]
    dial_timeout: 2s
    health_check: {interval: 100ms, unhealthy_after: 2, healthy_after: 2}
listeners:
  grpc: {address: 127.0.0.1:0, shutdown_timeout: 2s}
protos:
  - files: [fanout.proto]
    import_paths: [%q]
log:
  level: warn
routes:
%s`, strings.Join(o.seeds(), ","), filepath.Join(root(t), "examples", "fanout"), fetchRoute(topic, ""))
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var out lineCounter
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Listeners.Admin.Address = ""
	a, err := app.Start(ctx, cfg, slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	overall := watchHealth(t, a.GRPCAddr(), "")
	expectStatus(t, healthpb.HealthCheckResponse_SERVING, overall)

	// In the broker's place, a listener that counts connections and
	// closes each at once.
	o.stop(t)
	lis, err := net.Listen("tcp", o.seeds()[0])
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int64
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close()
		}
	}()
	stopListening := sync.OnceFunc(func() { lis.Close(); <-accepting })
	defer stopListening()
	expectStatus(t, healthpb.HealthCheckResponse_NOT_SERVING, overall)
	before, dialed := len(out.written()), dials.Load()
	cc := dial(t, a)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 10 {
				sub := subscribe(t, cc, nil)
				_, err := sub.next()
				sub.cancel()
				if status.Code(err) != codes.Unavailable {
					t.Errorf("resubscribe during the outage: %v, want UNAVAILABLE", err)
				}
			}
		})
	}
	wg.Wait()
	// The probes dial every 100ms; each resubscribe used to dial on its
	// own, retrying for up to 10 seconds.
	if n := dials.Load() - dialed; n >= 50 {
		t.Errorf("100 resubscribes during an outage dialed the broker %d times, want fewer than 50 (the probes')", n)
	}
	if lines := out.written()[before:]; len(lines) > 10 {
		t.Errorf("100 resubscribes during an outage wrote %d log lines, want at most 10:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	stopListening()
	o.start(t)
	expectStatus(t, healthpb.HealthCheckResponse_SERVING, overall)
}
