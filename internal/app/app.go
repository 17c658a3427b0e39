// Package app wires Ferry together from a configuration and owns its
// lifecycle: an ordered list of components (embedded broker, Kafka
// clusters, reply readers, back ends, the calls' runtime, the gRPC and
// HTTP servers, the Kafka API), started in order and stopped in reverse,
// also to undo a partial start when a step fails. Every call of every
// face passes one edge chain (internal/edge), and every route kind is
// registered in one place (routeKinds).
package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/auth"
	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/grpcserver"
	"github.com/ferryproxy/ferry/internal/ingest"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/kafkaapi/ferryapi"
	"github.com/ferryproxy/ferry/internal/kafkaapi/pixy"
	"github.com/ferryproxy/ferry/internal/logging"
	"github.com/ferryproxy/ferry/internal/metrics"
	"github.com/ferryproxy/ferry/internal/produce"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/routing"
	"github.com/ferryproxy/ferry/internal/web"
)

// logRepeatWindow is how long the log holds back repeats of a record
// before it summarizes them.
const logRepeatWindow = 10 * time.Second

// App is one running Ferry.
type App struct {
	cfg    *config.Config
	logger *slog.Logger
	// repeats holds back repeated log records; every logger of this App
	// but the access log writes through it.
	repeats *logging.Repeats
	// edge is the chain every call passes, whatever its face.
	edge *edge.Chain
	// tracer is the tracer provider; nil unless tracing.enabled.
	tracer trace.TracerProvider

	embedded *kafka.Embedded
	clusters map[string]*kafka.Cluster
	readers  []*produce.Reader
	// readerOf is the reader of each cluster and reply topic, and
	// replyStart where they all start reading, while routes are built.
	readerOf   map[[2]string]*produce.Reader
	replyStart time.Time
	// backends are the running back ends, changed by Reload.
	backendsMu sync.Mutex
	backends   []liveBackend
	// table routes every call of the catch-all handler; Reload swaps it.
	table atomic.Pointer[routing.Table]
	// reloadMu serializes Reload, and Close with it: closing is set under
	// it, and no Reload starts a component after.
	reloadMu sync.Mutex
	closing  bool
	// apiAllow are the Kafka API's allow rules in force.
	apiAllow []config.APIAllowRule
	runtime  *produce.Runtime
	hubs     *fetch.Hubs
	groups   *fetch.Groups     // the consumer groups of group fetch routes
	sources  *ingest.Manager   // nil without sources
	kafkaAPI *kafkaapi.Service // nil unless kafka_api.enabled or kafka_api.pixy
	pixy     *pixy.Server      // nil unless kafka_api.pixy
	server   *grpcserver.Server
	lis      net.Listener
	httpSrv  *http.Server // nil unless a face is served over HTTP
	httpLis  net.Listener
	// grpcTLS is the gRPC listener's TLS configuration, nil for plaintext.
	// With listeners.grpc.web, split sorts its connections between the
	// gRPC server and webSrv, which serves web through the gRPC server.
	grpcTLS *tls.Config
	split   *web.Split
	webSrv  *http.Server
	web     *web.Handler
	// metrics is the Prometheus registry; nil without an admin listener. methods are the gRPC
	// methods it names (knowMethods), replaced by Reload; adminLis is the admin listener's.
	metrics  *metrics.Registry
	methods  atomic.Pointer[map[string]bool]
	adminLis net.Listener
	// started is set once Start is done: /readyz reports the routes loaded.
	started atomic.Bool

	// ctx bounds record writing and reply reading; cancel ends them after
	// the server stopped.
	ctx    context.Context
	cancel context.CancelFunc

	serveErr chan error
	// serving counts the servers' Serve goroutines; their component
	// waits for them as it stops.
	serving sync.WaitGroup

	// components are what Start started, in order; Close stops them in
	// reverse (see add).
	components []component
	closeOnce  sync.Once
	// calls counts the calls running; Close refuses new ones from its
	// start, and the servers wait for those running (see inFlight).
	calls *inFlight
	// healthMu orders the clusters' health reports and Close's
	// NOT_SERVING, so that no report turns a stopping Ferry SERVING.
	healthMu sync.Mutex
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
	_, err := validate(ctx, cfg)
	return err
}

// validate is Validate returning the protos it loaded, so that Reload
// compiles them once.
func validate(ctx context.Context, cfg *config.Config) (*protoreg.Registry, error) {
	reg, err := LoadProtos(ctx, cfg)
	if err != nil {
		return nil, err
	}
	routes, err := routeKinds(nil).Check(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := routing.NewTable(cfg, reg, routes); err != nil {
		return nil, err
	}
	if err := ingest.Check(cfg, reg); err != nil {
		return nil, err
	}
	return reg, nil
}

// Start builds and starts Ferry: each part is a component, started in
// order and stopped by Close in reverse. On error, whatever had started
// is stopped again.
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*App, error) {
	return start(ctx, cfg, logger, nil)
}

// start is Start with spans exported to exp when tracing is enabled, or
// to the configured OTLP receiver when exp is nil.
func start(ctx context.Context, cfg *config.Config, logger *slog.Logger, exp sdktrace.SpanExporter) (_ *App, err error) {
	// During an outage every client retrying the broker logs the same
	// warning, hundreds a second: one line per kind and window keeps the
	// log readable. Access log lines are never repeats.
	repeats := logging.NewRepeats(logger.Handler(), logRepeatWindow)
	a := &App{cfg: cfg, logger: slog.New(repeats), repeats: repeats, clusters: map[string]*kafka.Cluster{}, serveErr: make(chan error, 1), calls: newInFlight()}
	defer func() {
		if err != nil {
			a.Close(context.Background())
		}
	}()
	// The access log comes first, so that it logs the calls the
	// authenticator refuses too.
	var interceptors []edge.Interceptor
	a.metrics = newMetrics(a)
	if a.measuring() {
		// First, so that it counts the calls the others refuse.
		interceptors = append(interceptors, a.metrics.Calls(a.knownMethod))
	}
	if cfg.Log.Access {
		interceptors = append(interceptors, edge.AccessLog(logger))
	}
	// Tracing comes before authentication, so that refused calls are
	// traced too.
	if in, ok, err := a.startTracing(ctx, exp); err != nil {
		return nil, err
	} else if ok {
		interceptors = append(interceptors, in)
	}
	if in, ok, err := a.authInterceptor(ctx); err != nil {
		return nil, err
	} else if ok {
		interceptors = append(interceptors, in)
	}
	// Request ids serve the access log: without it, Ferry adds no header.
	a.edge = edge.New(edge.Options{Interceptors: interceptors, RequestIDs: cfg.Log.Access})

	// The stop order, the reverse of this, is why the components come in
	// this order: the Kafka API first (its consuming calls end with
	// UNAVAILABLE, so the servers stop without waiting for them); then the
	// servers, both within one shutdown timeout; the calls' request
	// readers and fetch hubs once no call runs; the back ends; the reply
	// readers; the clusters' producers after they wrote what they hold;
	// the record-writing context; the embedded broker last.
	if err := a.startEmbedded(); err != nil {
		return nil, err
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	// Records are handed to the producers with App's own context, not a
	// caller's: a record whose context ended is failed, not written. It
	// ends only after the clusters, which write what they hold as they
	// close.
	a.own("record writing", closeFunc(func(context.Context) error { a.cancel(); return nil }))
	if err := a.startClusters(ctx); err != nil {
		return nil, err
	}
	reg, err := LoadProtos(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// The runtime and the hubs start nothing until calls come: they are
	// stopped after the servers, below.
	a.runtime = produce.NewRuntime(a.ctx, a.logger)
	a.hubs = fetch.NewHubs(fetch.Options{
		Clusters:      func(name string) fetch.Cluster { return a.clusters[name] },
		CacheMaxBytes: cfg.Fetch.Cache.MaxBytes,
		CacheMaxAge:   cfg.Fetch.Cache.MaxAge,
		MaxCatchUps:   cfg.Fetch.MaxCatchUpReaders,
		CatchUpWait:   cfg.Fetch.CatchUpWait,
		CatchUpWindow: cfg.Fetch.CatchUpWindowBytes,
		// New partitions of a fetched topic are picked up while it runs.
		PartitionRefresh: cfg.Fetch.PartitionRefresh,
		Logger:           a.logger,
	})
	a.groups = fetch.NewGroups(a.clusters, a.clusterNames(), cfg.KafkaAPI.Produce, a.logger)
	// Building the routes starts the reply readers, each put on the list
	// as it starts (see produceRoute).
	a.readerOf, a.replyStart = map[[2]string]*produce.Reader{}, time.Now().Add(-cfg.Replies.Lookback)
	routes, err := routeKinds(a).Build(cfg)
	if err != nil {
		return nil, err
	}
	table, err := routing.NewTable(cfg, reg, routes)
	if err != nil {
		return nil, err
	}
	a.table.Store(table)
	if err := a.startBackends(ctx, reg); err != nil {
		return nil, err
	}
	if err := a.startSources(ctx, reg); err != nil {
		return nil, err
	}
	services := a.newKafkaAPI()
	g := cfg.Listeners.GRPC
	sopts, err := a.grpcServerOptions()
	if err != nil {
		return nil, err
	}
	a.server = grpcserver.New(grpcserver.Options{
		Reflection:           g.Reflection,
		Health:               g.Health,
		MaxRecvMessageSize:   g.MaxRecvMessageSize,
		MaxConcurrentStreams: g.MaxConcurrentStreams,
		ShutdownTimeout:      g.ShutdownTimeout,
		Registry:             reg,
		Handler:              func(srv any, ss grpc.ServerStream) error { return a.table.Load().Handle(srv, ss) },
		Services:             services,
		ServerOptions:        sopts,
		Logger:               a.logger,
	})
	// Both stop once no call runs, after the servers: the calls' request
	// readers, then the hubs.
	a.own("the fetch hubs", a.hubs)
	prewarm(a.hubs, cfg)
	a.own("the calls' request readers", a.runtime)
	a.knowMethods(reg)
	// Started before the servers, it stops after them.
	if err := a.startAdmin(ctx); err != nil {
		return nil, err
	}
	if err := a.startServers(ctx, reg); err != nil {
		return nil, err
	}
	if a.kafkaAPI != nil {
		// Put on the list right after the servers, which serve its calls
		// from now on, so that it stops before them.
		a.own("the Kafka API", a.kafkaAPI)
	}
	// The same for the group fetch routes' consumer groups: their streams
	// end as the groups are left.
	a.own("the consumer groups of group fetch routes", a.groups)
	// The clusters stop their health checks as they close.
	if err := a.startHealthChecks(); err != nil {
		return nil, err
	}
	a.started.Store(true)
	return a, nil
}

// setAPIPolicy makes the Kafka API check the allow rules from now on.
func (a *App) setAPIPolicy(rules []config.APIAllowRule) {
	a.apiAllow = rules
	if p := auth.NewAPIPolicy(rules); p != nil {
		a.kafkaAPI.SetPolicy(p)
	} else {
		a.kafkaAPI.SetPolicy(nil)
	}
}

// newKafkaAPI builds the Kafka API service when either of its faces is
// enabled, and returns its gRPC services. Nothing of it runs until its
// first call.
func (a *App) newKafkaAPI() []grpcserver.Service {
	k := a.cfg.KafkaAPI
	if !k.Enabled && !k.Pixy {
		return nil
	}
	a.kafkaAPI = kafkaapi.New(k, a.clusters, a.clusterNames(), a.logger)
	a.setAPIPolicy(k.Allow)
	var services []grpcserver.Service
	if k.Enabled {
		services = append(services, grpcserver.Service{Desc: &kafkav1.Kafka_ServiceDesc, Impl: ferryapi.NewServer(a.kafkaAPI, a.logger)})
	}
	if k.Pixy {
		a.pixy = pixy.NewServer(a.kafkaAPI, a.logger)
		services = append(services, grpcserver.Service{Desc: &kafkapixy.KafkaPixy_ServiceDesc, Impl: a.pixy})
	}
	return services
}

// clusterNames returns the configured cluster names in order, the default
// first.
func (a *App) clusterNames() []string {
	names := make([]string, len(a.cfg.Clusters))
	for i, c := range a.cfg.Clusters {
		names[i] = c.Name
	}
	return names
}

// HTTPAddr returns the address the HTTP server listens on, or "" when it
// does not run.
func (a *App) HTTPAddr() string {
	if a.httpLis == nil {
		return ""
	}
	return a.httpLis.Addr().String()
}

// startEmbedded starts the embedded broker when a cluster has no
// brokers.
func (a *App) startEmbedded() error {
	for _, cc := range a.cfg.Clusters {
		if len(cc.Brokers) > 0 {
			continue
		}
		ec := a.cfg.Embedded
		e, err := kafka.StartEmbedded(ec.Port, ec.Partitions, kafka.EmbeddedLogger(a.logger),
			kafka.EmbeddedSecurity(ec.TLS, ec.SASL), kafka.EmbeddedDataDir(ec.DataDir))
		if err != nil {
			if ec.DataDir != "" {
				return fmt.Errorf("embedded.port, embedded.data_dir: %w", err)
			}
			return fmt.Errorf("embedded.port: %w", err)
		}
		a.embedded = e
		a.own("the embedded Kafka broker", e)
		keeps := "keeps data in memory only"
		if ec.DataDir != "" {
			keeps = "keeps data in " + ec.DataDir
		}
		a.logger.Warn("no brokers configured: started the embedded Kafka broker, which "+keeps,
			"address", e.Addrs()[0], "cluster", cc.Name)
		return nil
	}
	return nil
}

// startClusters starts every cluster, a cluster without brokers on the
// embedded broker: each checks that it answers. A cluster writes what its
// producers hold as it closes.
func (a *App) startClusters(ctx context.Context) error {
	kafkaLogger := a.logger.With("component", "kafka")
	if a.cfg.Log.Level != "debug" {
		// franz-go logs every connection at info; keep Ferry's normal
		// operation quiet and let its warnings through.
		kafkaLogger = slog.New(levelFloor{a.logger.Handler(), slog.LevelWarn}).With("component", "kafka")
	}
	for _, cc := range a.cfg.Clusters {
		var cl *kafka.Cluster
		if len(cc.Brokers) == 0 {
			cl = a.embedded.Cluster(cc, kafkaLogger)
		} else {
			cl = kafka.NewCluster(cc, cc.Brokers, kafkaLogger)
		}
		if a.measuring() {
			cl.AddHooks(a.metrics.KafkaHook(cc.Name))
		}
		a.clusters[cc.Name] = cl
		if err := a.add(ctx, fmt.Sprintf("Kafka cluster %q", cc.Name), cl); err != nil {
			return fmt.Errorf("%w (clusters: %s)", err, cc.Name)
		}
	}
	return nil
}

// startHealthChecks probes every cluster, and reports the server
// NOT_SERVING while any of them is unreachable.
func (a *App) startHealthChecks() error {
	update := func(bool) {
		// Probes of several clusters report concurrently: each applies
		// the state of all of them, under healthMu, so the last one
		// applied is current.
		a.healthMu.Lock()
		defer a.healthMu.Unlock()
		up := !a.Stopping()
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

// startBackends starts every back end: a group consumer of its request
// topic, the reply producer, and the gRPC client of its server. A back end
// lets its running calls finish, commits what finished and leaves its
// group as it closes.
func (a *App) startBackends(ctx context.Context, reg *protoreg.Registry) error {
	for _, bc := range a.cfg.Backends {
		if err := a.startBackend(ctx, bc, reg); err != nil {
			return err
		}
	}
	return nil
}

// startBackend starts one back end and puts it on the list Close
// unwinds. reg holds the methods a back end with format json converts.
func (a *App) startBackend(ctx context.Context, bc config.Backend, reg *protoreg.Registry) error {
	b, err := backend.New(backend.Options{
		Config:          bc,
		Cluster:         a.clusters[bc.Cluster],
		Logger:          a.logger,
		MaxMessageBytes: a.cfg.Listeners.GRPC.MaxRecvMessageSize,
		DialOptions:     a.edge.DialOptions(bc.Target),
		Registry:        reg,
		TracerProvider:  a.tracer,
	})
	if err != nil {
		return err
	}
	a.backendsMu.Lock()
	a.backends = append(a.backends, liveBackend{cfg: bc, b: b})
	a.backendsMu.Unlock()
	return a.add(ctx, fmt.Sprintf("back end %q", bc.Name), b)
}

// GRPCAddr returns the address the gRPC server listens on.
func (a *App) GRPCAddr() string { return a.lis.Addr().String() }

// KafkaAddrs returns the seed brokers of the named cluster.
func (a *App) KafkaAddrs(cluster string) []string { return a.clusters[cluster].Seeds() }

// Wait returns when the gRPC server stops serving on its own, with why.
func (a *App) Wait() <-chan error { return a.serveErr }

// Close stops Ferry. From its start new calls are refused with UNAVAILABLE
// and health reports NOT_SERVING; then it stops the components in reverse
// order of start (see Start): the Kafka API, both servers (once the calls
// running finished, bounded by the shutdown timeout and ctx), the
// calls' request readers and fetch hubs, the back ends, the reply readers,
// the producers after they wrote what they hold (within ctx), and the
// embedded broker last. What fails to stop is logged. It is idempotent
// and safe after a partial start.
func (a *App) Close(ctx context.Context) {
	a.closeOnce.Do(func() {
		// A Reload under way finishes first; none starts after.
		a.reloadMu.Lock()
		a.closing = true
		a.reloadMu.Unlock()
		a.healthMu.Lock()
		a.calls.stop()
		if a.server != nil {
			a.server.SetServing(false)
		}
		a.healthMu.Unlock()
		if err := a.unwind(ctx); err != nil {
			a.logger.Warn("stopping Ferry", "err", err)
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
	a.backendsMu.Lock()
	defer a.backendsMu.Unlock()
	m := map[string]backend.Stats{}
	for _, lb := range a.backends {
		m[lb.cfg.Name] = lb.b.Stats()
	}
	return m
}

// FetchStats counts the Kafka readers of fetch routes.
func (a *App) FetchStats() fetch.Stats { return a.hubs.Stats() }

// FetchCounts returns what the fetch hubs did since Ferry started.
func (a *App) FetchCounts() fetch.Counts { return a.hubs.Counts() }

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

// prewarm starts the hubs of the fetch routes marked prewarm, each once.
func prewarm(hubs *fetch.Hubs, cfg *config.Config) {
	for _, r := range cfg.Routes {
		if r.Fetch != nil && r.Fetch.Prewarm {
			hubs.Prewarm(r.Fetch)
		}
	}
}
