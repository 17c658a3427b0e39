package app_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// kit is the brokers the suite runs against: a real cluster when
// FERRY_TEST_BROKERS names one, else an in-process kfake broker that gives
// an auto-created topic one partition (tests count on it).
var kit = testkit.NewBroker(1)

// readTopic reads n records of topic from the start.
func readTopic(t testing.TB, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := kit.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records from %s before the deadline", len(recs), n, topic)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("fetching %s: %v", topic, err) })
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// endOffset returns the sum of topic's partition end offsets.
func endOffset(t testing.TB, topic string) int64 {
	t.Helper()
	adm := kadm.NewClient(kit.Client(t))
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

var (
	repoRoot string
	rootOnce sync.Once
)

func root(t testing.TB) string {
	rootOnce.Do(func() {
		wd, _ := os.Getwd()
		repoRoot = filepath.Join(wd, "..", "..")
	})
	return repoRoot
}

// startFerry starts Ferry with a config written in YAML; the echo proto is
// loaded, the gRPC listener takes a free port and the cluster "default" is
// the test brokers'.
func startFerry(t testing.TB, routes string) *app.App {
	t.Helper()
	return startConfig(t, ferryConfig(t, routes))
}

// ferryConfig is the configuration startFerry starts.
func ferryConfig(t testing.TB, routes string) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc:
    address: 127.0.0.1:0
    shutdown_timeout: 2s
protos:
  - files: [echo.proto]
    import_paths: [%q]
  - files: [fanout.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
routes:
%s`, kit.ClusterYAML(t), filepath.Join(root(t), "examples", "echo"), filepath.Join(root(t), "examples", "fanout"), routes)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	return cfg
}

func startConfig(t testing.TB, cfg *config.Config) *app.App {
	t.Helper()
	return startLogged(t, cfg, testLogger(t))
}

// startLogged starts Ferry with cfg, logging to logger.
func startLogged(t testing.TB, cfg *config.Config, logger *slog.Logger) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Tests run Ferry many times at once: never on the default admin port.
	if cfg.Listeners.Admin.Address == config.DefaultAdminAddress {
		cfg.Listeners.Admin.Address = "127.0.0.1:0"
	}
	a, err := app.Start(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	return a
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: testLogLevel()}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// rawCodec sends and receives *[]byte as they are.
type rawCodec = testkit.RawCodec

func dial(t testing.TB, a *app.App) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(a.GRPCAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// echoSvc is the path prefix of the echo example's methods.
const echoSvc = testkit.EchoService

// result is what a call returned.
type result struct {
	header metadata.MD
	msgs   []string
	err    error
}

// call makes a call of any kind: it sends every request, half-closes and
// reads every response, decoding Echo messages.
func call(ctx context.Context, cc *grpc.ClientConn, method string, md metadata.MD, reqs ...string) result {
	r := testkit.EchoCall(ctx, cc, method, md, reqs...)
	return result{header: r.Header, msgs: r.Msgs, err: r.Err}
}

// echo encodes an EchoRequest/EchoResponse{message: s}.
func echo(s string) []byte { return testkit.Echo(s) }

// unecho decodes field 1 of an Echo or Fanout message.
func unecho(b []byte) string { return testkit.Unecho(b) }

func header(r *kgo.Record, k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

// backend plays a back end in Zilla's layout: it reads requestTopic,
// collects each call's records by correlation id and, at the call's null
// record, writes what reply returns to the call's reply-to topic, keyed by
// correlation id, with the terminal null record carrying status and message.
type backend struct {
	mu    sync.Mutex
	calls map[string]int // correlation id → times seen
}

type reply struct {
	msgs    []string
	meta    map[string]string
	code    int
	message string
	// gap is a pause before each message; noEnd leaves out the terminal
	// record, as a back end that lost it would.
	gap   time.Duration
	noEnd bool
}

func startBackend(t testing.TB, requestTopic string, fn func(reqs []string, md map[string]string) reply) *backend {
	t.Helper()
	b := &backend{calls: map[string]int{}}
	cons := kit.Client(t, kgo.ConsumeTopics(requestTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	prod := kit.Client(t, kgo.ProducerLinger(0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		pending := map[string][]string{}
		for {
			fs := cons.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			for _, r := range fs.Records() {
				id, _ := header(r, "zilla:correlation-id")
				if r.Value != nil {
					pending[id] = append(pending[id], unecho(r.Value))
					continue
				}
				md := map[string]string{}
				for _, h := range r.Headers {
					if k, ok := strings.CutPrefix(h.Key, "meta:"); ok {
						md[k] = string(h.Value)
					}
				}
				b.mu.Lock()
				b.calls[id]++
				b.mu.Unlock()
				rep := fn(pending[id], md)
				delete(pending, id)
				replyTo, _ := header(r, "zilla:reply-to")
				var hs []kgo.RecordHeader
				hs = append(hs, kgo.RecordHeader{Key: "zilla:correlation-id", Value: []byte(id)})
				for k, v := range rep.meta {
					hs = append(hs, kgo.RecordHeader{Key: "meta:" + k, Value: []byte(v)})
				}
				for _, m := range rep.msgs {
					if rep.gap > 0 {
						time.Sleep(rep.gap)
					}
					prod.Produce(ctx, &kgo.Record{Topic: replyTo, Key: []byte(id), Value: echo(m), Headers: hs}, nil)
				}
				if rep.noEnd {
					continue
				}
				end := append(hs[:len(hs):len(hs)], kgo.RecordHeader{Key: "zilla:status", Value: []byte(fmt.Sprint(rep.code))})
				if rep.message != "" {
					end = append(end, kgo.RecordHeader{Key: "zilla:message", Value: []byte(rep.message)})
				}
				if err := prod.ProduceSync(ctx, &kgo.Record{Topic: replyTo, Key: []byte(id), Headers: end}).FirstErr(); err != nil && ctx.Err() == nil {
					t.Errorf("backend producing reply: %v", err)
				}
			}
		}
	}()
	return b
}

// seen returns how many calls the backend answered, and how many of those
// it saw more than once.
func (b *backend) seen() (calls, twice int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range b.calls {
		calls += n
		if n > 1 {
			twice++
		}
	}
	return calls, twice
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func kadmClient(t testing.TB) *kadm.Client {
	return kadm.NewClient(kit.Client(t))
}

// waitGroupMembers waits until group has n members, each with partitions.
func waitGroupMembers(t testing.TB, group string, n int) {
	t.Helper()
	adm := kadmClient(t)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		gs, err := adm.DescribeGroups(context.Background(), group)
		if err == nil {
			g := gs[group]
			withParts := 0
			for _, m := range g.Members {
				if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
					withParts++
				}
			}
			if g.State == "Stable" && withParts == n {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("group %s never had %d members with partitions", group, n)
}

func testLogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("FERRY_TEST_LOG"))); err != nil {
		return slog.LevelWarn
	}
	return l
}

// unaryMany starts n concurrent UnaryEcho calls, each with a message of its
// own, and returns a function that waits for them and fails t for every
// call that did not get exactly its own message back, once.
func unaryMany(t testing.TB, ctx context.Context, cc *grpc.ClientConn, n int) (wait func()) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf("m%d", i)
			res := call(ctx, cc, "UnaryEcho", nil, msg)
			if res.err != nil || len(res.msgs) != 1 || res.msgs[0] != msg {
				errs <- fmt.Errorf("%s = %q, %v; want exactly one reply %q", msg, res.msgs, res.err, msg)
			}
		}()
	}
	return func() {
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

// loadExample loads examples/<name>/ferry.yaml as the README runs it: the
// example takes its brokers from FERRY_BROKERS (the test brokers when they
// are real) and otherwise starts its embedded broker, here on a free port,
// with the gRPC listener on a free port too.
func loadExample(t testing.TB, name string) *config.Config {
	t.Helper()
	t.Setenv("FERRY_GRPC_ADDRESS", "127.0.0.1:0")
	if testkit.Real() {
		t.Setenv("FERRY_BROKERS", strings.Join(kit.Seeds(t), ","))
	} else {
		t.Setenv("FERRY_BROKERS", "")
	}
	cfg, err := config.Load(filepath.Join(root(t), "examples", name, "ferry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Embedded.Port = 0
	cfg.Listeners.GRPC.Address = "127.0.0.1:0"
	for i := range cfg.Clusters {
		if len(cfg.Clusters[i].Brokers) > 0 {
			cfg.Clusters[i].TLS, cfg.Clusters[i].SASL = kit.Security(t)
		}
	}
	return cfg
}

// buildBinary builds a main package of the repository into dir.
func buildBinary(t testing.TB, dir, name, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Dir = root(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// buildFerry builds the ferry command into a temporary folder.
func buildFerry(t testing.TB) string {
	t.Helper()
	return buildBinary(t, t.TempDir(), "ferry", "./cmd/ferry")
}
