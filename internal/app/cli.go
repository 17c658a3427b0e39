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
	"sync"
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
                           (a second signal stops at once)
      --log-format text|json                   overrides log.format
      --log-level debug|info|warn|error        overrides log.level
  ferry validate -c FILE   check FILE and the protos it names, without connecting or listening
  ferry version            print the version
`

// Main runs the ferry command with args (without the program name) and
// returns its exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	return run(args, stdout, stderr, sigs, os.Exit)
}

// run is Main with its signals and its way to exit at once given, so
// tests can send the signals.
func run(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal, exit func(code int)) int {
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
	var logFormat, logLevel string
	if args[0] == "serve" {
		fs.StringVar(&logFormat, "log-format", "", "text or json: overrides log.format")
		fs.StringVar(&logLevel, "log-level", "", "debug, info, warn or error: overrides log.level")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if err := checkLogFlags(logFormat, logLevel); err != nil {
		fmt.Fprintf(stderr, "ferry %s: %v\n", args[0], err)
		return 2
	}
	cfg, err := config.Load(*file)
	if err != nil {
		printErrors(stderr, err)
		return 1
	}
	if logFormat != "" {
		cfg.Log.Format = logFormat
	}
	if logLevel != "" {
		cfg.Log.Level = logLevel
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := NewLogger(stderr, cfg.Log)
	// The first signal starts the graceful stop; a second one stops at
	// once, for an operator who will not wait for it.
	done := make(chan struct{})
	var watching sync.WaitGroup
	watching.Go(func() {
		select {
		case sig := <-sigs:
			logger.Info("shutting down: a second signal stops at once", "signal", sig.String(),
				"timeout", cfg.Shutdown.Bound(cfg.Listeners.GRPC.ShutdownTimeout))
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			logger.Error("stopping at once", "signal", sig.String())
			exit(1)
		case <-done:
		}
	})
	defer watching.Wait()
	defer close(done)
	if args[0] == "validate" {
		if err := Validate(ctx, cfg); err != nil {
			printErrors(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: configuration is valid (%d routes)\n", *file, len(cfg.Routes))
		return 0
	}
	if err := Run(ctx, cfg, logger); err != nil {
		logger.Error("ferry stopped", "err", err)
		return 1
	}
	return 0
}

// checkLogFlags checks --log-format and --log-level as Validate checks
// log.format and log.level.
func checkLogFlags(format, level string) error {
	switch format {
	case "", "text", "json":
	default:
		return fmt.Errorf("--log-format %q is not a format: use text or json", format)
	}
	switch level {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q is not a level: use debug, info, warn or error", level)
	}
	return nil
}

// Run starts Ferry and serves until ctx ends or the server fails, then
// shuts down within shutdown.timeout: when it passes, Run returns even
// if some part has not stopped, so the process can exit.
func Run(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	a, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	// Reloads run until the stop begins; Close waits for one under way.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	watchCtx, stopWatching := context.WithCancel(ctx)
	var watching sync.WaitGroup
	w := a.newReloadWatcher()
	watching.Go(func() { w.run(watchCtx, hup, reloadCheckInterval) })
	defer watching.Wait()
	defer stopWatching()
	select {
	case <-ctx.Done():
		err = nil
	case err = <-a.Wait():
	}
	stopWatching()
	bound := cfg.Shutdown.Bound(cfg.Listeners.GRPC.ShutdownTimeout)
	closeCtx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		a.Close(closeCtx)
	}()
	select {
	case <-closed:
	case <-closeCtx.Done():
		// Each part stops waiting when closeCtx ends; one that does not
		// at once is left to the process's exit.
		select {
		case <-closed:
		case <-time.After(closeSlack):
			logger.Error("shutdown.timeout passed: stopping with parts still running", "timeout", bound)
		}
	}
	return err
}

// reloadCheckInterval is how often Run looks for a change of the
// configuration file and the protos it names.
const reloadCheckInterval = time.Second

// closeSlack is how long Run waits past shutdown.timeout for the parts
// that saw it pass to return.
const closeSlack = time.Second

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
