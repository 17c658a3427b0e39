package app_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferryproxy/ferry/internal/app"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// soakEnv names the soak's duration; without it TestSoakProxy is skipped.
// FERRY_SOAK_CACHE (bytes, default 16 MiB) sets replies.max_cached_bytes and
// FERRY_SOAK_CALLERS (default 32) the calls in flight.
const soakEnv = "FERRY_SOAK"

// TestSoakProxy drives the proxy path — client → Ferry front end → Kafka →
// Ferry back end → gRPC echo server → Kafka → front end — at a steady load
// for FERRY_SOAK (e.g. 5m) and samples the front end's memory and
// goroutines. The front end runs in this process; the back end, the echo
// server and, without FERRY_TEST_BROKERS, the embedded broker run in
// processes of their own, so what is measured is the front end and the
// load generator alone.
//
// It checks that the front end's resident memory stays within 1.5× of
// replies.max_cached_bytes above the base it had once the load ran (the
// reply cache is what grows with time), that goroutines stay flat, and
// that no call failed. docs/BENCHMARKS.md has the figures.
func TestSoakProxy(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv(soakEnv))
	if err != nil || d <= 0 {
		t.Skipf("set %s to a duration (e.g. 5m) to run the soak", soakEnv)
	}
	cache := int64(envInt(t, "FERRY_SOAK_CACHE", 16<<20))
	callers := envInt(t, "FERRY_SOAK_CALLERS", 32)

	dir := t.TempDir()
	bin := buildBinary(t, dir, "ferry", "./cmd/ferry")
	echoBin := buildBinary(t, dir, "echoserver", "./examples/proxy/echoserver")

	echoAddr := freeAddr(t)
	startProcess(t, "echo server", echoBin, "-addr", echoAddr)
	waitListening(t, echoAddr)

	// The brokers: the real ones the tests are given, else an embedded
	// broker hosted by the back-end process, so that its records (kfake
	// keeps every record in memory) are not counted as the front end's.
	var brokers, backendBrokers, embedded string
	if testkit.Real() {
		if kit.Secured(t) {
			t.Skip("the soak measures the plaintext path; run it without FERRY_TEST_KAFKA_TLS_* and FERRY_TEST_KAFKA_SASL")
		}
		brokers = strings.Join(kit.Seeds(t), ",")
		backendBrokers = brokers
	} else {
		brokers = freeAddr(t)
		_, port, _ := net.SplitHostPort(brokers)
		embedded = fmt.Sprintf("embedded: {port: %s, partitions: 4}\n", port)
	}
	req, rep := testkit.Name(t, "req"), testkit.Name(t, "rep")
	backendCfg := filepath.Join(dir, "backend.yaml")
	writeFile(t, backendCfg, fmt.Sprintf(`clusters: [{name: default, brokers: [%q]}]
%slisteners: {grpc: {address: "127.0.0.1:0"}, admin: {address: ""}}
log: {level: warn}
backends:
  - name: echo
    topic: %s
    target: %s
    concurrency: %d
    commit_interval: 1s
`, backendBrokers, embedded, req, echoAddr, 2*callers))
	startProcess(t, "back end", bin, "serve", "-c", backendCfg)
	waitListening(t, brokers)
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(testkit.Context(t, 30*time.Second), 4, 1, nil, req, rep); err != nil {
		t.Fatalf("creating topics: %v", err)
	}

	// Phase one, the base: the same load with a 1 MiB reply cache. Phase
	// two: the soak with the cache under test. What phase two holds beyond
	// phase one is what the cache costs.
	base := soakPhase(t, dir, brokers, req, rep, 1<<20, callers, min(d/4, 30*time.Second))
	debug.FreeOSMemory()
	soak := soakPhase(t, dir, brokers, req, rep, cache, callers, d)

	const mib = 1 << 20
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %s, %d callers, 1 KiB unary calls, replies.max_cached_bytes %d MiB, GOMAXPROCS %d\n", d, callers, cache/mib, runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "%8s %10s %9s %8s %9s %10s %10s\n", "time", "calls", "calls/s", "RSS MiB", "heap MiB", "cache MiB", "goroutines")
	for i, s := range soak.samples {
		rate := 0.0
		if i > 0 {
			prev := soak.samples[i-1]
			rate = float64(s.calls-prev.calls) / (s.at - prev.at).Seconds()
		}
		fmt.Fprintf(&b, "%8s %10d %9.0f %8.1f %9.1f %10.1f %10d\n", s.at.Round(time.Second), s.calls, rate,
			float64(s.rss)/mib, float64(s.heap)/mib, float64(s.cached)/mib, s.goroutines)
	}
	fmt.Fprintf(&b, "base (1 MiB cache, same load): peak RSS %.1f MiB, heap %.1f MiB\n", float64(base.peakRSS)/mib, float64(base.peakHeap)/mib)
	fmt.Fprintf(&b, "soak: peak RSS %.1f MiB = base + %.2f × max_cached_bytes; peak heap %.1f MiB; goroutines %d → %d; %d calls, %d failed",
		float64(soak.peakRSS)/mib, float64(soak.peakRSS-base.peakRSS)/float64(cache), float64(soak.peakHeap)/mib,
		soak.samples[0].goroutines, soak.samples[len(soak.samples)-1].goroutines, soak.calls, soak.failed)
	t.Log(b.String())

	for _, p := range []soakResult{base, soak} {
		if p.failed > 0 {
			t.Errorf("%d calls failed; the first: %v", p.failed, p.firstErr)
		}
	}
	if grown := soak.peakRSS - base.peakRSS; grown > cache*3/2 {
		t.Errorf("front-end memory grew by %.1f MiB over its base, more than 1.5× replies.max_cached_bytes (%d MiB)", float64(grown)/mib, cache/mib)
	}
	// Goroutines come and go with the calls in flight, so compare the
	// most seen in the first and in the last third of the soak.
	third := max(len(soak.samples)/3, 1)
	first, last := mostGoroutines(soak.samples[:third]), mostGoroutines(soak.samples[len(soak.samples)-third:])
	if last > first+first/10+10 {
		t.Errorf("goroutines grew from at most %d early to %d late under a steady load", first, last)
	}
}

func mostGoroutines(ss []soakSample) int {
	n := 0
	for _, s := range ss {
		n = max(n, s.goroutines)
	}
	return n
}

type soakSample struct {
	at                time.Duration
	calls             int64
	rss, heap, cached int64
	goroutines        int
}

type soakResult struct {
	samples           []soakSample
	peakRSS, peakHeap int64
	calls, failed     int64
	firstErr          any
}

// soakPhase runs a front end with the given reply cache under the load of
// callers unary calls in flight for d, sampling it.
func soakPhase(t *testing.T, dir, brokers, req, rep string, cache int64, callers int, d time.Duration) soakResult {
	cfg, err := config.Parse(filepath.Join(dir, "front.yaml"), []byte(fmt.Sprintf(`
clusters: [{name: default, brokers: [%q]}]
listeners: {grpc: {address: "127.0.0.1:0"}}
protos: [{files: [echo.proto], import_paths: [%q]}]
log: {level: warn}
replies: {lookback: 5m, max_cached_bytes: %d}
routes:
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s}
`, brokers, filepath.Join(root(t), "examples", "echo"), cache, req, rep)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Listeners.Admin.Address = ""
	front, err := app.Start(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		front.Close(ctx)
	}()
	cc, err := grpc.NewClient(front.GRPCAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	loadCtx, stop := context.WithCancel(context.Background())
	defer stop()
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	msg := strings.Repeat("x", 1024)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				res := call(loadCtx, cc, "UnaryEcho", nil, msg)
				switch {
				case loadCtx.Err() != nil:
				case res.err != nil || len(res.msgs) != 1 || res.msgs[0] != msg:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d messages, %v", len(res.msgs), res.err))
				default:
					calls.Add(1)
				}
			}
		}()
	}

	var res soakResult
	start := time.Now()
	take := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		s := soakSample{time.Since(start), calls.Load(), residentBytes(t), int64(m.HeapInuse), front.CachedReplyBytes(), runtime.NumGoroutine()}
		res.samples = append(res.samples, s)
		res.peakRSS, res.peakHeap = max(res.peakRSS, s.rss), max(res.peakHeap, s.heap)
	}
	// The first sample once the load is running.
	time.Sleep(3 * time.Second)
	take()
	tick := time.NewTicker(min(30*time.Second, max(d/10, time.Second)))
	for time.Since(start) < d {
		<-tick.C
		take()
	}
	tick.Stop()
	stop()
	wg.Wait()
	res.calls, res.failed, res.firstErr = calls.Load(), failed.Load(), firstErr.Load()
	return res
}

func envInt(t testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// startProcess runs a command until the test ends, and shows its output if
// the test failed.
func startProcess(t *testing.T, what, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	var mu sync.Mutex
	cmd.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("%s's output:\n%s", what, out.String())
			mu.Unlock()
		}
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// waitListening waits until addr accepts connections.
func waitListening(t testing.TB, addr string) {
	t.Helper()
	addr, _, _ = strings.Cut(addr, ",")
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// residentBytes returns this process's resident memory in bytes.
func residentBytes(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
