package app

import (
	"context"
	"log/slog"

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
