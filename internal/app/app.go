// Package app wires Ferry together from a configuration and owns its
// lifecycle: start in order (embedded broker, Kafka clusters, protos,
// routes and their reply readers, the gRPC server), stop in reverse, and
// undo a partial start when a step fails.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/grpcserver"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/kafkaapi/ferryapi"
	"github.com/ferryproxy/ferry/internal/kafkaapi/pixy"
	"github.com/ferryproxy/ferry/internal/logging"
	"github.com/ferryproxy/ferry/internal/produce"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/routing"
)

// logRepeatWindow is how long the log holds back repeats of a record
// before it summarizes them.
const logRepeatWindow = 10 * time.Second

// App is one running Ferry.
type App struct {
	cfg    *config.Config
	logger *slog.Logger
	// repeats holds back repeated log records; every logger of this App
	// writes through it.
	repeats *logging.Repeats

	embedded *kafka.Embedded
	clusters map[string]*kafka.Cluster
	readers  []*produce.Reader
	backends []*backend.Backend
	runtime  *produce.Runtime
	hubs     *fetch.Hubs
	server   *grpcserver.Server
	lis      net.Listener
	kafkaAPI *kafkaapi.Service // nil unless kafka_api.enabled or kafka_api.pixy
	httpSrv  *http.Server      // nil unless the Kafka API is served over HTTP
	httpLis  net.Listener

	// ctx bounds record writing and reply reading; cancel ends them after
	// the server stopped.
	ctx    context.Context
	cancel context.CancelFunc

	serveErr  chan error
	closeOnce sync.Once
}

// LoadProtos loads the configuration's proto sources; relative paths are
// taken from the configuration file's directory.
func LoadProtos(ctx context.Context, cfg *config.Config) (*protoreg.Registry, error) {
	sources := make([]protoreg.Source, len(cfg.Protos))
	for i, p := range cfg.Protos {
		sources[i] = protoreg.Source{Files: p.Files, ImportPaths: p.ImportPaths, DescriptorSet: p.DescriptorSet}
	}
	reg, err := protoreg.Load(ctx, filepath.Dir(cfg.File()), sources)
	if err != nil {
		return nil, fmt.Errorf("%s: loading protos: %w", cfg.File(), err)
	}
	return reg, nil
}

// Validate checks everything Start would, short of connecting and
// listening: the configuration, the protos, and that every route names a
// method the protos define.
func Validate(ctx context.Context, cfg *config.Config) error {
	reg, err := LoadProtos(ctx, cfg)
	if err != nil {
		return err
	}
	_, err = routing.NewTable(cfg, reg, routesFor(cfg, nil))
	return err
}

// routesFor builds the routes of cfg with build, or unconnected ones (for
// validation) when build is nil.
func routesFor(cfg *config.Config, build func(rc config.Route) routing.Route) map[string]routing.Route {
	m := make(map[string]routing.Route, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		switch {
		case build != nil:
			m[rc.Name] = build(rc)
		case rc.Fetch != nil:
			m[rc.Name] = fetch.NewRoute(rc.Name, rc.Fetch, nil)
		default:
			m[rc.Name] = produce.NewRoute(nil, rc.Name, rc.Produce, nil, nil, cfg.Replies.MaxBufferedPerCall)
		}
	}
	return m
}

// Start builds and starts Ferry. On error, whatever had started is stopped
// again.
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger) (_ *App, err error) {
	// During an outage every client retrying the broker logs the same
	// warning, hundreds a second: one line per kind and window keeps the
	// log readable.
	repeats := logging.NewRepeats(logger.Handler(), logRepeatWindow)
	logger = slog.New(repeats)
	a := &App{cfg: cfg, logger: logger, repeats: repeats, clusters: map[string]*kafka.Cluster{}, serveErr: make(chan error, 1)}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			a.Close(context.Background())
		}
	}()

	if err := a.startKafka(ctx); err != nil {
		return nil, err
	}
	reg, err := LoadProtos(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a.runtime = produce.NewRuntime(a.ctx, logger)
	a.hubs = fetch.NewHubs(fetch.Options{
		Clusters:    func(name string) fetch.Cluster { return a.clusters[name] },
		RingSize:    4096,
		MaxCatchUps: cfg.Fetch.MaxCatchUpReaders,
		CatchUpWait: cfg.Fetch.CatchUpWait,
		Logger:      logger,
	})
	routes, err := a.buildRoutes()
	if err != nil {
		return nil, err
	}
	table, err := routing.NewTable(cfg, reg, routes)
	if err != nil {
		return nil, err
	}
	if err := a.startBackends(); err != nil {
		return nil, err
	}

	var pixySrv *pixy.Server
	register := func(srv *grpc.Server) {
		if !cfg.KafkaAPI.Enabled && !cfg.KafkaAPI.Pixy {
			return
		}
		names := make([]string, len(cfg.Clusters))
		for i, c := range cfg.Clusters {
			names[i] = c.Name
		}
		a.kafkaAPI = kafkaapi.New(cfg.KafkaAPI, a.clusters, names, logger)
		if cfg.KafkaAPI.Enabled {
			kafkav1.RegisterKafkaServer(srv, ferryapi.NewServer(a.kafkaAPI, cfg.KafkaAPI, logger))
		}
		if cfg.KafkaAPI.Pixy {
			pixySrv = pixy.NewServer(a.kafkaAPI, cfg.KafkaAPI, logger)
			kafkapixy.RegisterKafkaPixyServer(srv, pixySrv)
		}
	}

	g := cfg.Listeners.GRPC
	a.server = grpcserver.New(grpcserver.Options{
		Reflection:           g.Reflection,
		Health:               g.Health,
		MaxRecvMessageSize:   g.MaxRecvMessageSize,
		MaxConcurrentStreams: g.MaxConcurrentStreams,
		ShutdownTimeout:      g.ShutdownTimeout,
		Registry:             reg,
		Handler:              table.Handle,
		Register:             register,
		Logger:               logger,
	})
	a.lis, err = net.Listen("tcp", g.Address)
	if err != nil {
		return nil, fmt.Errorf("listening for gRPC on %s (listeners.grpc.address): %w", g.Address, err)
	}
	go func() { a.serveErr <- a.server.Serve(a.lis) }()
	if err := a.startHealthChecks(); err != nil {
		return nil, err
	}
	services := make([]string, 0, len(reg.Services()))
	for _, s := range reg.Services() {
		services = append(services, string(s.FullName()))
	}
	logger.Info("serving gRPC", "address", a.lis.Addr().String(), "services", services, "routes", len(cfg.Routes),
		"kafka_api", cfg.KafkaAPI.Enabled, "kafka_pixy", cfg.KafkaAPI.Pixy)
	if err := a.startHTTP(pixySrv); err != nil {
		return nil, err
	}
	return a, nil
}

// startHTTP serves the REST faces of the Kafka API: Ferry's under /v1/
// (transcoded to its gRPC service) and Kafka-Pixy's paths.
func (a *App) startHTTP(pixySrv *pixy.Server) error {
	h := a.cfg.Listeners.HTTP
	k := a.cfg.KafkaAPI
	if h.Address == "" || (!k.Enabled && !k.Pixy) {
		return nil
	}
	mux := http.NewServeMux()
	if k.Enabled {
		rest, err := ferryapi.NewRESTHandler(a.server.GRPC(), h.MaxRequestBodySize)
		if err != nil {
			return fmt.Errorf("serving Ferry's Kafka API over REST: %w", err)
		}
		mux.Handle("/v1/", rest)
	}
	if k.Pixy {
		mux.Handle("/", pixy.NewHandler(pixySrv, h.MaxRequestBodySize))
	}
	lis, err := net.Listen("tcp", h.Address)
	if err != nil {
		return fmt.Errorf("listening for HTTP on %s (listeners.http.address): %w", h.Address, err)
	}
	a.httpLis = lis
	a.httpSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := a.httpSrv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("HTTP server failed", "error", err)
		}
	}()
	a.logger.Info("serving HTTP", "address", lis.Addr().String(), "kafka_api", k.Enabled, "kafka_pixy", k.Pixy)
	return nil
}

// HTTPAddr returns the address the HTTP server listens on, or "" when it
// does not run.
func (a *App) HTTPAddr() string {
	if a.httpLis == nil {
		return ""
	}
	return a.httpLis.Addr().String()
}

// startKafka starts the embedded broker when a cluster has no brokers, and
// checks that every cluster answers.
func (a *App) startKafka(ctx context.Context) error {
	kafkaLogger := a.logger.With("component", "kafka")
	if a.cfg.Log.Level != "debug" {
		// franz-go logs every connection at info; keep Ferry's normal
		// operation quiet and let its warnings through.
		kafkaLogger = slog.New(levelFloor{a.logger.Handler(), slog.LevelWarn}).With("component", "kafka")
	}
	for _, cc := range a.cfg.Clusters {
		seeds := cc.Brokers
		if len(seeds) == 0 {
			if a.embedded == nil {
				e, err := kafka.StartEmbedded(a.cfg.Embedded.Port, a.cfg.Embedded.Partitions, kafka.EmbeddedLogger(a.logger))
				if err != nil {
					return fmt.Errorf("embedded.port: %w", err)
				}
				a.embedded = e
				a.logger.Warn("no brokers configured: started the embedded Kafka broker, which keeps data in memory only",
					"address", e.Addrs()[0], "cluster", cc.Name)
			}
			seeds = a.embedded.Addrs()
		}
		cl := kafka.NewCluster(cc, seeds, kafkaLogger)
		a.clusters[cc.Name] = cl
		pctx, cancel := context.WithTimeout(ctx, cc.DialTimeout)
		err := cl.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%w (clusters: %s)", err, cc.Name)
		}
	}
	return nil
}

// startHealthChecks probes every cluster, and reports the server
// NOT_SERVING while any of them is unreachable.
func (a *App) startHealthChecks() error {
	var mu sync.Mutex
	update := func(bool) {
		// Probes of several clusters report concurrently: each applies
		// the state of all of them, under mu, so the last one applied is
		// current.
		mu.Lock()
		defer mu.Unlock()
		up := true
		for _, cl := range a.clusters {
			up = up && cl.Up()
		}
		a.server.SetServing(up)
	}
	for _, cl := range a.clusters {
		if err := cl.StartHealthCheck(update); err != nil {
			return err
		}
	}
	return nil
}

// buildRoutes creates each route's producer and starts one reader per
// reply topic and cluster, shared by every route that reads it.
func (a *App) buildRoutes() (map[string]routing.Route, error) {
	start := time.Now().Add(-a.cfg.Replies.Lookback)
	readers := map[[2]string]*produce.Reader{}
	var errs []error
	routes := routesFor(a.cfg, func(rc config.Route) routing.Route {
		if rc.Fetch != nil {
			return fetch.NewRoute(rc.Name, rc.Fetch, a.hubs)
		}
		p := rc.Produce
		cl := a.clusters[p.Cluster]
		producer, err := cl.Producer(kafka.Acks(p.Acks))
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		var rd *produce.Reader
		if p.ReplyTo != "" {
			key := [2]string{p.Cluster, p.ReplyTo}
			if rd = readers[key]; rd == nil {
				kc, err := cl.NewReader(p.ReplyTo, start)
				if err != nil {
					errs = append(errs, err)
					return nil
				}
				rd = produce.StartReader(a.ctx, kc, start, produce.ReaderOptions{
					Topic: p.ReplyTo, Names: p.HeaderNames, Replies: a.cfg.Replies, Logger: a.logger,
				})
				readers[key] = rd
				a.readers = append(a.readers, rd)
			}
		}
		return produce.NewRoute(a.runtime, rc.Name, p, producer, rd, a.cfg.Replies.MaxBufferedPerCall)
	})
	return routes, errors.Join(errs...)
}

// startBackends starts every back end: a group consumer of its request
// topic, the reply producer, and the gRPC client of its server.
func (a *App) startBackends() error {
	for _, bc := range a.cfg.Backends {
		cl := a.clusters[bc.Cluster]
		prod, err := cl.Producer(kafka.AcksInSyncReplicas)
		if err != nil {
			return err
		}
		b, err := backend.New(backend.Options{Config: bc, Producer: prod, Logger: a.logger, MaxMessageBytes: a.cfg.Listeners.GRPC.MaxRecvMessageSize})
		if err != nil {
			return err
		}
		a.backends = append(a.backends, b)
		cons, err := cl.NewGroupConsumer(bc.Topic, bc.GroupID, bc.GroupInstanceID, bc.Start, bc.SessionTimeout, b.ConsumerOpts()...)
		if err != nil {
			return err
		}
		b.Start(cons)
		a.logger.Info("serving back end", "backend", bc.Name, "topic", bc.Topic, "group", bc.GroupID, "target", bc.Target)
	}
	return nil
}

// GRPCAddr returns the address the gRPC server listens on.
func (a *App) GRPCAddr() string { return a.lis.Addr().String() }

// KafkaAddrs returns the seed brokers of the named cluster.
func (a *App) KafkaAddrs(cluster string) []string { return a.clusters[cluster].Seeds() }

// Wait returns when the gRPC server stops serving on its own, with why.
func (a *App) Wait() <-chan error { return a.serveErr }

// Close stops Ferry in reverse order of start: the gRPC server (graceful,
// bounded by the shutdown timeout and ctx), the calls' request readers, the
// reply readers, then the producers after they wrote what they hold, and
// the embedded broker last. It is idempotent and safe after a partial start.
func (a *App) Close(ctx context.Context) {
	a.closeOnce.Do(func() {
		if a.kafkaAPI != nil {
			// Commits what was acknowledged and leaves the groups; calls
			// consuming end with UNAVAILABLE, so the servers below stop
			// without waiting for them.
			a.kafkaAPI.Close()
		}
		// Both servers stop together, within one shutdown timeout.
		var stopping sync.WaitGroup
		if a.httpSrv != nil {
			stopping.Go(func() {
				sctx, cancel := context.WithTimeout(ctx, a.cfg.Listeners.GRPC.ShutdownTimeout)
				defer cancel()
				if err := a.httpSrv.Shutdown(sctx); err != nil {
					a.httpSrv.Close()
				}
			})
		}
		if a.server != nil {
			stopping.Go(func() { a.server.Stop(ctx) })
		}
		stopping.Wait()
		if a.runtime != nil {
			a.runtime.Wait()
		}
		if a.hubs != nil {
			a.hubs.Close()
		}
		for _, b := range a.backends {
			b.Close()
		}
		for _, rd := range a.readers {
			rd.Close()
		}
		for name, cl := range a.clusters {
			if err := cl.Flush(ctx); err != nil {
				a.logger.Warn("records not written before shutdown", "cluster", name, "err", err)
			}
			cl.Close()
		}
		a.cancel()
		if a.embedded != nil {
			a.embedded.Close()
		}
		a.repeats.Close()
	})
}

// levelFloor is a slog handler that drops records below min.
type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelFloor) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFloor{h.Handler.WithAttrs(as), h.min}
}

func (h levelFloor) WithGroup(name string) slog.Handler {
	return levelFloor{h.Handler.WithGroup(name), h.min}
}

// BackendStats returns the flow-control counters of each back end, by name.
func (a *App) BackendStats() map[string]backend.Stats {
	m := map[string]backend.Stats{}
	for i, b := range a.backends {
		m[a.cfg.Backends[i].Name] = b.Stats()
	}
	return m
}

// FetchStats counts the Kafka readers of fetch routes.
func (a *App) FetchStats() fetch.Stats { return a.hubs.Stats() }

// PendingReplies returns how many calls wait for replies on all reply
// readers; it is zero when no call is in flight.
func (a *App) PendingReplies() int {
	n := 0
	for _, rd := range a.readers {
		n += rd.Waiting()
	}
	return n
}

// CachedReplyBytes returns what the kept replies of every reply reader
// count against replies.max_cached_bytes.
func (a *App) CachedReplyBytes() int64 {
	var n int64
	for _, rd := range a.readers {
		n += rd.CachedBytes()
	}
	return n
}
