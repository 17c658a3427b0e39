package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// signalConfig writes a configuration with a produce route on the
// embedded broker, whose calls wait for replies no back end sends.
func signalConfig(t *testing.T) string {
	wd, _ := os.Getwd()
	file := filepath.Join(t.TempDir(), "ferry.yaml")
	y := fmt.Sprintf(`
clusters: [{name: default}]
embedded: {port: 0}
listeners: {grpc: {address: "127.0.0.1:0", shutdown_timeout: 20s}, http: {address: ""}, admin: {address: ""}}
shutdown: {timeout: 30s}
protos: [{files: [echo.proto], import_paths: [%q]}]
routes:
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: requests, reply_to: replies, timeout: 60s}
`, filepath.Join(wd, "..", "..", "examples", "echo"))
	if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// serveUntil runs `ferry serve` with args until it returns, and returns
// its exit code on the channel, and the address it serves gRPC on.
func serveUntil(t *testing.T, stderr *syncBuffer, sigs chan os.Signal, exit func(int), args ...string) (<-chan int, string) {
	t.Helper()
	code := make(chan int, 1)
	go func() { code <- run(append([]string{"serve"}, args...), &bytes.Buffer{}, stderr, sigs, exit) }()
	addr := regexp.MustCompile(`"?address"?[=:]"?(127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := addr.FindAllStringSubmatch(stderr.String(), -1); strings.Contains(stderr.String(), "serving gRPC") && len(m) > 0 {
			return code, m[len(m)-1][1]
		}
	}
	t.Fatalf("ferry serve did not start:\n%s", stderr.String())
	return nil, ""
}

// TestServeSignals: the first signal stops Ferry gracefully (logged as
// the --log-format flag asks); the second, sent while a call keeps the
// graceful stop waiting, stops it at once.
func TestServeSignals(t *testing.T) {
	file := signalConfig(t)

	t.Run("first", func(t *testing.T) {
		var stderr syncBuffer
		sigs := make(chan os.Signal, 2)
		code, _ := serveUntil(t, &stderr, sigs, func(int) { t.Error("exited at once after one signal") },
			"-c", file, "--log-format", "json", "--log-level", "info")
		sigs <- syscall.SIGTERM
		select {
		case c := <-code:
			if c != 0 {
				t.Errorf("exit code %d after SIGTERM, want 0:\n%s", c, stderr.String())
			}
		case <-time.After(25 * time.Second):
			t.Fatal("ferry serve did not stop after SIGTERM")
		}
		for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			if !strings.HasPrefix(line, "{") {
				t.Errorf("--log-format json wrote a line that is not JSON: %s", line)
			}
		}
		if !strings.Contains(stderr.String(), `"msg":"shutting down: a second signal stops at once"`) {
			t.Errorf("no shutdown line:\n%s", stderr.String())
		}
	})

	t.Run("second", func(t *testing.T) {
		var stderr syncBuffer
		sigs := make(chan os.Signal, 2)
		exited := make(chan int, 1)
		code, addr := serveUntil(t, &stderr, sigs, func(c int) { exited <- c }, "-c", file)
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(testkit.RawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var waiting sync.WaitGroup
		waiting.Go(func() { testkit.EchoCall(ctx, cc, "UnaryEcho", nil, "never answered") })
		time.Sleep(300 * time.Millisecond) // the call is in flight
		sigs <- syscall.SIGTERM
		time.Sleep(300 * time.Millisecond) // the graceful stop waits for it
		sigs <- syscall.SIGINT
		select {
		case c := <-exited:
			if c != 1 {
				t.Errorf("exit code %d at the second signal, want 1", c)
			}
		case <-time.After(15 * time.Second):
			// Well within shutdown.timeout (30s), so still a stop at
			// once, with room for a loaded machine.
			buf := make([]byte, 1<<20)
			t.Fatalf("no exit at the second signal:\n%s\ngoroutines:\n%s", stderr.String(), buf[:runtime.Stack(buf, true)])
		}
		if !strings.Contains(stderr.String(), "stopping at once") {
			t.Errorf("the second signal is not logged:\n%s", stderr.String())
		}
		// The exit above is the test's: end the call, so the graceful
		// stop ends too.
		cancel()
		waiting.Wait()
		<-code
	})
}

// TestServeLogFlags: a bad --log-format or --log-level is refused before
// the configuration is read.
func TestServeLogFlags(t *testing.T) {
	for _, args := range [][]string{{"--log-format", "xml"}, {"--log-level", "verbose"}} {
		var stderr bytes.Buffer
		if c := run(append([]string{"serve", "-c", "missing.yaml"}, args...), &bytes.Buffer{}, &stderr, nil, nil); c != 2 || !strings.Contains(stderr.String(), args[0]) {
			t.Errorf("serve %v = %d, %q; want 2 naming %s", args, c, stderr.String(), args[0])
		}
	}
}
