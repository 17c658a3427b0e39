package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// reloadYAML is a configuration whose routes are given, on the test
// brokers, with the echo proto.
func reloadYAML(t testing.TB, routes string) string {
	return fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc: {address: 127.0.0.1:0, shutdown_timeout: 2s}
  admin: {address: 127.0.0.1:0}
protos:
  - files: [echo.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
routes:
%s`, kit.ClusterYAML(t), filepath.Join(root(t), "examples", "echo"), routes)
}

// echoRoute is a route of one Echo method over one topic in the echo
// layout: each request comes back as its own reply.
func echoRoute(name, method, topic string) string {
	return fmt.Sprintf("  - name: %s\n    when: [{method: grpc.examples.echo.Echo/%s}]\n    produce: {topic: %s, reply_to: %s, timeout: 30s}\n",
		name, method, topic, topic)
}

// TestReloadUnderLoad reloads routes while calls run on a route that
// stays: none of them fails. The reload adds a route, moves one to
// another topic and removes one; configurations that do not validate, or
// that change what needs a restart, are refused and change nothing.
func TestReloadUnderLoad(t *testing.T) {
	stable, moving, moved, doomed, added := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil), kit.Topic(t, 1, nil), kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	v1 := reloadYAML(t, echoRoute("stable", "UnaryEcho", stable)+echoRoute("moving", "ClientStreamingEcho", moving)+echoRoute("doomed", "ServerStreamingEcho", doomed))
	writeFile(t, path, v1)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	cc := dial(t, a)
	ctx := testkit.Context(t, 60*time.Second)

	// Calls on the stable route, all the time, from 8 goroutines.
	var calls, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				r := call(loadCtx, cc, "UnaryEcho", nil, "steady")
				if loadCtx.Err() != nil {
					return
				}
				calls.Add(1)
				if r.err != nil || len(r.msgs) != 1 {
					failed.Add(1)
					err := fmt.Errorf("%v %q", r.err, r.msgs)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	waitFor(t, func() bool { return calls.Load() > 50 }, "calls on the stable route")

	load := func(y string) *config.Config {
		t.Helper()
		writeFile(t, path, y)
		c, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Refused: a route naming a method no proto defines; a cluster change.
	bad := load(v1 + echoRoute("ghost", "NoSuchMethod", added))
	if err := a.Reload(ctx, bad); err == nil || !strings.Contains(err.Error(), "NoSuchMethod") {
		t.Errorf("a route of an unknown method: %v", err)
	}
	other := load(strings.Replace(v1, "clusters: [{name: default", "clusters: [{name: default, client_id: other", 1))
	if err := a.Reload(ctx, other); err == nil || !strings.Contains(err.Error(), "clusters changed, which needs a restart") {
		t.Errorf("a cluster change: %v", err)
	}
	if r := call(ctx, cc, "ServerStreamingEcho", nil, "still here"); r.err != nil {
		t.Errorf("the doomed route after refused reloads: %v", r.err)
	}

	// Applied: moving goes to another topic, doomed goes, added comes.
	v2 := load(reloadYAML(t, echoRoute("stable", "UnaryEcho", stable)+echoRoute("moving", "ClientStreamingEcho", moved)+echoRoute("added", "BidirectionalStreamingEcho", added)))
	if err := a.Reload(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if r := call(ctx, cc, "ClientStreamingEcho", nil, "a", "b"); r.err != nil {
		t.Errorf("the moved route: %v", r.err)
	}
	if n := endOffset(t, moved); n == 0 {
		t.Error("the moved route wrote nothing to its new topic")
	}
	if r := call(ctx, cc, "BidirectionalStreamingEcho", nil, "x", "y"); r.err != nil || len(r.msgs) != 2 {
		t.Errorf("the added route: %q %v", r.msgs, r.err)
	}
	if r := call(ctx, cc, "ServerStreamingEcho", nil, "gone"); status.Code(r.err) != codes.Unimplemented || !strings.Contains(r.err.Error(), "not routed") {
		t.Errorf("the removed route: %v; want UNIMPLEMENTED, not routed", r.err)
	}
	waitFor(t, func() bool { return calls.Load() > 200 }, "more calls on the stable route")
	stopLoad()
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d calls on the unchanged route failed across the reloads, the first: %v", n, calls.Load(), *firstErr.Load())
	}
	t.Logf("%d calls on the unchanged route, none failed", calls.Load())
}

// TestReloadWatchesFiles changes the configuration file under a running
// watcher: a broken file is logged and changes nothing, a good one is
// applied, as is SIGHUP.
func TestReloadWatchesFiles(t *testing.T) {
	first, second := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	writeFile(t, path, reloadYAML(t, echoRoute("echo", "UnaryEcho", first)))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	a := startLogged(t, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	cc := dial(t, a)
	ctx := testkit.Context(t, 60*time.Second)
	wctx, stop := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	var wg sync.WaitGroup
	watch := a.ReloadWatcher()
	wg.Go(func() { watch(wctx, hup, 50*time.Millisecond) })
	defer func() { stop(); wg.Wait() }()

	bump := func(y string) {
		t.Helper()
		writeFile(t, path, y)
		at := time.Now().Add(time.Duration(time.Now().UnixNano()%1000+1) * time.Millisecond)
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	bump("routes: [this is not\n")
	waitFor(t, func() bool { return strings.Contains(logs.String(), "the configuration was not reloaded") }, "the broken file logged:\n"+logs.String())
	if r := call(ctx, cc, "UnaryEcho", nil, "one"); r.err != nil {
		t.Fatalf("after a broken file: %v", r.err)
	}
	bump(reloadYAML(t, echoRoute("echo", "UnaryEcho", second)))
	waitFor(t, func() bool { return strings.Contains(logs.String(), "configuration reloaded") }, "the good file applied")
	if r := call(ctx, cc, "UnaryEcho", nil, "two"); r.err != nil {
		t.Fatal(r.err)
	}
	if endOffset(t, second) == 0 {
		t.Error("the reloaded route wrote nothing to its topic")
	}
	// SIGHUP alone: a watcher that does not look at the files.
	stop()
	wg.Wait()
	third := kit.Topic(t, 1, nil)
	writeFile(t, path, reloadYAML(t, echoRoute("echo", "UnaryEcho", third)))
	hupCtx, stopHup := context.WithCancel(ctx)
	defer stopHup()
	hupOnly := a.ReloadWatcher()
	wg.Go(func() { hupOnly(hupCtx, hup, time.Hour) })
	hup <- os.Interrupt // any signal on the channel stands for SIGHUP
	waitFor(t, func() bool {
		if r := call(ctx, cc, "UnaryEcho", nil, "three"); r.err != nil {
			t.Fatal(r.err)
		}
		return endOffset(t, third) > 0
	}, "the route on the topic of the configuration reloaded on SIGHUP")
}

// TestReloadBackends moves a back end to another server: the one it ran
// as stops (draining its calls, committing), the new one takes its group's
// requests, and a back end that did not change keeps running.
func TestReloadBackends(t *testing.T) {
	s1, s2 := startEchoServer(t, "one"), startEchoServer(t, "two")
	req, rep := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	writeFile(t, path, reloadYAML(t, proxyConfig(t, req, rep, s1.addr, "")))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	cc := dial(t, a)
	ctx := testkit.Context(t, 60*time.Second)
	if r := call(ctx, cc, "UnaryEcho", nil, "to one"); r.err != nil {
		t.Fatal(r.err)
	}
	writeFile(t, path, reloadYAML(t, proxyConfig(t, req, rep, s2.addr, "")))
	next, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	if r := call(ctx, cc, "UnaryEcho", nil, "to two"); r.err != nil {
		t.Fatal(r.err)
	}
	if c1, _ := s1.calls(); c1 != 1 {
		t.Errorf("the first server got %d calls, want 1", c1)
	}
	if c2, _ := s2.calls(); c2 != 1 {
		t.Errorf("the second server got %d calls, want 1", c2)
	}
	if st := a.BackendStats(); len(st) != 1 {
		t.Errorf("%d back ends run, want 1: %v", len(st), st)
	}
}

// TestReloadKafkaAPIAllow changes who may produce to which topic through
// the Kafka API: the new rules hold from the reload on, without a restart.
func TestReloadKafkaAPIAllow(t *testing.T) {
	is := newIssuer(t, t.TempDir())
	first, second := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	y := kafkaAPIYAML(t, "") + "  allow:\n    - identities: [alice]\n      produce: [" + first + "]\n" + fmt.Sprintf(authYAML, is.jwks)
	writeFile(t, path, y)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	ctx := testkit.Context(t, 30*time.Second)
	ferry := kafkav1.NewKafkaClient(dialAddr(t, a.GRPCAddr()))
	actx := bearer(ctx, is.token(t, "alice", nil, 0))
	produce := func(topic string) error {
		_, err := ferry.Produce(actx, &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String("x")})
		return err
	}
	if err := produce(second); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("before the reload: %v; want PERMISSION_DENIED", err)
	}
	writeFile(t, path, strings.Replace(y, "produce: ["+first+"]", "produce: ["+first+", "+second+"]", 1))
	next, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := produce(second); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
}

// TestReloadNamesNewMethods: a method of a proto a reload added is counted
// under its name; before, the same call counted as "unknown".
func TestReloadNamesNewMethods(t *testing.T) {
	const fanout = "/example.FanoutService/FanoutServerStream"
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	v1 := reloadYAML(t, echoRoute("stable", "UnaryEcho", kit.Topic(t, 1, nil)))
	writeFile(t, path, v1)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	cc := dialAddr(t, a.GRPCAddr())
	ctx := testkit.Context(t, 30*time.Second)
	unrouted := func() {
		t.Helper()
		if err := cc.Invoke(ctx, fanout, &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s without a route: %v, want UNIMPLEMENTED", fanout, err)
		}
	}
	handled := func(method string) float64 {
		t.Helper()
		got, _ := sample(scrape(t, a), "ferry_calls_handled_total", map[string]string{"face": "grpc", "method": method, "code": "Unimplemented"})
		return got
	}
	unrouted()
	if got := handled("unknown"); got != 1 {
		t.Fatalf("before the reload: %v calls counted as unknown, want 1", got)
	}
	v2 := strings.Replace(v1, "protos:\n", fmt.Sprintf("protos:\n  - files: [fanout.proto]\n    import_paths: [%q]\n", filepath.Join(root(t), "examples", "fanout")), 1)
	writeFile(t, path, v2)
	if cfg, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	unrouted()
	if got := handled(fanout); got != 1 {
		t.Errorf("after the reload: %v calls counted as %s, want 1", got, fanout)
	}
	if got := handled("unknown"); got != 1 {
		t.Errorf("after the reload: %v calls counted as unknown, want still 1", got)
	}
}

// TestReloadKafkaAPISettings: the Kafka API's settings change on a reload
// without a restart, here how long a poll waits for messages; switching a
// face on or off still needs one.
func TestReloadKafkaAPISettings(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	y := kafkaAPIYAML(t, "")
	writeFile(t, path, y)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	ctx := testkit.Context(t, 60*time.Second)
	ferry := kafkav1.NewKafkaClient(dialAddr(t, a.GRPCAddr()))
	poll := func() time.Duration {
		start := time.Now()
		resp, err := ferry.Poll(ctx, &kafkav1.PollRequest{Topic: topic, Group: "g-" + topic})
		if err != nil || len(resp.GetMessages()) != 0 {
			t.Fatalf("poll of an empty topic: %v, %v", resp, err)
		}
		return time.Since(start)
	}
	if d := poll(); d > 2*time.Second {
		t.Fatalf("a poll took %s with long_poll_timeout 500ms", d)
	}
	reload := func(y string) error {
		writeFile(t, path, y)
		next, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return a.Reload(ctx, next)
	}
	if err := reload(strings.Replace(y, "long_poll_timeout: 500ms", "long_poll_timeout: 3s", 1)); err != nil {
		t.Fatal(err)
	}
	if d := poll(); d < 2500*time.Millisecond {
		t.Errorf("a poll took %s after the reload to long_poll_timeout 3s", d)
	}
	if err := reload(strings.Replace(y, "pixy: true", "pixy: false", 1)); err == nil || !strings.Contains(err.Error(), "kafka_api.pixy changed, which needs a restart") {
		t.Errorf("switching Kafka-Pixy off: %v, want a refusal naming kafka_api.pixy", err)
	}
}
