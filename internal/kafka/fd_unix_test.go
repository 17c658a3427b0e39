//go:build unix

package kafka

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// signalHandler closes seen on the first record.
type signalHandler struct {
	slog.Handler
	seen chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	select {
	case <-h.seen:
	default:
		close(h.seen)
	}
	return nil
}

// TestEmbeddedOutOfFDs runs the process out of file descriptors while a
// client connects to the embedded broker, so that the broker's accept
// fails with EMFILE; once descriptors are free again, a new client is
// served. It runs in a child process with a low RLIMIT_NOFILE.
func TestEmbeddedOutOfFDs(t *testing.T) {
	if os.Getenv("FERRY_FD_CHILD") == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestEmbeddedOutOfFDs$", "-test.v")
		cmd.Env = append(os.Environ(), "FERRY_FD_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{})
	e, err := StartEmbedded(0, 1, EmbeddedLogger(slog.New(signalHandler{slog.DiscardHandler, seen})))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())

	// Take every free descriptor, give one back, and connect with it: the
	// broker then has none for accepting the connection.
	var files []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	files[len(files)-1].Close()
	files = files[:len(files)-1]
	conn, err := net.DialTimeout("tcp", e.Addrs()[0], 5*time.Second)
	if err != nil {
		t.Fatalf("connecting with the last descriptor: %v", err)
	}
	select {
	case <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the broker logged no failed accept with no descriptor left")
	}
	conn.Close()
	for _, f := range files {
		f.Close()
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("after the descriptors were freed: %v", err)
	}
}
