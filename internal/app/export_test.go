package app

import (
	"context"
	"log/slog"
	"os"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ferryproxy/ferry/internal/config"
)

// StartTraced is Start with spans exported to exp, synchronously, when
// the configuration enables tracing.
func StartTraced(ctx context.Context, cfg *config.Config, logger *slog.Logger, exp sdktrace.SpanExporter) (*App, error) {
	return start(ctx, cfg, logger, exp)
}

// EdgeServerOptions counts the gRPC server options the edge chain adds:
// none while it is idle.
func (a *App) EdgeServerOptions() int { return len(a.edge.ServerOptions()) }

// ReloadWatcher returns Run's reload watcher, with the files as they are
// now, to run until ctx ends.
func (a *App) ReloadWatcher() func(ctx context.Context, hup <-chan os.Signal, interval time.Duration) {
	return a.newReloadWatcher().run
}

// CallsRunning counts the calls the servers are running.
func (a *App) CallsRunning() int {
	a.calls.mu.Lock()
	defer a.calls.mu.Unlock()
	return a.calls.n
}
