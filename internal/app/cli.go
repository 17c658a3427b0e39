package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/ferryproxy/ferry/internal/config"
)

// Version is Ferry's version, set at build time with
// -ldflags "-X github.com/ferryproxy/ferry/internal/app.Version=v1.2.3".
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

const usage = `Ferry carries gRPC calls over Apache Kafka.

Usage:
  ferry serve -c FILE      serve the configuration in FILE until SIGINT or SIGTERM
  ferry validate -c FILE   check FILE and the protos it names, without connecting or listening
  ferry version            print the version
`

// Main runs the ferry command with args (without the program name) and
// returns its exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "ferry", version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "serve", "validate":
	default:
		fmt.Fprintf(stderr, "ferry: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	fs := flag.NewFlagSet("ferry "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "ferry.yaml", "configuration file")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, err := config.Load(*file)
	if err != nil {
		printErrors(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if args[0] == "validate" {
		if err := Validate(ctx, cfg); err != nil {
			printErrors(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: configuration is valid (%d routes)\n", *file, len(cfg.Routes))
		return 0
	}
	logger := NewLogger(stderr, cfg.Log)
	if err := Run(ctx, cfg, logger); err != nil {
		logger.Error("ferry stopped", "err", err)
		return 1
	}
	return 0
}

// Run starts Ferry and serves until ctx ends or the server fails, then
// shuts down.
func Run(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	a, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		err = nil
	case err = <-a.Wait():
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), cfg.Listeners.GRPC.ShutdownTimeout+10*time.Second)
	defer cancel()
	a.Close(closeCtx)
	return err
}

// printErrors prints one problem per line, so each names its own file and
// line.
func printErrors(w io.Writer, err error) {
	var ces config.Errors
	if errors.As(err, &ces) {
		for _, e := range ces {
			fmt.Fprintln(w, e)
		}
		return
	}
	fmt.Fprintln(w, err)
}

// NewLogger returns the logger the configuration asks for.
func NewLogger(w io.Writer, c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
