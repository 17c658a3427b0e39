package grpcserver

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestCloseIdempotent: a server closes whether it served or not, more
// than once, and Serve returns nil once it is closed.
func TestCloseIdempotent(t *testing.T) {
	for _, serve := range []bool{false, true} {
		s := New(Options{ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
		served := make(chan error, 1)
		if serve {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { served <- s.Serve(lis) }()
		}
		for range 2 {
			if err := s.Close(context.Background()); err != nil {
				t.Errorf("Close (served %v): %v", serve, err)
			}
		}
		if serve {
			if err := <-served; err != nil {
				t.Errorf("Serve after Close: %v", err)
			}
		}
	}
}
