// Package interop_test runs Ferry against the real Zilla (aklivity/zilla),
// whose record layout Ferry shares, on a real Kafka broker: Zilla's front
// end with Ferry's back end, Ferry's front end with Zilla's back end, both
// fetch routes on one topic with message ids resumed across them, and the
// records each side writes for the same calls.
//
// Run it with a broker and Zilla's runnable build (a JDK 25 at
// /usr/lib/jvm/temurin-25-jdk-amd64 or in JAVA_HOME_25):
//
//	FERRY_TEST_BROKERS=127.0.0.1:19092 FERRY_ZILLA=/work/shared/zilla \
//	  go test -count=1 -v ./internal/interop/
//
// Without both variables every test skips. With FERRY_ZILLA set, a Zilla
// that cannot start fails every test: CI must not skip the suite silently.
//
// One Zilla process serves the whole package (TestMain): its zilla.yaml is
// written at run time with topics named for the run, and it is killed and
// its directory deleted when the tests end.
package interop_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
)

// Topics of the run, created before Zilla and Ferry start.
type topics struct {
	zreq, zrep string // Zilla's front end → Ferry's back end
	freq, frep string // Ferry's front end → Zilla's back end
	f1, f3     string // fetched by both, 1 and 3 partitions
}

// suite is what TestMain started for every test.
type suite struct {
	brokers []string
	topics  topics
	server  *echoServer
	ferry   *app.App
	zilla   *zilla
	ferryCC *grpc.ClientConn
	zillaCC *grpc.ClientConn
}

var (
	env      *suite
	skipWhy  string
	setupErr error
)

// replyTimeout is the Ferry front end's route timeout: Zilla's back end
// writes no reply when the server answers an error, so such a call ends
// with DEADLINE_EXCEEDED after it.
const replyTimeout = 3 * time.Second

func TestMain(m *testing.M) {
	var cleanups []func()
	brokers, zdir := os.Getenv("FERRY_TEST_BROKERS"), os.Getenv("FERRY_ZILLA")
	switch {
	case brokers == "" || zdir == "":
		skipWhy = "the interoperability suite needs a real Kafka broker and Zilla: set FERRY_TEST_BROKERS and FERRY_ZILLA (see the package comment)"
	default:
		env, setupErr = setup(strings.Split(brokers, ","), zdir, &cleanups)
	}
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// need returns the suite, skipping t when the environment names no broker
// or Zilla and failing it when they could not be started.
func need(t *testing.T) *suite {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if setupErr != nil {
		t.Fatalf("FERRY_ZILLA is set but the suite could not start: %v", setupErr)
	}
	return env
}

func setup(brokers []string, zdir string, cleanups *[]func()) (*suite, error) {
	s := &suite{brokers: brokers}
	run := fmt.Sprintf("%d", time.Now().UnixNano()%1e9)
	name := func(what string) string { return "ferry-interop-" + what + "-" + run }
	s.topics = topics{
		zreq: name("zreq"), zrep: name("zrep"),
		freq: name("freq"), frep: name("frep"),
		f1: name("f1"), f3: name("f3"),
	}
	if err := createTopics(brokers, map[string]int32{
		s.topics.zreq: 1, s.topics.zrep: 1, s.topics.freq: 1, s.topics.frep: 1, s.topics.f1: 1, s.topics.f3: 3,
	}); err != nil {
		return nil, err
	}
	srv, err := startEchoServer()
	if err != nil {
		return nil, err
	}
	*cleanups = append(*cleanups, srv.stop)
	s.server = srv

	z, err := startZilla(zdir, brokers[0], zillaConfig(run, s.topics, srv.addr))
	if z != nil {
		*cleanups = append(*cleanups, z.stop)
	}
	if err != nil {
		return nil, err
	}
	s.zilla = z

	a, err := startFerry(brokers, s.topics, srv.addr, run)
	if err != nil {
		return nil, err
	}
	*cleanups = append(*cleanups, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	s.ferry = a
	for _, c := range []struct {
		addr string
		cc   **grpc.ClientConn
	}{{a.GRPCAddr(), &s.ferryCC}, {z.addr, &s.zillaCC}} {
		cc, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			return nil, err
		}
		*cleanups = append(*cleanups, func() { cc.Close() })
		*c.cc = cc
	}
	return s, nil
}

func createTopics(brokers []string, ts map[string]int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for topic, n := range ts {
		resp, err := adm.CreateTopic(ctx, n, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return fmt.Errorf("creating topic %s: %w", topic, err)
		}
	}
	// A real broker answers UNKNOWN_TOPIC_OR_PARTITION for a moment after
	// it created a topic.
	for {
		ends, err := adm.ListEndOffsets(ctx, keys(ts)...)
		ready := err == nil && ends.Error() == nil
		for topic, n := range ts {
			ready = ready && len(ends[topic]) == int(n)
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics created, but their offsets cannot be listed: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func keys(m map[string]int32) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// startFerry starts Ferry in process: the front end's produce route to
// freq (reply-to frep), the fetch routes of f1 and f3 (chosen by the
// x-topic metadata, as on Zilla) and a back end on zreq calling the echo
// server.
func startFerry(brokers []string, ts topics, target, run string) (*app.App, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	root := filepath.Join(wd, "..", "..")
	y := fmt.Sprintf(`
clusters:
  - name: default
    brokers: [%q]
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
  - name: echo
    when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: %s}
  - name: fetch-one
    when: [{method: example.FanoutService/FanoutServerStream, metadata: {x-topic: one}}]
    fetch: {topic: %s}
  - name: fetch-three
    when: [{method: example.FanoutService/FanoutServerStream, metadata: {x-topic: three}}]
    fetch: {topic: %s}
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: ferry-interop-%s
    session_timeout: 6s
    commit_interval: 100ms
    drain_timeout: 2s
`, strings.Join(brokers, ","), filepath.Join(root, "examples", "echo"), filepath.Join(root, "examples", "fanout"),
		ts.freq, ts.frep, replyTimeout, ts.f1, ts.f3, ts.zreq, target, run)
	cfg, err := config.Parse(filepath.Join(os.TempDir(), "ferry-interop.yaml"), []byte(y))
	if err != nil {
		return nil, fmt.Errorf("ferry config:\n%s\n%w", y, err)
	}
	cfg.Listeners.Admin.Address = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var level slog.Level
	if level.UnmarshalText([]byte(os.Getenv("FERRY_TEST_LOG"))) != nil {
		level = slog.LevelWarn
	}
	return app.Start(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}
