package logging

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the timer's writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

func newTestLogger(window time.Duration) (*slog.Logger, *Repeats, *syncBuffer) {
	out := &syncBuffer{}
	h := NewRepeats(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}), window)
	return slog.New(h), h, out
}

// TestRepeatsFlood: a flood of one warning (as during a broker outage,
// every dial failing with its own error text) is one line and a summary;
// other kinds, and debug records, are written as they come.
func TestRepeatsFlood(t *testing.T) {
	logger, h, out := newTestLogger(time.Hour)
	kafka := logger.With("component", "kafka")
	for i := range 7000 {
		kafka.Warn("unable to open connection to broker", "addr", "127.0.0.1:9092", "broker", "seed_0",
			"retry_in", time.Duration(i)*time.Millisecond, "err", errors.New("dial tcp 127.0.0.1:9092: connect: connection refused #"+string(rune('a'+i%26))))
	}
	kafka.Warn("unable to open connection to broker", "addr", "127.0.0.1:9093", "broker", "seed_1", "err", "refused")
	logger.Warn("unable to open connection to broker", "addr", "127.0.0.1:9092", "broker", "seed_0", "err", "refused")
	for range 3 {
		logger.Debug("polled", "n", 1)
	}
	if got := len(out.lines()); got != 6 {
		t.Fatalf("%d lines before Close, want 6 (first of three kinds, three debug):\n%s", got, strings.Join(out.lines(), "\n"))
	}
	h.Close()
	lines := out.lines()
	if len(lines) != 7 {
		t.Fatalf("%d lines after Close, want 7:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	last := lines[6]
	for _, want := range []string{"component=kafka", "addr=127.0.0.1:9092", "repeated=6999", "in_last=1h0m0s", `msg="unable to open connection to broker"`} {
		if !strings.Contains(last, want) {
			t.Errorf("summary %q lacks %s", last, want)
		}
	}
	// After Close, records pass through.
	for range 2 {
		kafka.Warn("unable to open connection to broker", "addr", "127.0.0.1:9092", "broker", "seed_0")
	}
	if got := len(out.lines()); got != 9 {
		t.Errorf("%d lines after writing two more past Close, want 9", got)
	}
}

// TestRepeatsWindows: once a window ends, the next record of the kind is
// written again, after the summary of the window before it; a window
// without repeats needs no summary.
func TestRepeatsWindows(t *testing.T) {
	logger, h, out := newTestLogger(time.Minute)
	defer h.Close()
	now := time.Unix(1000, 0)
	h.st.now = func() time.Time { return now }
	logger.Info("a")
	logger.Info("a")
	logger.Info("a")
	now = now.Add(time.Minute)
	logger.Info("a", "n", 0) // attributes differ: a kind of its own
	logger.Info("a")
	now = now.Add(2 * time.Minute)
	logger.Info("a")
	lines := out.lines()
	want := []string{`msg=a$`, `msg=a n=0$`, `msg=a repeated=2 in_last=1m0s$`, `msg=a$`, `msg=a$`}
	if len(lines) != len(want) {
		t.Fatalf("lines:\n%s\nwant %d", strings.Join(lines, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasSuffix(lines[i], strings.TrimSuffix(w, "$")) {
			t.Errorf("line %d = %q, want it to end with %q", i, lines[i], strings.TrimSuffix(w, "$"))
		}
	}
}

// TestRepeatsTimer: the summary is written when the window ends, without
// waiting for another record of the kind.
func TestRepeatsTimer(t *testing.T) {
	logger, h, out := newTestLogger(20 * time.Millisecond)
	defer h.Close()
	for range 5 {
		logger.Warn("lost")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(out.lines()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no summary 10s after a 20ms window: %q", out.lines())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if l := out.lines()[1]; !strings.Contains(l, "repeated=4") {
		t.Errorf("summary = %q, want repeated=4", l)
	}
}

// TestRepeatsPerCallErrors: an outage that fails every call logs one line
// per call, each with its own correlation id and offset; they are one kind,
// summarized, not thousands of lines.
func TestRepeatsPerCallErrors(t *testing.T) {
	logger, h, out := newTestLogger(time.Hour)
	for i := range 5000 {
		logger.Error("writing the final reply record; the caller will time out", "correlation_id", fmt.Sprintf("id-%d", i),
			"offset", i, "topic", "echo-responses", "err", "NOT_ENOUGH_REPLICAS")
	}
	h.Close()
	lines := out.lines()
	if len(lines) != 2 || !strings.Contains(lines[1], "repeated=4999") {
		t.Fatalf("%d lines, want the first and one summary of 4999 repeats:\n%s", len(lines), strings.Join(lines[:min(len(lines), 5)], "\n"))
	}
}
